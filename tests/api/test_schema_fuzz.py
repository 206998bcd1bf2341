"""Schemathesis against a real server's /openapi.json, with every check: no server error, no answer the
document does not describe, for the admin key, a read-only key and no key at all.

The inference routes are fuzzed against real models (tests/api/schemathesis.toml binds their model names): a
tiny bow-mlp classifier trained here, the shipped MiniLM embeddings model and a tiny random causal LM. The
run's failures are read from schemathesis' JSON report; the test names each one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, DATASETS, Server
from tests.tiny_llm import build_tiny_causal_lm

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Per operation and key: 37 operations, three keys, each case a request over loopback; most of the time goes
# to the coverage phase (schemathesis' boundary cases for every parameter), then these random ones.
MAX_EXAMPLES = int(os.environ.get("OPENMAAS_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("OPENMAAS_FUZZ_SEED", "20261203"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("fuzz")).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def models(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The models the fuzzer's requests name, ready before it starts; and a read-only key."""
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()[:201]
    data = tmp_path_factory.mktemp("fuzz-data") / "spam.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    llm = build_tiny_causal_lm(tmp_path_factory.mktemp("fuzz-llm") / "model")
    with server.client() as client, server.http() as http:
        dataset = client.upload_dataset(data, name="fuzz-data")
        job = client.create_job(dataset["id"], "fuzz-clf", hyperparameters={"epochs": 1})
        assert client.wait_for_job(job["id"], timeout=300)["status"] == "succeeded"
        for name in ("fuzz-chat", "fuzz-scratch"):  # the scratch one takes the registry's writes
            imported = http.post("/v1/models/import", json={"path": str(llm), "name": name})
            assert imported.status_code == 201, imported.text
        tenant = next(t for t in http.get("/v1/tenants").json()["data"] if t["name"] == "default")
        key = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read"]})
        assert key.status_code == 201, key.text
        scratch = http.post("/v1/tenants", json={"name": "fuzz-scratch"})
        assert scratch.status_code == 201, scratch.text
        for ready in (
            http.post("/v1/models/fuzz-clf/predict", json={"inputs": ["hello"]}),
            http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hello"}),
            http.post("/v1/completions", json={"model": "fuzz-chat", "prompt": "hello", "max_tokens": 2}),
        ):
            assert ready.status_code == 200, ready.text
    return {"read": str(key.json()["key"]), "scratch_tenant": str(scratch.json()["id"])}


def fuzz(server: Server, key: str | None, scratch_tenant: str, report: Path) -> tuple[list[dict[str, Any]], str]:
    """Run schemathesis once: the failures and errors in its JSON report (none when every check passed), and
    its account of them (each with the request that reproduces it)."""
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: with two, CPython 3.11.7's `ast` (which hypothesis calls to describe its strategies) fails
        # now and then with "AST constructor recursion depth mismatch" (fixed in 3.11.8, gh-106905).
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    if key is not None:
        command += ["-H", f"Authorization: Bearer {key}"]
    env = {**os.environ, "FUZZ_TENANT": scratch_tenant}
    # In the report's directory: schemathesis keeps its cache (.schemathesis/) in the working directory.
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, env=env, cwd=report.parent
    )
    assert report.exists(), run.stdout[-4000:] + run.stderr[-4000:]
    failures = problems_in(json.loads(report.read_text()))
    assert run.returncode == 0 or failures, f"exit {run.returncode}: {run.stdout[-4000:]}{run.stderr[-4000:]}"
    account = run.stdout.partition("= FAILURES =")[2] or run.stdout.partition("= ERRORS =")[2] or run.stdout
    return failures, account.partition("= WARNINGS =")[0]


def problems_in(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks that failed, and the errors that kept schemathesis from testing an operation."""
    return [*report.get("failures", []), *report.get("errors", [])]


@pytest.mark.parametrize("who", ["no key", "read-only key", "admin key"])
def test_the_fuzzer_finds_no_server_error_and_no_schema_violation(
    server: Server, models: dict[str, str], tmp_path: Path, who: str
) -> None:
    key = {"no key": None, "read-only key": models["read"], "admin key": ADMIN_KEY}[who]
    failures, account = fuzz(server, key, models["scratch_tenant"], tmp_path / "report.json")
    assert not failures, account[-30000:] + json.dumps(failures, indent=1)[:4000]
    assert httpx.get(f"{server.url}/healthz").status_code == 200
