"""The whole loop over real HTTP: upload → train → registry → predict, on the real shared datasets."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import httpx
import pytest

from openmaas import APIError, Client
from tests.conftest import DATASETS


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def accuracy(client: Client, model: str, rows: list[tuple[str, str]]) -> float:
    predictions = client.predict(model, [text for text, _ in rows])["predictions"]
    return sum(p["label"] == label for p, (_, label) in zip(predictions, rows, strict=True)) / len(rows)


def train(client: Client, path: Path, model: str, **hyperparameters: object) -> dict:
    dataset = client.upload_dataset(path, name=model)
    job = client.create_job(dataset["id"], model, hyperparameters=hyperparameters)
    assert job["status"] == "queued"
    final = client.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "succeeded", final
    return final


def test_origin_documents_chinese_example_trains_and_predicts(client: Client, tmp_path: Path) -> None:
    rows = [
        ("这是一篇关于人工智能的文章。", "1"),
        ("这是一篇关于大数据的文章。", "0"),
        ("这是一篇关于人工智能大模型的文章。", "1"),
    ]
    job = train(
        client, write_csv(tmp_path / "zh.csv", rows), "origin-zh", epochs=500, learning_rate=0.05, loss_threshold=0.01
    )
    assert "too small" in job["metrics"]["note"]
    assert job["metrics"]["stopped_reason"] == "loss_threshold"
    assert job["metrics"]["train_loss"] <= 0.01
    result = client.predict("origin-zh", ["一篇关于人工智能的新文章。", "关于大数据的文章。"])
    assert [p["label"] for p in result["predictions"]] == ["1", "0"]
    events = client.job_events(job["id"])
    assert events[0]["type"] == "started" and "note" in events[0]["data"]
    assert events[-1]["type"] == "succeeded"
    assert all(set(e["data"]) >= {"epoch", "train_loss"} for e in events if e["type"] == "epoch")


def test_sms_spam_reaches_097_on_a_20_percent_holdout(client: Client, tmp_path: Path) -> None:
    # Deduplicate first: the file repeats 414 texts, and a repeat on both sides would leak the answer.
    rows = list(dict.fromkeys(read_csv(DATASETS / "sms_spam" / "sms_spam.csv")))
    random.Random(20).shuffle(rows)
    cut = len(rows) // 5
    holdout, training = rows[:cut], rows[cut:]
    job = train(client, write_csv(tmp_path / "sms_train.csv", training), "sms-spam", epochs=5, seed=1)
    assert job["metrics"]["val_accuracy"] > 0.95
    assert accuracy(client, "sms-spam", holdout) >= 0.97

    model = client.get_model("sms-spam")
    version = model["versions"][-1]
    assert version["labels"] == ["ham", "spam"]
    assert version["recipe"] == "bow-mlp" and version["job_id"] == job["id"]
    assert version["parameter_count"] > 16 and len(version["artifact_sha256"]) == 64
    assert len(version["metrics"]["history"]) == 5
    assert version["hyperparameters"]["epochs"] == 5 and version["hyperparameters"]["seed"] == 1
    assert version["dataset_sha256"] == client.get_dataset(version["dataset_id"])["sha256"]


def test_sib200_chinese_topics_reach_070_on_the_test_file(client: Client) -> None:
    train(client, DATASETS / "sib200_zh" / "sib200_zho_Hans_train.csv", "sib200-zh", epochs=15)
    test_rows = read_csv(DATASETS / "sib200_zh" / "sib200_zho_Hans_test.csv")
    assert accuracy(client, "sib200-zh", test_rows) >= 0.70


def test_same_seed_and_data_give_the_same_weights(client: Client, tmp_path: Path) -> None:
    rows = [
        (f"message number {i} {'win cash prize' if i % 3 == 0 else 'see you soon'}", str(i % 3 == 0)) for i in range(60)
    ]
    path = write_csv(tmp_path / "det.csv", rows)
    for _ in range(2):
        train(client, path, "determinism", epochs=3, seed=5)
    first, second = client.get_model("determinism")["versions"][-2:]
    assert first["artifact_sha256"] == second["artifact_sha256"]


def test_versions_aliases_and_deletion(client: Client, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [("good day", "pos"), ("bad day", "neg"), ("great", "pos")])
    train(client, path, "aliased", epochs=2)
    train(client, path, "aliased", epochs=2, seed=3)
    assert client.predict("aliased", ["good"])["version"] == 2
    client.set_alias("aliased", "production", 1)
    assert client.predict("aliased", ["good"])["version"] == 1
    assert client.predict("aliased:2", ["good"])["version"] == 2
    assert client.predict("aliased:production", ["good"])["version"] == 1
    client.delete_version("aliased", 1)
    model = client.get_model("aliased")
    assert model["aliases"] == {} and [v["version"] for v in model["versions"]] == [2]
    assert client.predict("aliased", ["good"])["version"] == 2
    with pytest.raises(APIError) as caught:
        client.predict("aliased:1", ["good"])
    assert caught.value.status == 404


def test_models_list_is_openai_shaped(http: httpx.Client, client: Client, tmp_path: Path) -> None:
    train(client, write_csv(tmp_path / "m.csv", [("yes", "y"), ("no", "n")]), "listed", epochs=1)
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    entry = next(m for m in body["data"] if m["id"] == "listed")
    assert entry["object"] == "model" and isinstance(entry["created"], int) and entry["owned_by"]


def test_cancel_a_running_job(client: Client, tmp_path: Path) -> None:
    rows = [(f"text {i} " * 5, str(i % 2)) for i in range(2000)]
    dataset = client.upload_dataset(write_csv(tmp_path / "long.csv", rows), name="long")
    job = client.create_job(dataset["id"], "to-cancel", hyperparameters={"epochs": 10_000, "batch_size": 1})
    for event in client.follow_job(job["id"], poll=0.1, timeout=120):
        if event["type"] == "epoch":
            break
    cancelled = client.cancel_job(job["id"])
    assert cancelled["status"] in ("running", "cancelled")
    final = client.wait_for_job(job["id"], timeout=30)
    assert final["status"] == "cancelled" and final["model_version"] is None
    with pytest.raises(APIError) as caught:
        client.cancel_job(job["id"])
    assert caught.value.status == 409
    with pytest.raises(APIError):
        client.get_model("to-cancel")


def test_a_queued_job_cancels_at_once(client: Client, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", [("x y", "a"), ("y z", "b")] * 5)
    dataset = client.upload_dataset(path, name="q")
    # The first job occupies the only slot, so the second one is still queued when it is cancelled.
    first = client.create_job(dataset["id"], "slot", hyperparameters={"epochs": 100_000})
    second = client.create_job(dataset["id"], "queued")
    assert client.cancel_job(second["id"])["status"] == "cancelled"
    client.cancel_job(first["id"])
    assert client.wait_for_job(first["id"], timeout=30)["status"] == "cancelled"
    assert [e["type"] for e in client.job_events(second["id"])] == ["cancelled"]
