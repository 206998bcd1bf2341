"""Runs each job in its own worker process on this machine, up to a configured number at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from openmaas.domain.ids import now
from openmaas.domain.jobs import JobStatus
from openmaas.storage.metadata.repositories import JobRepository

log = logging.getLogger(__name__)


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
        poll_seconds: float = 0.2,
    ) -> None:
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
        await asyncio.to_thread(self._fail_orphans)
        self._task = asyncio.create_task(self._run(), name="job-executor")

    def _fail_orphans(self) -> None:
        # A job left `running` by a previous server process has no worker any more.
        for job_id in self.jobs.ids_in(JobStatus.RUNNING):
            reason = "interrupted: the server stopped while the job was running"
            if self.jobs.transition(job_id, JobStatus.FAILED, reason=reason):
                self.jobs.add_event(job_id, "failed", {"reason": reason})

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
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
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
        for job_id in self.jobs.ids_in(JobStatus.QUEUED):
            if self.jobs.transition(job_id, JobStatus.RUNNING, started_at=now()):
                self._spawn(job_id)
                return True
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
            target, reason, event = JobStatus.CANCELLED, "cancelled by the user", "cancelled"
        else:
            target, reason, event = JobStatus.FAILED, describe_exit(code if code is not None else -9), "failed"
        if self.jobs.transition(job_id, target, reason=reason):
            self.jobs.add_event(job_id, event, {"reason": reason})
