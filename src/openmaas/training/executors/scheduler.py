"""The job scheduler: which queued job runs next and when, its attempts, retries and leases, whatever launches it.

One per API process. It claims jobs from the shared store (fair across tenants, then by priority: see
training/scheduling.py), within this process's `max_concurrent` and each tenant's `concurrent_jobs` counted
across processes; hands each claimed attempt to its `Launcher`; renews the leases of the attempts it runs;
records an outcome for an attempt that ended without one (retried up to `max_attempts`, then failed); and takes
over the jobs of processes whose leases expired. It knows nothing of processes: that is the launcher's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from openmaas.domain.jobs import JobStatus
from openmaas.storage.metadata.leases import LeaseRepository
from openmaas.storage.metadata.repositories import JobRepository
from openmaas.training.executors import owners
from openmaas.training.executors.launcher import AttemptExit, Launcher
from openmaas.training.scheduling import QueuedJob, pick_next

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0
CANCELLED = "cancelled by the user"
OWNER_GONE = "interrupted: the server stopped while the job was running; it resumes from its last checkpoint"
LEASE_EXPIRED = (
    "interrupted: the server running the job stopped renewing its lease; it resumes from its last checkpoint"
)


class JobScheduler:
    def __init__(
        self,
        jobs: JobRepository,
        leases: LeaseRepository,
        launcher: Launcher,
        *,
        node: str,
        max_concurrent: int = 1,
        max_attempts: int = 3,
        poll_seconds: float = 0.2,
        lease_s: float = 30.0,
        tenant_limits: Callable[[], dict[str, dict[str, int]]] = dict,
    ) -> None:
        self.jobs = jobs
        self.leases = leases
        self.launcher = launcher
        self.node = node
        self.owner = owners.this_process(node)
        self.max_concurrent = max_concurrent
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.lease_s = lease_s
        self.tenant_limits = tenant_limits
        self.running: set[str] = set()  # jobs whose attempts this process launched and has not reaped yet
        self._cancel_sent: set[str] = set()
        self._renewed_at = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Before the server answers: a restarted server has its interrupted jobs queued again at once.
        await asyncio.to_thread(self.take_over_orphans)
        self._task = asyncio.create_task(self._run(), name="job-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # The attempts stop at their next step and queue their jobs again (the worker tells a shutdown from a
        # user's cancel by the store's cancel request); one that does not within the grace is killed.
        for job_id in self.running:
            self.launcher.cancel(job_id)
        for job_id in list(self.running):
            ended = await asyncio.to_thread(self.launcher.wait, job_id, STOP_GRACE_SECONDS)
            if ended is None:
                self.launcher.kill(job_id)
                ended = await asyncio.to_thread(self.launcher.wait, job_id, STOP_GRACE_SECONDS)
            await asyncio.to_thread(self._reap, job_id, ended or AttemptExit(-9))
        self.running.clear()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        # A job run by another process learns of the cancel from the store: its worker polls the request,
        # and its scheduler sees it when renewing the lease.
        if job_id in self.running:
            self.launcher.cancel(job_id)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # keep scheduling whatever one bad tick did
                log.exception("scheduler tick failed")
            # Attempts running: look for their exits every poll. None: a job created here wakes the loop at
            # once, so the idle poll only catches jobs another API process queued on a shared database, and
            # an idle server does not spend ~2% of a core on queries (a serving one keeps that core).
            timeout = self.poll_seconds if self.running else max(self.poll_seconds, IDLE_POLL_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def tick(self) -> None:
        for job_id in list(self.running):
            ended = self.launcher.poll(job_id)
            if ended is not None:
                self.running.discard(job_id)
                self._cancel_sent.discard(job_id)
                self._reap(job_id, ended)
        # A lease is renewed three times per its length, so one slow renewal does not lose it; a failed one is
        # tried again at the next tick.
        if time.monotonic() - self._renewed_at >= self.lease_s / 3:
            self._renew()
            self._renewed_at = time.monotonic()
            self.take_over_orphans()
        while len(self.running) < self.max_concurrent:
            if not self._start_next():
                break

    def _renew(self) -> None:
        held = self.leases.renew(self.owner, self.running, self.lease_s)
        for job_id in list(self.running):
            if job_id not in held:
                job = self.jobs.get(None, job_id)
                if job is not None and job.status is JobStatus.RUNNING:
                    # Another process took the job over (this one could not renew in time): two attempts of
                    # one job must not run on, and the other one holds the lease.
                    log.warning("job %s was taken over by another process; stopping its attempt here", job_id)
                    self.launcher.kill(job_id)
            elif held[job_id] and job_id not in self._cancel_sent:
                self._cancel_sent.add(job_id)  # cancelled through another process
                self.launcher.cancel(job_id)

    def take_over_orphans(self) -> None:
        """Queue again the running jobs of processes that are gone: at once for one of this node that no longer
        exists, else once its lease expired. The owner's death is not an attempt of the job (only an
        attempt's own failures spend `max_attempts`: see `_reap`), and its compute is already in its usage
        record, which its worker kept up to date (worker.AttemptMeter); a job cancelled meanwhile ends cancelled."""
        for lease in self.leases.running():
            if lease.job_id in self.running:
                continue
            gone = owners.is_gone(lease.owner, self.node)
            if not (gone or lease.expired):
                continue
            if lease.cancel_requested:
                if self.leases.take_over(lease, JobStatus.CANCELLED, CANCELLED, owner_gone=gone):
                    self.jobs.add_event(lease.job_id, "cancelled", {"reason": CANCELLED})
                continue
            reason = OWNER_GONE if gone else LEASE_EXPIRED
            if self.leases.take_over(lease, JobStatus.QUEUED, reason, owner_gone=gone):
                log.info("job %s of %s queued again: %s", lease.job_id, lease.owner, reason)
                self.jobs.add_event(lease.job_id, "retrying", {"reason": reason})

    def _start_next(self) -> bool:
        running = self.jobs.running_by_tenant()
        limits = self.tenant_limits()
        queued = [
            job
            for job in (QueuedJob(*row) for row in self.jobs.queued())
            # A tenant at its concurrent_jobs limit keeps its jobs queued until one of them ends.
            if running.get(job.tenant_id, 0) < limits.get(job.tenant_id, {}).get("concurrent_jobs", float("inf"))
        ]
        while queued:
            job = pick_next(queued, running, self.jobs.last_started_by_tenant())
            assert job is not None
            if (waiting := self.launcher.waiting_reason(job.id)) is not None:
                # It stays queued, saying why, and the jobs behind it may start meanwhile.
                if self.jobs.note_waiting(job.id, waiting):
                    self.jobs.add_event(job.id, "waiting", {"reason": waiting})
                queued.remove(job)
                continue
            limit = limits.get(job.tenant_id, {}).get("concurrent_jobs")
            if self.leases.claim(job.id, self.owner, self.lease_s, tenant_limit=limit):
                self._launch(job.id)
                return True
            queued.remove(job)  # claimed elsewhere, cancelled, or its tenant's limit reached meanwhile
        return False

    def _launch(self, job_id: str) -> None:
        try:
            self.launcher.start(job_id)
        except Exception:
            log.exception("job %s: its attempt could not be started", job_id)
            self._retry_or_fail(job_id, "the job's worker could not be started")
            return
        self.running.add(job_id)

    def _reap(self, job_id: str, ended: AttemptExit) -> None:
        """An attempt ended: if it did not record an outcome, record one for it."""
        job = self.jobs.get(None, job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return
        if job.cancel_requested:
            if self.leases.release(job_id, self.owner, JobStatus.CANCELLED, CANCELLED):
                self.jobs.add_event(job_id, "cancelled", {"reason": CANCELLED})
            return
        self._retry_or_fail(job_id, self.launcher.describe_exit(ended))

    def _retry_or_fail(self, job_id: str, reason: str) -> None:
        job = self.jobs.get(None, job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return
        if job.attempts < self.max_attempts:
            if self.leases.release(job_id, self.owner, JobStatus.QUEUED, reason):
                self.jobs.add_event(job_id, "retrying", {"reason": reason, "attempt": job.attempts})
            return
        final = f"{reason} (after {job.attempts} attempt{'s' if job.attempts != 1 else ''})"
        if self.leases.release(job_id, self.owner, JobStatus.FAILED, final):
            self.jobs.add_event(job_id, "failed", {"reason": final})
