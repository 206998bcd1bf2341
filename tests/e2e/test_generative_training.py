"""Generative training over real HTTP: a small GPT trained from scratch on text, then LoRA fine-tunes of it.

The exported versions are read back from the server's own store and loaded with plain `transformers` + `peft`,
the way anyone would load a Hugging Face directory.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.storage.artifacts.local import LocalArtifactStore
from tests.conftest import Server

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
]
CHATS = [
    {"messages": [{"role": "user", "content": "what colour is the sky?"}, {"role": "assistant", "content": "blue"}]},
    {"messages": [{"role": "user", "content": "what colour is grass?"}, {"role": "assistant", "content": "green"}]},
]
# Small on purpose: a few seconds of training on two shared CPU cores.
GPT = {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64, "vocab_size": 400, "log_every_steps": 0}


def version_files(server: Server, model: str, version: int) -> dict[str, str]:
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        row = db.execute(
            "select v.files from model_versions v join registered_models m on m.id = v.model_id "
            "where m.name = ? and v.version = ?",
            (model, version),
        ).fetchone()
    files: dict[str, str] = json.loads(row[0])
    return files


def materialize(server: Server, model: str, version: int, target: Path) -> Path:
    return LocalArtifactStore(server.data_dir / "artifacts").materialize(version_files(server, model, version), target)


def train(client: Client, dataset: str, model: str, recipe: str, **hyperparameters: Any) -> dict[str, Any]:
    job = client.create_job(dataset, model, recipe=recipe, hyperparameters=hyperparameters)
    final = client.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "succeeded", final
    return final


def upload_text(client: Client, path: Path, rows: list[Any]) -> str:
    if path.suffix == ".txt":
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    else:
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return str(client.upload_dataset(path, kind="text")["id"])


def logits(directory: Path, text: str, adapter: bool = False) -> Any:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(directory)
    if adapter:
        model = PeftModel.from_pretrained(model, directory / "adapter")
    ids = AutoTokenizer.from_pretrained(directory)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits[0]


@pytest.fixture(scope="module")
def tiny_gpt(client: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Version 1 of `tiny-gpt`, trained well on the sentences; version 2, barely trained, only to move an alias to."""
    dataset = upload_text(client, tmp_path_factory.mktemp("gpt") / "sentences.txt", SENTENCES * 2)
    first = train(client, dataset, "tiny-gpt", "causal-lm", epochs=60, seed=1, **GPT)
    train(client, dataset, "tiny-gpt", "causal-lm", epochs=1, seed=2, **GPT)
    return first


def test_causal_lm_job_trains_in_seconds_and_the_model_generates(
    client: Client, server: Server, tiny_gpt: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = tiny_gpt["metrics"]
    assert metrics["train_seconds"] < 30 and metrics["train_accuracy"] > 0.9
    assert "too small" in metrics["note"]  # 5 distinct lines: every one trains, none validates
    version = client.get_model("tiny-gpt")["versions"][0]
    assert (version["task"], version["recipe"], version["runtime"], version["labels"]) == (
        "text-generation",
        "causal-lm",
        "torch",
        [],
    )
    assert version["hyperparameters"]["n_embd"] == 64 and version["parameter_count"] > 10_000

    directory = materialize(server, "tiny-gpt", 1, tmp_path / "gpt")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        p.name for p in directory.iterdir()
    )
    assert json.loads((directory / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.chat_template
    prompt = tokenizer("a journey of", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    assert tokenizer.decode(output[0], skip_special_tokens=True) == SENTENCES[1]


def test_trained_model_completes_text_over_the_openai_api(http: httpx.Client, tiny_gpt: dict[str, Any]) -> None:
    body = {"model": "tiny-gpt:1", "prompt": "a journey of", "max_tokens": 20, "temperature": 0}
    answer = http.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert "a journey of" + choice["text"] == SENTENCES[1] and choice["finish_reason"] == "stop"


@dataclass
class LoraRun:
    unmerged: dict[str, Any]
    merged: dict[str, Any]


@pytest.fixture(scope="module")
def lora(client: Client, tiny_gpt: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> LoraRun:
    """Two LoRA jobs with the same data and seed (so the same adapter), one exported merged, both queued on
    `tiny-gpt:prod` while it named version 1; the alias moves to version 2 before either starts."""
    folder = tmp_path_factory.mktemp("lora")
    dataset = upload_text(client, folder / "chats.jsonl", CHATS * 3)
    client.set_alias("tiny-gpt", "prod", 1)
    # One job at a time: this one holds the slot while the LoRA jobs wait behind it.
    blocker_data = upload_text(client, folder / "blocker.txt", ["keep the worker busy"])
    blocker = client.create_job(blocker_data, "blocker", recipe="causal-lm", hyperparameters={"epochs": 100_000})
    common = {"base_model": "tiny-gpt:prod", "r": 4, "epochs": 4, "learning_rate": 1e-2, "seed": 3}
    jobs = [
        client.create_job(dataset, "tiny-gpt-chat", recipe="lora", hyperparameters=common),
        client.create_job(dataset, "tiny-gpt-merged", recipe="lora", hyperparameters={**common, "merge": True}),
    ]
    assert all(job["status"] == "queued" for job in jobs)
    client.set_alias("tiny-gpt", "prod", 2)
    client.cancel_job(blocker["id"])
    unmerged, merged = (client.wait_for_job(job["id"], timeout=300) for job in jobs)
    assert unmerged["status"] == merged["status"] == "succeeded", (unmerged, merged)
    return LoraRun(unmerged, merged)


def test_lora_job_trains_on_the_version_its_base_alias_named_when_created(
    client: Client, server: Server, lora: LoraRun
) -> None:
    for name in ("tiny-gpt-chat", "tiny-gpt-merged"):
        pinned = client.get_model(name)["versions"][0]["hyperparameters"]["pinned_base"]
        assert (pinned["model"], pinned["version"]) == ("tiny-gpt", 1)
    base = version_files(server, "tiny-gpt", 1)
    assert version_files(server, "tiny-gpt-chat", 1)["model.safetensors"] == base["model.safetensors"]
    assert base["model.safetensors"] != version_files(server, "tiny-gpt", 2)["model.safetensors"]


def test_unmerged_lora_version_is_the_base_files_plus_an_adapter(server: Server, lora: LoraRun) -> None:
    base, adapted = version_files(server, "tiny-gpt", 1), version_files(server, "tiny-gpt-chat", 1)
    assert adapted == {**base, **{name: adapted[name] for name in adapted if name.startswith("adapter/")}}
    assert {name for name in adapted if name.startswith("adapter/")} == {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }


def test_lora_changes_the_outputs_and_merging_keeps_them(server: Server, lora: LoraRun, tmp_path: Path) -> None:
    text = "<|user|>\nwhat colour is the sky?"
    base = logits(materialize(server, "tiny-gpt", 1, tmp_path / "base"), text)
    adapted = logits(materialize(server, "tiny-gpt-chat", 1, tmp_path / "adapted"), text, adapter=True)
    merged = logits(materialize(server, "tiny-gpt-merged", 1, tmp_path / "merged"), text)
    assert (adapted - base).abs().max() > 0.1
    assert (merged - adapted).abs().max() < 1e-4
    assert "adapter/adapter_config.json" not in version_files(server, "tiny-gpt-merged", 1)


def test_lora_versions_chat_over_the_openai_api(http: httpx.Client, lora: LoraRun) -> None:
    answers = []
    for model in ("tiny-gpt-chat", "tiny-gpt-merged"):
        body = {"model": model, "messages": CHATS[0]["messages"][:1], "max_tokens": 8, "temperature": 0}
        answer = http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["choices"][0]["message"]["content"])
    assert answers[0] == answers[1]  # base + adapter and the merged weights: the same model


def test_lora_base_model_is_resolved_as_the_callers_tenant(
    server: Server, client: Client, tiny_gpt: dict[str, Any], tmp_path: Path
) -> None:
    owner = client.get_model("tiny-gpt")["owned_by"]
    tenant = client.create_tenant(f"lora-reader-{secrets.token_hex(3)}")
    key = client.create_key(tenant["id"], ["read", "train"])["key"]
    with Client(server.url, key) as reader:
        dataset = upload_text(reader, tmp_path / "mine.txt", ["my own text"])

        def create(base_model: str) -> dict[str, Any]:
            hyperparameters = {"base_model": base_model, "epochs": 1}
            return reader.create_job(dataset, "my-lora", recipe="lora", hyperparameters=hyperparameters)

        for hidden in ("tiny-gpt", f"{owner}/tiny-gpt:1"):  # another tenant's private model: not there
            with pytest.raises(APIError) as caught:
                create(hidden)
            assert caught.value.status == 404 and caught.value.param == "hyperparameters.base_model"
        client.update_model("tiny-gpt", public=True)
        try:
            job = create(f"{owner}/tiny-gpt:1")
            reader.cancel_job(job["id"])
        finally:
            client.update_model("tiny-gpt", public=False)
    pinned = job["hyperparameters"]["pinned_base"]
    assert (pinned["owner"], pinned["model"], pinned["version"]) == (owner, "tiny-gpt", 1)
