"""Importing a local Hugging Face directory: a tiny random BERT is served; pickled weights are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from openmaas import APIError, Client
from openmaas.recipes.foundation import foundation_directory
from tests.conftest import Server
from tests.e2e.test_cli import openmaas


def tiny_bert(directory: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(directory), safe_serialization=True)
    base = foundation_directory("all-minilm-l6-v2")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base / name, directory / name)
    return directory


def test_imported_encoder_serves_embeddings(server: Server, client: Client, tmp_path: Path) -> None:
    directory = tiny_bert(tmp_path / "tiny-bert")
    out = openmaas(server, "models", "import", str(directory), "--name", "tiny-bert")
    assert "imported tiny-bert:1" in out and "embeddings" in out
    result = client.embed("tiny-bert", ["hello world", "second text"])
    vectors = np.array([d["embedding"] for d in result["data"]])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    version = client.get_model("tiny-bert")["versions"][0]
    assert version["task"] == "embeddings" and version["metrics"]["dimensions"] == 32


def test_an_encoder_imported_with_int8_weights_embeds_like_the_float_one(
    server: Server, client: Client, tmp_path: Path
) -> None:
    directory = tiny_bert(tmp_path / "tiny-bert-int8")
    client.import_model(directory, "tiny-float")
    out = openmaas(server, "models", "import", str(directory), "--name", "tiny-int8", "--runtime", "onnx-int8")
    assert "imported tiny-int8:1" in out
    assert client.get_model("tiny-int8")["versions"][0]["runtime"] == "onnx-int8"
    texts = ["hello world", "a second, longer text about the weather in spring", "3"]
    vectors = {
        name: np.array([d["embedding"] for d in client.embed(name, texts)["data"]])
        for name in ("tiny-float", "tiny-int8")
    }
    np.testing.assert_allclose(np.linalg.norm(vectors["tiny-int8"], axis=1), 1, atol=1e-5)
    cosines = (vectors["tiny-float"] * vectors["tiny-int8"]).sum(axis=1)
    assert cosines.min() > 0.98 and not np.allclose(vectors["tiny-float"], vectors["tiny-int8"], atol=1e-6)


def test_a_causal_lm_cannot_be_imported_with_an_encoder_runtime(client: Client, tmp_path: Path) -> None:
    from tests.tiny_llm import build_tiny_causal_lm

    with pytest.raises(APIError) as caught:
        client.import_model(build_tiny_causal_lm(tmp_path / "lm"), "lm-int8", runtime="onnx-int8")
    assert caught.value.status == 400 and caught.value.code == "invalid_runtime" and caught.value.param == "runtime"
    with pytest.raises(APIError) as caught:
        client.import_model(tiny_bert(tmp_path / "b"), "b", runtime="tensorrt")
    assert caught.value.status == 400 and caught.value.param == "runtime"


def test_pickled_weights_are_refused_with_how_to_convert(client: Client, tmp_path: Path) -> None:
    directory = tiny_bert(tmp_path / "pickled")
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(APIError) as caught:
        client.import_model(directory, "pickled")
    assert caught.value.status == 422 and caught.value.code == "pickled_weights"
    assert "pytorch_model.bin" in caught.value.message and "safe_serialization=True" in caught.value.message


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda d: (d / "tokenizer.json").unlink(), "invalid_model_directory"),
        (lambda d: (d / "config.json").unlink(), "invalid_model_directory"),
        (lambda d: (d / "config.json").write_text("{not json"), "invalid_model_directory"),
        (
            lambda d: (d / "config.json").write_text('{"architectures": ["T5ForConditionalGeneration"]}'),
            "unsupported_architecture",
        ),
        (  # a causal LM that needs its own Python code: remote code never runs
            lambda d: (d / "config.json").write_text(
                '{"architectures": ["MyForCausalLM"], "auto_map": {"AutoModelForCausalLM": "my.MyForCausalLM"}}'
            ),
            "invalid_model_directory",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "invalid_model_directory"),
    ],
)
def test_broken_directories_are_refused(client: Client, tmp_path: Path, setup, code: str) -> None:  # type: ignore[no-untyped-def]
    directory = tiny_bert(tmp_path / "broken")
    setup(directory)
    with pytest.raises(APIError) as caught:
        client.import_model(directory, "broken")
    assert caught.value.status == 422 and caught.value.code == code, caught.value.message


def test_relative_or_missing_paths_are_refused(http, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for path in ("relative/dir", str(tmp_path / "missing")):
        response = http.post("/v1/models/import", json={"path": path, "name": "x"})
        assert response.status_code == 422 and response.json()["error"]["param"] == "path"


def test_deleting_a_model_keeps_the_files_another_version_shares(client: Client, tmp_path: Path) -> None:
    first = tiny_bert(tmp_path / "shared-first")
    second = tmp_path / "shared-second"
    shutil.copytree(first, second)
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "_note": "a second version"}))  # another manifest
    client.import_model(first, "shares-first")
    client.import_model(second, "shares-second")  # its weights and tokenizer are the first one's blobs
    before = np.array(client.embed("shares-second", ["hello world"], encoding_format="float")["data"][0]["embedding"])
    client.delete_model("shares-first")
    client.unload_model("shares-second")  # the next call loads it again from the store
    after = np.array(client.embed("shares-second", ["hello world"], encoding_format="float")["data"][0]["embedding"])
    np.testing.assert_allclose(after, before, atol=1e-6)
