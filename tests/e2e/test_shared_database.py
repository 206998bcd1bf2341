"""Two API servers over one Postgres database and one data directory, as two processes (or hosts) of one
deployment: a job runs once whichever server took it, its events and its cancel go through either server,
and a job whose server was killed is taken over by the other once the lease expired."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from openmaas import Client
from openmaas.training.executors.scheduler import LEASE_EXPIRED
from tests.conftest import Server
from tests.contract.test_metadata_store import _postgres_url
from tests.e2e.test_job_lifecycle import small_dataset

LEASE_S = 3.0
LONG = {"epochs": 100_000, "batch_size": 4, "checkpoint_every_steps": 20, "log_every_steps": 0}


@pytest.fixture
def database() -> Iterator[str]:
    """A Postgres schema of its own, dropped after the test."""
    urls = _postgres_url()
    yield next(urls)
    next(urls, None)


def pair(start_server: type[Server], tmp_path: Path, database: str) -> tuple[Server, Server]:
    shared = tmp_path / "shared"  # the datasets and checkpoints every node must see (an object store, later)
    shared.mkdir()
    settings = {"OPENMAAS_DATABASE_URL": database, "OPENMAAS_JOB_LEASE_S": str(LEASE_S)}
    # Two node names: neither server can tell whether the other's process lives, as on two hosts.
    a = start_server(shared, OPENMAAS_NODE_NAME="node-a", **settings)
    b = start_server(shared, OPENMAAS_NODE_NAME="node-b", **settings)
    return a, b


def workers(job_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if (process.info["cmdline"] or [])[-2:] == ["openmaas.training.worker", job_id]:
            found.append(process)
    return found


def wait_for_event(client: Client, job_id: str, kind: str, after: int = 0, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.job_events(job_id, after=after):
            if event["type"] == kind:
                return event
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event for {job_id} after {after}: {client.job_events(job_id)}")


def test_a_job_runs_once_and_streams_and_cancels_through_the_other_server(
    start_server: type[Server], tmp_path: Path, database: str
) -> None:
    a, b = pair(start_server, tmp_path, database)
    with a.client() as through_a, b.client() as through_b:
        dataset = small_dataset(through_a, tmp_path, "shared")
        short = through_a.create_job(dataset, "short", hyperparameters={"epochs": 3, "batch_size": 4})
        streamed = [event["type"] for event in through_b.stream_job_events(short["id"])]
        assert streamed[0] == "started" and streamed[-1] == "succeeded" and streamed.count("epoch") == 3, streamed
        final = through_b.get_job(short["id"])
        assert final["status"] == "succeeded" and final["attempts"] == 1
        assert [e["type"] for e in through_a.job_events(short["id"])].count("started") == 1
        assert through_b.predict("short", ["alpha spam"])["predictions"]

        long = through_a.create_job(dataset, "long", hyperparameters=LONG)
        for event in through_b.stream_job_events(long["id"]):
            if event["type"] == "checkpoint":
                break
        assert len(workers(long["id"])) == 1
        through_b.cancel_job(long["id"])
        final = through_a.wait_for_job(long["id"], timeout=30)
        assert final["status"] == "cancelled" and final["attempts"] == 1, final
        kinds = [e["type"] for e in through_b.job_events(long["id"])]
        assert kinds.count("started") == 1 and "retrying" not in kinds and kinds[-1] == "cancelled"
        assert through_b.job_checkpoints(long["id"])
    deadline = time.monotonic() + 10
    while workers(long["id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers(long["id"])


def test_a_killed_servers_job_is_taken_over_by_the_other_once_its_lease_expired(
    start_server: type[Server], tmp_path: Path, database: str
) -> None:
    a, b = pair(start_server, tmp_path, database)
    with a.client() as through_a:
        dataset = small_dataset(through_a, tmp_path, "shared")
        job = through_a.create_job(dataset, "taken-over", hyperparameters=LONG)
        checkpoint = wait_for_event(through_a, job["id"], "checkpoint")
    [worker] = workers(job["id"])
    runner, survivor = (a, b) if worker.ppid() == a.process.pid else (b, a)  # type: ignore[union-attr]
    assert worker.ppid() == runner.process.pid  # type: ignore[union-attr]
    runner.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    killed = time.monotonic()
    runner.process.wait()  # type: ignore[union-attr]
    with survivor.client() as client:
        time.sleep(1.0)
        # Its lease was renewed at most a third of it before the kill: still held, so nobody took the job yet.
        held = client.get_job(job["id"])
        assert held["status"] == "running" and "retrying" not in [e["type"] for e in client.job_events(job["id"])]
        retrying = wait_for_event(client, job["id"], "retrying", after=checkpoint["id"], timeout=60)
        assert retrying["data"]["reason"] == LEASE_EXPIRED
        assert time.monotonic() - killed >= LEASE_S * 2 / 3
        resumed = wait_for_event(client, job["id"], "resumed", after=retrying["id"], timeout=120)
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]
        [again] = workers(job["id"])
        assert again.ppid() == survivor.process.pid and again.pid != worker.pid  # type: ignore[union-attr]
        running = client.get_job(job["id"])
        assert running["status"] == "running" and running["attempts"] == 1  # the kill spent no attempt
        client.cancel_job(job["id"])
        assert client.wait_for_job(job["id"], timeout=30)["status"] == "cancelled"
