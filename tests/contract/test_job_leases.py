"""Job leases across processes, on SQLite and Postgres: two schedulers over one database (each with its own
engine, as two API processes have) never claim the same job, a live lease is left alone, an expired one is
taken over once, and a tenant's job limit holds across them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from openmaas.domain.jobs import JobStatus
from openmaas.storage.metadata import MetadataStore, open_store
from openmaas.storage.metadata.repositories import AlreadyExists
from openmaas.training.executors import JobScheduler, LocalProcessLauncher
from openmaas.training.executors.scheduler import LEASE_EXPIRED, OWNER_GONE
from tests.contract.test_metadata_store import _postgres_url, job, version_spec


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MetadataStore, MetadataStore]]:
    """Two stores over one database, as two API processes open it."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'meta.db'}"])
    else:
        urls = _postgres_url()
    url = next(urls)
    first = open_store(url)
    second = open_store(url, run_migrations=False)
    first.tenants.ensure("t1", "one")
    first.tenants.ensure("t2", "two")
    try:
        yield first, second
    finally:
        first.close()
        second.close()
        next(urls, None)


def scheduler(store: MetadataStore, tmp_path: Path, node: str, **options: Any) -> JobScheduler:
    """A scheduler as an API process builds it: its workers find no dataset, so every job they run fails."""
    url = store.engine.url.render_as_string(hide_password=False)
    launcher = LocalProcessLauncher(
        env={"OPENMAAS_DATA_DIR": str(tmp_path / node), "OPENMAAS_DATABASE_URL": url}, log_dir=tmp_path / node
    )
    return JobScheduler(store.jobs, store.leases, launcher, node=node, **options)


def queue(store: MetadataStore, count: int, tenant: str = "t1") -> list[str]:
    ids = []
    for _ in range(count):
        j = job("ds_missing", tenant)
        store.jobs.add(j)
        ids.append(j.id)
    return ids


def test_two_schedulers_never_start_the_same_job(stores: tuple[MetadataStore, MetadataStore], tmp_path: Path) -> None:
    a_store, b_store = stores
    ids = queue(a_store, 2)
    a = scheduler(a_store, tmp_path, "node-a", max_concurrent=2, max_attempts=1)
    b = scheduler(b_store, tmp_path, "node-b", max_concurrent=2, max_attempts=1)
    start = threading.Barrier(2)

    def tick(s: JobScheduler) -> None:
        start.wait()  # both look at the same queue, and pick the same job first
        s.tick()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(tick, (a, b)))
    assert not a.running & b.running, "a job was started by both schedulers"
    assert a.running | b.running == set(ids)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (a.running or b.running):
        a.tick()
        b.tick()
        time.sleep(0.1)
    for job_id in ids:
        final = a_store.jobs.get(None, job_id)
        assert final is not None and final.status is JobStatus.FAILED and final.attempts == 1, final
        assert "ds_missing" in (final.reason or "")
        assert [e.type for e in a_store.jobs.events(job_id)[0]] == ["failed"]


def test_of_many_claims_at_once_each_job_is_won_once(stores: tuple[MetadataStore, MetadataStore]) -> None:
    a_store, b_store = stores
    ids = queue(a_store, 30)
    barrier = threading.Barrier(4)

    def claim_all(args: tuple[MetadataStore, str]) -> list[str]:
        store, owner = args
        barrier.wait()
        return [job_id for job_id in ids if store.leases.claim(job_id, owner, 30.0)]

    with ThreadPoolExecutor(4) as pool:
        claimants = [(a_store, "a/1/1"), (b_store, "b/1/1"), (a_store, "c/1/1"), (b_store, "d/1/1")]
        won = list(pool.map(claim_all, claimants))
    assert sorted(job_id for claims in won for job_id in claims) == sorted(ids)
    owners = {lease.job_id: lease.owner for lease in a_store.leases.running()}
    for claims, owner in zip(won, ("a/1/1", "b/1/1", "c/1/1", "d/1/1"), strict=True):
        assert all(owners[job_id] == owner for job_id in claims)


def test_a_live_lease_is_left_alone_and_an_expired_one_is_taken_over_once(
    stores: tuple[MetadataStore, MetadataStore], tmp_path: Path
) -> None:
    a_store, b_store = stores
    [job_id] = queue(a_store, 1)
    owner_a = "node-a/4242/1700000000000"  # a process of another node: only its lease says whether it lives
    assert a_store.leases.claim(job_id, owner_a, 1.0)
    assert not b_store.leases.claim(job_id, "node-b/1/1", 1.0)
    takers = [scheduler(b_store, tmp_path, "node-b"), scheduler(a_store, tmp_path, "node-c")]
    for _ in range(3):  # the owner renews within its lease: nobody takes the job
        for taker in takers:
            taker.take_over_orphans()
        assert a_store.leases.renew(owner_a, [job_id], 1.0) == {job_id: False}
        time.sleep(0.3)
    running = b_store.jobs.get(None, job_id)
    assert running is not None and running.status is JobStatus.RUNNING and running.attempts == 1
    time.sleep(1.2)  # the owner stopped renewing
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.take_over_orphans(), takers))
    requeued = b_store.jobs.get(None, job_id)
    assert requeued is not None and requeued.status is JobStatus.QUEUED and requeued.attempts == 0
    assert requeued.reason == LEASE_EXPIRED
    assert [(e.type, e.data["reason"]) for e in b_store.jobs.events(job_id)[0]] == [("retrying", LEASE_EXPIRED)]
    assert a_store.leases.renew(owner_a, [job_id], 1.0) == {}  # the old owner learns it lost the job
    assert b_store.leases.claim(job_id, "node-b/1/1", 1.0)
    assert not a_store.leases.release(job_id, owner_a, JobStatus.FAILED, "too late")  # nor can it end it


def test_a_job_cancelled_while_its_owner_was_gone_ends_cancelled(
    stores: tuple[MetadataStore, MetadataStore], tmp_path: Path
) -> None:
    a_store, b_store = stores
    [job_id] = queue(a_store, 1)
    assert a_store.leases.claim(job_id, "node-a/4242/1700000000000", 0.2)
    b_store.jobs.request_cancel(job_id)
    time.sleep(0.4)
    scheduler(b_store, tmp_path, "node-b").take_over_orphans()
    final = b_store.jobs.get(None, job_id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.finished_at is not None


def test_a_dead_owner_on_this_node_loses_its_jobs_at_once(
    stores: tuple[MetadataStore, MetadataStore], tmp_path: Path
) -> None:
    a_store, b_store = stores
    live, dead = queue(a_store, 2)
    me = scheduler(b_store, tmp_path, "this-node")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    started = round(psutil.Process(gone.pid).create_time() * 1000)
    gone.wait()
    assert a_store.leases.claim(dead, f"this-node/{gone.pid}/{started}", 60.0)
    assert a_store.leases.claim(live, scheduler(a_store, tmp_path, "this-node").owner, 60.0)  # alive: this process
    me.take_over_orphans()
    assert [e.data["reason"] for e in b_store.jobs.events(dead)[0]] == [OWNER_GONE]
    assert b_store.jobs.get(None, dead).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert b_store.jobs.get(None, live).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_a_tenants_job_limit_holds_across_processes(stores: tuple[MetadataStore, MetadataStore]) -> None:
    a_store, b_store = stores
    barrier = threading.Barrier(2)

    def claim(args: tuple[MetadataStore, str, str]) -> bool:
        store, job_id, owner = args
        barrier.wait()
        return store.leases.claim(job_id, owner, 30.0, tenant_limit=1)

    for _ in range(5):
        first, second = queue(a_store, 2, tenant="t2")
        with ThreadPoolExecutor(2) as pool:
            won = list(pool.map(claim, [(a_store, first, "a/1/1"), (b_store, second, "b/1/1")]))
        assert won.count(True) == 1, won
        winner = first if won[0] else second
        assert a_store.leases.release(winner, "a/1/1" if won[0] else "b/1/1", JobStatus.FAILED, "done")


def test_a_scheduler_that_lost_its_lease_stops_its_attempt_and_leaves_the_job_to_the_new_owner(
    stores: tuple[MetadataStore, MetadataStore], tmp_path: Path
) -> None:
    a_store, b_store = stores
    [job_id] = queue(a_store, 1)
    a = scheduler(a_store, tmp_path, "node-a", lease_s=0.3)
    a.tick()  # claims the job and starts its worker
    assert a.running == {job_id}
    [worker] = a.launcher.processes.values()  # type: ignore[attr-defined]
    time.sleep(0.5)  # a stalled: its lease lapses before it renews
    b = scheduler(b_store, tmp_path, "node-b", lease_s=30.0)
    b.take_over_orphans()
    assert b_store.leases.claim(job_id, b.owner, 30.0)
    a.tick()  # a's renewal finds the job is another's: its worker is killed, not left to train a second copy
    assert worker.wait(10) == -9
    deadline = time.monotonic() + 10
    while a.running and time.monotonic() < deadline:
        a.tick()
    assert not a.running
    held = b_store.jobs.get(None, job_id)
    assert held is not None and held.status is JobStatus.RUNNING and held.attempts == 1, held
    assert [lease.owner for lease in b_store.leases.running()] == [b.owner]
    assert [e.type for e in b_store.jobs.events(job_id)[0]] == ["retrying"]


def test_a_worker_whose_lease_was_taken_over_cannot_overwrite_the_job(
    stores: tuple[MetadataStore, MetadataStore],
) -> None:
    a_store, b_store = stores
    [job_id] = queue(a_store, 1)
    assert a_store.leases.claim(job_id, "node-a/1/1", 0.2)
    stale = a_store.leases.attempt_claim(job_id)  # what node-a's worker read when it started
    assert stale is not None and stale.owner == "node-a/1/1" and stale.attempt == 1
    assert a_store.leases.still_held(stale) == (True, False)
    time.sleep(0.5)  # node-a is gone silent: its lease expires, node-b takes the job over and runs it
    [lease] = b_store.leases.running()
    assert b_store.leases.take_over(lease, JobStatus.QUEUED, LEASE_EXPIRED)
    assert b_store.leases.claim(job_id, "node-b/1/1", 30.0)
    current = b_store.leases.attempt_claim(job_id)
    assert current is not None and current.attempt == 1 and current != stale  # the same number, another owner

    # node-a's worker, still running, tries every outcome a worker writes: none lands.
    assert a_store.leases.still_held(stale) == (False, False)
    assert not a_store.jobs.transition(job_id, JobStatus.FAILED, claim=stale, reason="stale failure")
    assert not a_store.jobs.transition(job_id, JobStatus.CANCELLED, claim=stale, reason="stale cancel")
    assert not a_store.jobs.requeue_interrupted(job_id, "stale shutdown", claim=stale)
    with pytest.raises(AlreadyExists):
        a_store.jobs.succeed_and_register(job_id, {"stale": True}, version_spec(job_id=job_id), claim=stale)
    seen = b_store.jobs.get(None, job_id)
    assert seen is not None and seen.status is JobStatus.RUNNING and seen.reason != "stale failure"
    assert b_store.models.get("t1", "m") is None  # the stale version was rolled back with its transition

    # The new owner's worker writes its outcome.
    assert b_store.leases.still_held(current) == (True, False)
    version = b_store.jobs.succeed_and_register(job_id, {"acc": 1}, version_spec(job_id=job_id), claim=current)
    final = a_store.jobs.get(None, job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.model_version == version.version
