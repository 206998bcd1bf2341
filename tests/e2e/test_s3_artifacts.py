"""A server whose artifacts live on S3 (moto's server): it trains, registers, serves, and a job it checkpointed
resumes on another machine, one with its own data directory that shares only the database and the bucket."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from tests.conftest import S3Server, Server
from tests.fault.test_resume import sms_subset, wait_for_event

PREFIX = "team/openmaas"
# Smaller than the local resume test's job (that one covers the loop): ~530 steps, a checkpoint every 50.
HYPERPARAMETERS = {"epochs": 4, "batch_size": 2, "seed": 7, "checkpoint_every_steps": 50, "log_every_steps": 0}


def s3_env(s3: S3Server, bucket: str) -> dict[str, str]:
    # No foundation models: their 90 MB would go up to the bucket at every start, and no test here uses them.
    return {"OPENMAAS_ARTIFACTS_URL": f"s3://{bucket}/{PREFIX}", "OPENMAAS_FOUNDATION_MODELS": "[]", **s3.env}


def bucket_keys(s3: S3Server, bucket: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {entry["Key"] for page in pages for entry in page.get("Contents", [])}


def version_files(server: Server, model: str) -> dict[str, str]:
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        row = db.execute(
            "select v.files from model_versions v join registered_models m on m.id = v.model_id where m.name = ?",
            (model,),
        ).fetchone()
    return dict(json.loads(row[0]))


def test_a_server_on_s3_trains_registers_and_predicts(start_server: type[Server], s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    server = start_server(**s3_env(s3, bucket))
    path = tmp_path / "moods.csv"
    rows = [(f"a happy sunny day number {i}", "pos") for i in range(30)]
    rows += [(f"a sad rainy night number {i}", "neg") for i in range(30)]
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    with server.client() as client:
        dataset = client.upload_dataset(path, name="moods")
        job = client.create_job(dataset["id"], "moods", hyperparameters={"epochs": 20, "seed": 3})
        final = client.wait_for_job(job["id"], timeout=300)
        assert final["status"] == "succeeded", final
        predictions = client.predict("moods", ["what a happy sunny day", "a sad rainy night again"])["predictions"]
        assert [p["label"] for p in predictions] == ["pos", "neg"]
        assert client.job_checkpoints(job["id"])  # listed from the bucket
        download = client.download_artifact("moods", tmp_path / "moods.safetensors")

    keys, files = bucket_keys(s3, bucket), version_files(server, "moods")
    for sha in [dataset["sha256"], *files.values()]:
        assert f"{PREFIX}/blobs/{sha[:2]}/{sha}" in keys
    assert any(key.startswith(f"{PREFIX}/checkpoints/{job['id']}/refs/step-") for key in keys)
    weights = files["model.safetensors"]
    assert hashlib.sha256(download.read_bytes()).hexdigest() == weights
    assert not (server.data_dir / "artifacts" / "blobs").exists()  # nothing kept on the local disk but the cache
    assert (server.data_dir / "cache" / "artifacts" / "blobs" / weights[:2] / weights).is_file()


def test_a_job_checkpointed_to_s3_resumes_on_another_machine(
    start_server: type[Server], s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    first = start_server(**s3_env(s3, bucket))
    with first.client() as client:
        dataset = client.upload_dataset(sms_subset(tmp_path, rows=300), name="sms")["id"]
        job = client.create_job(dataset, "resumed", hyperparameters=HYPERPARAMETERS)
        checkpoint = wait_for_event(client, job["id"], "checkpoint")
    first.kill()  # SIGKILL: the worker dies with it, mid-epoch

    database = f"sqlite:///{first.data_dir / 'openmaas.db'}"
    (tmp_path / "second-machine").mkdir()
    second = start_server(tmp_path / "second-machine", OPENMAAS_DATABASE_URL=database, **s3_env(s3, bucket))
    with second.client() as client:
        final = client.wait_for_job(job["id"], timeout=600)
        assert final["status"] == "succeeded", final
        resumed = next(e for e in client.job_events(job["id"]) if e["type"] == "resumed")
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]
        straight = client.create_job(dataset, "straight", hyperparameters=HYPERPARAMETERS)
        assert client.wait_for_job(straight["id"], timeout=600)["status"] == "succeeded"
        resumed_version = client.get_model("resumed")["versions"][0]
        straight_version = client.get_model("straight")["versions"][0]
    assert resumed_version["artifact_sha256"] == straight_version["artifact_sha256"]
    assert not (second.data_dir / "artifacts" / "checkpoints").exists()  # the checkpoint came from the bucket
