"""The CLI as a user sees it in an 80-column terminal: calm errors, whole ids, --json, and every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from openmaas import Client
from openmaas.cli.main import app
from tests.conftest import ADMIN_KEY, Server, free_port
from tests.e2e.test_job_lifecycle import small_dataset
from tests.tiny_llm import build_tiny_causal_lm, with_unshared_files

LLM = "cli-llm"
HELLO = "Hello there"


def cli(
    server: Server | None, *args: str, url: str | None = None, stdin: str | None = None, key: str = ADMIN_KEY
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENMAAS_API_KEY": key, "COLUMNS": "80"}
    env["OPENMAAS_URL"] = url or (server.url if server else "")
    return subprocess.run(
        [sys.executable, "-m", "openmaas", *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
    )


def ok(server: Server, *args: str, stdin: str | None = None) -> str:
    done = cli(server, *args, stdin=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def llm(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("cli-llm") / "model")
    with server.client() as client:
        client.import_model(directory, LLM)
    return LLM


def test_ordinary_mistakes_are_one_line_that_says_what_to_do(server: Server, tmp_path: Path) -> None:
    down = one_line(cli(None, "models", "list", url=f"http://127.0.0.1:{free_port()}"), 1)
    assert "cannot reach the OpenMaaS server" in down and "openmaas serve" in down and "OPENMAAS_URL" in down
    missing = one_line(cli(server, "datasets", "upload", str(tmp_path / "nope.csv")), 2)
    assert "no such file" in missing and "nope.csv" in missing
    unknown = one_line(cli(server, "models", "show", "no-such-model"), 1)
    assert "404" in unknown and "model_not_found" in unknown and "no-such-model" in unknown
    refused = one_line(cli(server, "jobs", "list", key="om-wrong"), 1)
    assert "401" in refused and "OPENMAAS_API_KEY" in refused


def test_every_command_but_serve_has_json() -> None:
    missing = []

    def walk(command: object, path: str) -> None:
        commands = getattr(command, "commands", None)
        if commands:
            for name, sub in commands.items():
                walk(sub, f"{path} {name}")
        elif path.strip() != "serve" and "--json" not in [o for p in command.params for o in p.opts]:  # type: ignore[attr-defined]
            missing.append(path.strip())

    walk(typer.main.get_command(app), "")
    assert not missing, missing


def test_tables_keep_the_ids_a_user_types_next_whole_at_80_columns(
    server: Server, client: Client, tmp_path: Path
) -> None:
    tenant = ok(server, "tenants", "create", f"cli-wide-{time.monotonic_ns()}", "--quiet").strip()
    limits = ["--limit", "requests_per_minute=600000", "--limit", "tokens_per_minute=100000000"]
    keys = [json.loads(ok(server, "keys", "create", tenant, *limits, "--json"))["id"] for _ in range(2)]
    listed = ok(server, "keys", "list", tenant)
    assert all(key in listed for key in keys), listed
    assert max(len(line) for line in listed.splitlines()) <= 80

    dataset = small_dataset(client, tmp_path, "wide")
    job = json.loads(ok(server, "train", "--dataset", dataset, "--model", "a-rather-long-model-name", "--json"))
    client.wait_for_job(job["id"], timeout=120)
    jobs = ok(server, "jobs", "list")
    assert job["id"] in jobs and "a-rather-long-model-name" in jobs, jobs
    assert all(j["id"] in jobs for j in json.loads(ok(server, "jobs", "list", "--json")))
    events = ok(server, "jobs", "events", job["id"])
    assert "started" in events and "epoch" in events and "succeeded" in events
    shown = ok(server, "models", "show", "a-rather-long-model-name")
    assert "val_accuracy" in shown and "│ 1 " in shown and job["id"] in shown, shown


def test_cancel_says_what_happens_to_a_running_and_a_queued_job(server: Server, client: Client, tmp_path: Path) -> None:
    dataset = small_dataset(client, tmp_path, "cancel", rows=300)
    running = client.create_job(dataset, "cli-cancel", hyperparameters={"epochs": 10_000, "batch_size": 1})
    deadline = time.monotonic() + 60
    while client.get_job(running["id"])["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    queued = client.create_job(dataset, "cli-cancel-2")  # one job at a time: it waits behind the first
    assert "cancelled" in ok(server, "jobs", "cancel", queued["id"])
    said = ok(server, "jobs", "cancel", running["id"])
    assert "cancelling" in said and "running" not in said, said
    assert client.wait_for_job(running["id"], timeout=60)["status"] == "cancelled"
    again = one_line(cli(server, "jobs", "cancel", running["id"]), 1)
    assert "409" in again and "already cancelled" in again


def test_chat_one_shot_and_as_a_conversation_streams_what_the_model_answers(
    server: Server, client: Client, llm: str
) -> None:
    options = ["--max-tokens", "6", "--temperature", "0"]
    first = client.chat(llm, [{"role": "user", "content": HELLO}], max_tokens=6, temperature=0)
    answer = first["choices"][0]["message"]["content"]
    assert ok(server, "chat", llm, HELLO, *options) == answer + "\n"
    history = [{"role": "user", "content": HELLO}, {"role": "assistant", "content": answer}]
    history.append({"role": "user", "content": "And again"})
    second = client.chat(llm, history, max_tokens=6, temperature=0)["choices"][0]["message"]["content"]
    conversation = ok(server, "chat", llm, *options, stdin=f"{HELLO}\nAnd again\n")
    assert conversation == f"{answer}\n{second}\n"
    whole = json.loads(ok(server, "chat", llm, HELLO, *options, "--json"))
    assert whole["choices"][0]["message"]["content"] == answer

    text = client.complete(llm, "Users upload", max_tokens=5, temperature=0)["choices"][0]["text"]
    assert ok(server, "complete", llm, "Users upload", "--max-tokens", "5", "--temperature", "0") == text + "\n"
    wrong = one_line(cli(server, "chat", "all-minilm-l6-v2", HELLO), 1)
    assert "all-minilm-l6-v2" in wrong


def test_embed_prints_each_texts_vector(server: Server) -> None:
    shown = ok(server, "embed", "all-minilm-l6-v2", "a cat", "a dog")
    assert shown.count("384") >= 2 and "a cat" in shown and "1.000" in shown
    answer = json.loads(ok(server, "embed", "all-minilm-l6-v2", "a cat", "--json", "--dimensions", "64"))
    assert len(answer["data"][0]["embedding"]) == 64


def test_models_aliases_loading_deletion_audit_and_usage(
    server: Server, client: Client, llm: str, tmp_path: Path
) -> None:
    # Its files are stored apart from the other tiny models': deleting a version deletes the blobs of its files
    # when no version has the same manifest, even those another version holds too (left to the registry's owners).
    with_unshared_files(build_tiny_causal_lm(tmp_path / "v", seed=5))
    client.import_model(tmp_path / "v", "cli-doomed")
    client.import_model(tmp_path / "v", "cli-doomed")  # version 2
    assert "cli-doomed:production → 1" in ok(server, "models", "alias", "cli-doomed", "production", "1")
    assert "removed" in ok(server, "models", "unalias", "cli-doomed", "production")
    assert client.get_model("cli-doomed")["aliases"] == {}
    loaded = ok(server, "models", "load", "cli-doomed", "--max-batch-size", "4")
    assert "loaded cli-doomed:2" in loaded and "1 replica)" in " ".join(loaded.split()), loaded
    refused = one_line(cli(server, "models", "load", "cli-doomed", "--replicas", "2"), 1)
    assert "replicas=2 needs a cluster" in refused and "OPENMAAS_CLUSTER" in refused, refused
    refused = one_line(cli(server, "models", "load", "cli-doomed", "--max-replicas", "2"), 1)
    assert "autoscaling 1..2 replicas (target_ongoing_requests=2) needs a cluster" in refused, refused
    assert "unloaded cli-doomed:2" in ok(server, "models", "unload", "cli-doomed")
    assert "cli-doomed:1 deleted" in ok(server, "models", "delete", "cli-doomed", "--version", "1")
    assert [v["version"] for v in client.get_model("cli-doomed")["versions"]] == [2]
    assert "deleted" in ok(server, "models", "delete", "cli-doomed")
    one_line(cli(server, "models", "show", "cli-doomed"), 1)

    tenant = ok(server, "tenants", "create", f"cli-audited-{time.monotonic_ns()}", "--quiet").strip()
    audit = ok(server, "audit", "--limit", "5")
    assert "tenant.create" in audit and tenant in audit, audit

    client.chat(llm, [{"role": "user", "content": HELLO}], max_tokens=2)
    deadline = time.monotonic() + 10
    while llm not in (used := ok(server, "usage", "--group-by", "model", "--start", "2000-01-01")):
        assert time.monotonic() < deadline, used
        time.sleep(0.3)
    assert "tokens" in used and json.loads(ok(server, "usage", "--json"))[0]["completion_tokens"] >= 0
    later = json.loads(ok(server, "usage", "--group-by", "model", "--start", "2100-01-01", "--json"))
    assert later == []


def test_files_fine_tunes_and_batches_from_the_command_line(server: Server, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    training = json.loads(ok(server, "files", "upload", str(rows), "--purpose", "fine-tune", "--json"))
    assert training["purpose"] == "fine-tune" and training["bytes"] == rows.stat().st_size
    assert training["id"] in ok(server, "files", "list", "--purpose", "fine-tune")
    job = json.loads(ok(server, "fine-tune", "create", "bow-mlp", training["id"], "--n-epochs", "1", "--json"))
    deadline = time.monotonic() + 120
    while json.loads(ok(server, "fine-tune", "show", job["id"], "--json"))["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    shown = ok(server, "fine-tune", "show", job["id"])
    assert f"ft:bow-mlp:default::{job['id']}" in shown and "Data report: 40 examples" in shown
    assert "tokens per example" in shown and "a 20, b 20" in shown, shown
    assert "trained tokens: 63" in shown  # 70 terms ("text" and a number of 2+ digits), 36 of 40 rows train
    # Created and followed to the end: the report first, then a bar of the epochs, then the model.
    waited = ok(server, "fine-tune", "create", "bow-mlp", training["id"], "--n-epochs", "2", "--wait")
    assert "data report" in waited and "estimated duration" in waited and "tokens/s" in waited
    assert "2/2" in waited and "succeeded" in waited and "ft:bow-mlp:default::" in waited
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": \n')
    bad_file = json.loads(ok(server, "files", "upload", str(bad), "--purpose", "fine-tune", "--json"))
    failed = cli(server, "fine-tune", "create", "bow-mlp", bad_file["id"])
    assert failed.returncode == 1 and "failed" in failed.stdout and "line 2" in failed.stdout
    requests = tmp_path / "requests.jsonl"
    line = {
        "custom_id": "x",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "all-minilm-l6-v2", "input": "hi"},
    }
    requests.write_text(json.dumps(line) + "\n")
    batch_file = json.loads(ok(server, "files", "upload", str(requests), "--purpose", "batch", "--json"))
    batch = json.loads(ok(server, "batches", "create", batch_file["id"], "/v1/embeddings", "--json"))
    while (batch := json.loads(ok(server, "batches", "show", batch["id"], "--json")))["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "1 done, 0 failed of 1" in ok(server, "batches", "show", batch["id"])
    assert json.loads(ok(server, "files", "content", batch["output_file_id"]))["custom_id"] == "x"
    requests.write_text("".join(json.dumps({**line, "custom_id": f"x{i}"}) + "\n" for i in range(5)))
    batch_file = json.loads(ok(server, "files", "upload", str(requests), "--purpose", "batch", "--json"))
    waited = ok(server, "batches", "create", batch_file["id"], "/v1/embeddings", "--wait")
    assert "5/5" in waited and "completed, 5 done, 0 failed of 5" in waited
    assert batch["id"] in ok(server, "batches", "list")
