"""Runs each job in its own worker process on this machine, up to a configured number at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openmaas.domain.jobs import JobStatus
from openmaas.storage.metadata.repositories import JobRepository
from openmaas.training.scheduling import QueuedJob, pick_next

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 2.0


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    log_path: Path


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code} before reporting a result"


class LocalProcessExecutor:
    def __init__(
        self,
        jobs: JobRepository,
        *,
        env: dict[str, str],
        log_dir: Path,
        max_concurrent: int = 1,
        max_attempts: int = 3,
        poll_seconds: float = 0.2,
        tenant_limits: Callable[[], dict[str, dict[str, int]]] = dict,
    ) -> None:
        self.tenant_limits = tenant_limits
        self.max_attempts = max_attempts
        self.jobs = jobs
        self.env = env
        self.log_dir = log_dir
        self.max_concurrent = max_concurrent
        self.poll_seconds = poll_seconds
        self.running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._requeue_orphans)
        self._task = asyncio.create_task(self._run(), name="job-executor")

    def _requeue_orphans(self) -> None:
        # A job left `running` by a previous server process lost its worker with it (workers die with
        # their server): it goes back to the queue and resumes from its last checkpoint. The server's death
        # is not an attempt of the job, so the attempt is given back: only the worker's own failures (a
        # crash, an OOM kill, a non-zero exit: see `_reap_one`) spend `max_attempts`. The killed attempt's
        # compute is already in its usage record, which its worker kept up to date (worker.AttemptMeter).
        reason = "interrupted: the server stopped while the job was running; it resumes from its last checkpoint"
        for job_id in self.jobs.ids_in(JobStatus.RUNNING):
            if self.jobs.requeue_interrupted(job_id, reason):
                self.jobs.add_event(job_id, "retrying", {"reason": reason})

    def _retry_or_fail(self, job_id: str, reason: str) -> None:
        job = self.jobs.get(None, job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return
        if job.attempts < self.max_attempts:
            if self.jobs.transition(job_id, JobStatus.QUEUED, only_from=[JobStatus.RUNNING], reason=reason):
                self.jobs.add_event(job_id, "retrying", {"reason": reason, "attempt": job.attempts})
            return
        final = f"{reason} (after {job.attempts} attempt{'s' if job.attempts != 1 else ''})"
        if self.jobs.transition(job_id, JobStatus.FAILED, reason=final):
            self.jobs.add_event(job_id, "failed", {"reason": final})

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for running in self.running.values():
            running.process.terminate()
        for job_id, running in list(self.running.items()):
            try:
                await asyncio.to_thread(running.process.wait, 10)
            except subprocess.TimeoutExpired:
                running.process.kill()
            await asyncio.to_thread(self._reap_one, job_id, running)
        self.running.clear()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        running = self.running.get(job_id)
        if running is not None:
            running.process.send_signal(signal.SIGTERM)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # keep scheduling whatever one bad tick did
                log.exception("executor tick failed")
            # Workers running: look for their exits every poll. None: a job created here wakes the loop at
            # once, so the idle poll only catches jobs another API process queued on a shared database, and
            # an idle server does not spend ~2% of a core on queries (a serving one keeps that core).
            timeout = self.poll_seconds if self.running else max(self.poll_seconds, IDLE_POLL_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def tick(self) -> None:
        for job_id, running in list(self.running.items()):
            if running.process.poll() is not None:
                self._reap_one(job_id, running)
                del self.running[job_id]
        while len(self.running) < self.max_concurrent:
            if not self._start_next():
                break

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
            if self.jobs.claim(job.id):
                self._spawn(job.id)
                return True
            queued.remove(job)  # claimed or cancelled meanwhile
        return False

    def _spawn(self, job_id: str) -> None:
        log_path = self.log_dir / f"{job_id}.log"
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "openmaas.training.worker", job_id],
                env={**os.environ, **self.env},
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.running[job_id] = _Running(process, log_path)
        log.info("job %s started in worker pid %s", job_id, process.pid)

    def _reap_one(self, job_id: str, running: _Running) -> None:
        """A worker ended: if it did not record an outcome, record one for it."""
        code = running.process.returncode
        job = self.jobs.get(None, job_id)
        if job is None or job.status.is_terminal:
            return
        if job.cancel_requested:
            if self.jobs.transition(job_id, JobStatus.CANCELLED, reason="cancelled by the user"):
                self.jobs.add_event(job_id, "cancelled", {"reason": "cancelled by the user"})
            return
        self._retry_or_fail(job_id, describe_exit(code if code is not None else -9))
