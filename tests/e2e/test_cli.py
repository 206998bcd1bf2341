"""The README's CLI walk-through, run as written against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ADMIN_KEY, DATASETS, Server


def openmaas(server: Server, *args: str) -> str:
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "openmaas", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_readme_walkthrough(server: Server) -> None:
    dataset = openmaas(
        server, "datasets", "upload", str(DATASETS / "sms_spam" / "sms_spam.csv"), "--name", "sms-spam", "--quiet"
    ).strip()
    assert dataset.startswith("ds_")
    assert "5160" in openmaas(server, "datasets", "list")
    trained = openmaas(server, "train", "--dataset", dataset, "--model", "spam", "--param", "epochs=3", "--watch")
    assert "succeeded" in trained and "spam:1" in trained
    assert "spam" in openmaas(server, "models", "list")
    assert '"val_accuracy"' in openmaas(server, "models", "show", "spam", "--json")
    assert "val_accuracy" in openmaas(server, "models", "show", "spam")
    predicted = openmaas(
        server, "predict", "spam", "WINNER! Claim your free prize now, call 09061701461", "Are we still on for lunch?"
    )
    lines = [line for line in predicted.splitlines() if line.startswith("│")]
    assert "spam" in lines[0] and "ham" in lines[1], predicted
    assert "succeeded" in openmaas(server, "jobs", "list")


def test_cli_reports_api_errors_cleanly(server: Server) -> None:
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": "om-wrong"}
    done = subprocess.run(
        [sys.executable, "-m", "openmaas", "models", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "401" in done.stderr and "invalid API key" in done.stderr


def test_tenant_and_key_walkthrough(server: Server) -> None:
    tenant = openmaas(server, "tenants", "create", "cli-team", "--limit", "requests_per_minute=600", "--quiet").strip()
    assert tenant.startswith("tn_")
    key = openmaas(server, "keys", "create", tenant, "--scope", "read", "--scope", "infer").strip().splitlines()[-1]
    assert key.startswith("om-")
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": key}
    done = subprocess.run(
        [sys.executable, "-m", "openmaas", "datasets", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "5160" not in done.stdout  # the default tenant's datasets are not visible
    assert "cli-team" in openmaas(server, "tenants", "list")
    assert "read, infer" in openmaas(server, "keys", "list", tenant)
