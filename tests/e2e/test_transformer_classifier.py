"""Fine-tuning on the foundation model: a head on frozen MiniLM embeddings, served with ONNX Runtime."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import numpy as np
import pytest

from openmaas import APIError, Client
from tests.conftest import DATASETS
from tests.e2e.test_train_and_predict import accuracy, read_csv, write_csv


@pytest.fixture(scope="module")
def spam_minilm(client: Client, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[tuple[str, str]]]:
    rows = list(dict.fromkeys(read_csv(DATASETS / "sms_spam" / "sms_spam.csv")))
    random.Random(3).shuffle(rows)
    cut = len(rows) // 5
    holdout, training = rows[:cut], rows[cut:]
    path = write_csv(tmp_path_factory.mktemp("tc") / "sms_train.csv", training)
    dataset = client.upload_dataset(path, name="sms-train")
    job = client.create_job(
        dataset["id"], "spam-minilm", recipe="transformer-classifier", hyperparameters={"epochs": 20, "seed": 0}
    )
    final = client.wait_for_job(job["id"], timeout=900)
    assert final["status"] == "succeeded", final
    return final, holdout


def test_frozen_head_reaches_098_on_a_20_percent_holdout(
    client: Client, spam_minilm: tuple[dict, list[tuple[str, str]]]
) -> None:
    job, holdout = spam_minilm
    assert job["hyperparameters"]["train_base"] is False
    assert job["hyperparameters"]["base_model"] == "all-minilm-l6-v2"
    assert accuracy(client, "spam-minilm", holdout) >= 0.98
    version = client.get_model("spam-minilm")["versions"][-1]
    assert version["runtime"] == "onnx" and version["recipe"] == "transformer-classifier"
    assert version["parameter_count"] > 22_000_000


def test_artifact_downloads_in_both_formats(
    client: Client, http: httpx.Client, spam_minilm: tuple[dict, list[tuple[str, str]]], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from openmaas.recipes.foundation import foundation_directory

    weights = load_file(str(client.download_artifact("spam-minilm", tmp_path / "w.safetensors")))
    assert weights["head.linear.weight"].shape == (2, 384)
    assert any(key.startswith("encoder.model.") for key in weights)

    onnx_path = client.download_artifact("spam-minilm", tmp_path / "m.onnx", format="onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(foundation_directory("all-minilm-l6-v2") / "tokenizer.json"))
    texts = ["WINNER!! You have won a free prize, call now", "ok see you at home"]
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings]),
        "attention_mask": np.array([e.attention_mask for e in encodings]),
        "token_type_ids": np.array([e.type_ids for e in encodings]),
    }
    offline = session.run(None, feeds)[0]
    served = client.predict("spam-minilm", texts)["predictions"]
    np.testing.assert_allclose(offline[:, 1], [p["scores"]["spam"] for p in served], atol=1e-5)

    bow = http.get("/v1/models/all-minilm-l6-v2/artifact", params={"format": "safetensors"})
    assert bow.status_code == 200 and len(bow.content) > 80_000_000
    assert http.get("/v1/models/spam-minilm/artifact", params={"format": "pickle"}).status_code == 400


def test_an_int8_version_serves_int8_weights_and_keeps_the_float_versions_answers(
    client: Client, spam_minilm: tuple[dict, list[tuple[str, str]]], tmp_path: Path
) -> None:
    import onnx

    job, holdout = spam_minilm
    int8_job = client.create_job(
        job["dataset"],
        "spam-minilm-int8",
        recipe="transformer-classifier",
        hyperparameters={"epochs": 20, "seed": 0, "runtime": "onnx-int8"},
    )
    final = client.wait_for_job(int8_job["id"], timeout=900)
    assert final["status"] == "succeeded", final
    assert client.get_model("spam-minilm-int8")["versions"][-1]["runtime"] == "onnx-int8"

    texts = [text for text, _ in holdout]
    labels = [p["label"] for p in client.predict("spam-minilm-int8", texts)["predictions"]]
    float_labels = [p["label"] for p in client.predict("spam-minilm", texts)["predictions"]]
    assert sum(a == b for a, b in zip(labels, float_labels, strict=True)) / len(texts) >= 0.98
    assert accuracy(client, "spam-minilm-int8", holdout) >= 0.97

    # What is served is an int8 graph: the download of the ONNX form is it, a quarter of the layers' bytes.
    graph = onnx.load(str(client.download_artifact("spam-minilm-int8", tmp_path / "q.onnx", format="onnx")))
    operators = {node.op_type for node in graph.graph.node}
    assert operators & {"MatMulInteger", "DynamicQuantizeMatMul"}, operators
    float_graph = client.download_artifact("spam-minilm", tmp_path / "f.onnx", format="onnx")
    assert (tmp_path / "q.onnx").stat().st_size < 0.75 * float_graph.stat().st_size


def test_an_unknown_runtime_is_refused(client: Client, spam_minilm: tuple[dict, list[tuple[str, str]]]) -> None:
    job, _ = spam_minilm
    with pytest.raises(APIError) as caught:
        client.create_job(job["dataset"], "x", recipe="transformer-classifier", hyperparameters={"runtime": "tensorrt"})
    assert caught.value.status == 422 and caught.value.param == "hyperparameters.runtime"


def test_bow_versions_have_no_onnx_form(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    dataset = client.upload_dataset(write_csv(tmp_path / "b.csv", [("yes", "y"), ("no", "n")]), name="b")
    job = client.create_job(dataset["id"], "bow-no-onnx", hyperparameters={"epochs": 1})
    assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"
    response = http.get("/v1/models/bow-no-onnx/artifact", params={"format": "onnx"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "onnx_unavailable"
    assert http.get("/v1/models/bow-no-onnx/artifact").status_code == 200


def test_full_fine_tuning_runs_and_serves(client: Client, tmp_path: Path) -> None:
    rows = [(f"great product number {i}", "pos") for i in range(12)] + [
        (f"terrible service number {i}", "neg") for i in range(12)
    ]
    dataset = client.upload_dataset(write_csv(tmp_path / "ft.csv", rows), name="ft")
    job = client.create_job(
        dataset["id"],
        "minilm-full",
        recipe="transformer-classifier",
        hyperparameters={"train_base": True, "epochs": 2, "batch_size": 8, "learning_rate": 1e-4, "max_length": 32},
    )
    final = client.wait_for_job(job["id"], timeout=600)
    assert final["status"] == "succeeded", final
    assert final["hyperparameters"]["learning_rate"] == 1e-4
    result = client.predict("minilm-full", ["great product", "terrible service"])
    assert [p["label"] for p in result["predictions"]] == ["pos", "neg"]


def test_unknown_base_model_is_refused(client: Client, tmp_path: Path) -> None:
    dataset = client.upload_dataset(write_csv(tmp_path / "x.csv", [("a b", "1"), ("c d", "0")]), name="x")
    with pytest.raises(APIError) as caught:
        client.create_job(dataset["id"], "x", recipe="transformer-classifier", hyperparameters={"base_model": "gpt-17"})
    assert caught.value.status == 422 and caught.value.param == "hyperparameters.base_model"
    assert "unknown base model 'gpt-17'" in caught.value.message
