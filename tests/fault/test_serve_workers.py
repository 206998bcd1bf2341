"""`openmaas serve --workers N`: several API processes on one port, sharing the database and Redis. One killed
with SIGKILL leaves the others answering, and every call a client got a 200 for is in the usage records."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REDIS, Server, redis_reachable
from tests.e2e.test_job_lifecycle import small_dataset


def test_several_workers_without_redis_or_with_grpc_are_refused_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("OPENMAAS_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "openmaas", "serve", "--data-dir", str(tmp_path), "--port", "1", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OPENMAAS_REDIS_URL" in result.stderr and "--workers 2" in result.stderr, result.stderr
    env.update(OPENMAAS_REDIS_URL=REDIS, OPENMAAS_GRPC_PORT="1")
    result = subprocess.run(
        [sys.executable, "-m", "openmaas", "serve", "--data-dir", str(tmp_path), "--port", "1", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "OPENMAAS_GRPC_PORT" in result.stderr, result.stderr


def api_workers(server: Server) -> list[psutil.Process]:
    assert server.process is not None
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def wait_until_workers(server: Server, count: int, timeout: float = 90) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(workers := api_workers(server)) < count:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    return workers


def test_a_killed_api_process_loses_no_answered_call(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
    server = Server(
        tmp_path_factory.mktemp("two-workers"), {"OPENMAAS_REDIS_URL": REDIS, "OPENMAAS_FOUNDATION_MODELS": "[]"},
        args=("--workers", "2"),
    )
    try:
        server.start(timeout=120)
        first, second = wait_until_workers(server, 2)
        with server.client() as client:
            dataset = small_dataset(client, tmp_path_factory.mktemp("data"), "workers")
            job = client.create_job(dataset, "workers", hyperparameters={"epochs": 2})
            assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"
        with server.http() as admin:
            key = admin.post("/v1/tenants/default/keys", json={"scopes": ["infer"]}).json()
        answered, failed = 0, 0
        stop = threading.Event()

        def call() -> None:
            nonlocal answered, failed
            # A connection per call, so that the kernel hands each to whichever process accepts first.
            while not stop.is_set():
                try:
                    response = httpx.post(
                        f"{server.url}/v1/models/workers/predict",
                        json={"inputs": ["alpha beta spam"]},
                        headers={"Authorization": f"Bearer {key['key']}", "Connection": "close"},
                        timeout=60,  # a process's first call loads the model
                    )
                except httpx.TransportError:
                    failed += 1
                    continue
                if response.status_code == 200:
                    answered += 1
                else:
                    failed += 1

        caller = threading.Thread(target=call)
        caller.start()
        try:
            until(lambda: answered >= 20)
            before = answered
            first.kill()  # SIGKILL, with calls in flight
            until(lambda: answered >= before + 20)  # the other process answers
            assert second.is_running() and second.status() != psutil.STATUS_ZOMBIE
        finally:
            stop.set()
            caller.join()
        assert answered > 0
        deadline = time.monotonic() + 30
        while True:
            with server.http() as admin:
                rows = admin.get("/v1/usage", params={"group_by": "key"}).json()["data"]
            recorded = sum(row["records"] for row in rows if row.get("key") == key["id"])
            # Every answered call is recorded; a call whose process died after recording it, before answering,
            # may be recorded without a 200.
            if answered <= recorded <= answered + failed:
                break
            assert time.monotonic() < deadline, (answered, failed, recorded, rows)
            time.sleep(0.5)
        with server.http() as admin:  # still answering, whichever process takes the call
            assert admin.get("/v1/models/workers").status_code == 200
    finally:
        server.stop()


def until(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.1)
