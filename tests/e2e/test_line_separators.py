"""Texts carrying Unicode line and paragraph separators train, predict and stream like any other text.

U+2028, U+2029, NEL, VT, FF and the information separators are line ends to `str.splitlines` but not to
CSV, JSONL or Server-Sent Events: they stay inside their row everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from openmaas import Client
from tests.e2e.test_train_and_predict import write_csv

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
LABELS = ("ham", "spam\u2028mail")  # a label with a separator reaches the job's events too


def rows() -> list[tuple[str, str]]:
    words = {"ham": "hello friend see you", "spam\u2028mail": "win cash offer now"}
    out = []
    for i in range(40):
        label = LABELS[i % 2]
        mark = SEPARATORS[i % len(SEPARATORS)]
        out.append((f"{words[label]}{mark}number {i}{mark}end", label))
    return out


def train_and_predict(client: Client, http: httpx.Client, path: Path, model: str) -> None:
    dataset = client.upload_dataset(path, name=model)
    assert dataset["rows"] == 40, dataset
    job = client.create_job(dataset["id"], model, hyperparameters={"epochs": 2, "batch_size": 8})
    events = list(client.stream_job_events(job["id"]))
    assert events[0]["type"] == "started" and events[-1]["type"] == "succeeded", events[-1]
    assert sorted(events[0]["data"]["labels"]) == sorted(LABELS)
    assert client.get_job(job["id"])["status"] == "succeeded"
    inputs = [f"win cash{mark}offer" for mark in SEPARATORS]
    response = http.post(f"/v1/models/{model}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert {p["label"] for p in response.json()["predictions"]} <= set(LABELS)


def test_csv_and_jsonl_texts_with_line_separators_train_and_predict(
    client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    train_and_predict(client, http, write_csv(tmp_path / "separators.csv", rows()), "separators-csv")
    jsonl = tmp_path / "separators.jsonl"
    # ensure_ascii=False writes U+2028, U+2029 and NEL raw, as many JSON writers do.
    jsonl.write_text(
        "".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in rows()),
        encoding="utf-8",
    )
    train_and_predict(client, http, jsonl, "separators-jsonl")


def test_a_text_dataset_keeps_a_line_separator_inside_its_document(
    http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    documents = [f"line one{mark}still the same document {i}" for i, mark in enumerate(SEPARATORS)]
    txt = tmp_path / "docs.txt"
    txt.write_text("\r\n".join(documents[:4]) + "\n" + "\r".join(documents[4:]) + "\n", encoding="utf-8")
    dataset = client.upload_dataset(txt, name="docs", kind="text")
    assert dataset["rows"] == len(SEPARATORS), dataset
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents), "utf-8")
    text_dataset = client.upload_dataset(jsonl, name="docs-jsonl", kind="text")
    assert text_dataset["rows"] == len(SEPARATORS), text_dataset
    job = client.create_job(
        text_dataset["id"],
        "separators-lm",
        recipe="causal-lm",
        hyperparameters={"epochs": 1, "n_layer": 1, "n_embd": 16, "n_head": 1, "context_length": 16, "vocab_size": 300},
    )
    final = client.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "succeeded", final
