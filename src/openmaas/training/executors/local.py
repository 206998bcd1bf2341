"""Launches each job attempt as its own worker process on this machine (`python -m openmaas.training.worker`),
so a crash or an out-of-memory kill takes down only that job."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from openmaas.training.executors.launcher import AttemptExit

log = logging.getLogger(__name__)


class LocalProcessLauncher:
    def __init__(self, *, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def waiting_reason(self, job_id: str) -> None:
        return None  # a worker process needs nothing the scheduler's own limits do not count

    def start(self, job_id: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{job_id}.log").open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "openmaas.training.worker", job_id],
                env={**os.environ, **self.env},
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.processes[job_id] = process
        log.info("job %s started in worker pid %s", job_id, process.pid)

    def poll(self, job_id: str) -> AttemptExit | None:
        process = self.processes[job_id]
        if process.poll() is None:
            return None
        del self.processes[job_id]
        return AttemptExit(process.returncode)

    def wait(self, job_id: str, timeout: float) -> AttemptExit | None:
        try:
            self.processes[job_id].wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.poll(job_id)

    def cancel(self, job_id: str) -> None:
        process = self.processes.get(job_id)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the worker's stop flag: it ends at its next step

    def kill(self, job_id: str) -> None:
        process = self.processes.get(job_id)
        if process is not None and process.poll() is None:
            process.kill()

    def describe_exit(self, exit: AttemptExit) -> str:
        if exit.code < 0:
            name = signal.Signals(-exit.code).name
            hint = " (out of memory?)" if -exit.code == signal.SIGKILL else ""
            return f"the worker process was killed by {name}{hint}"
        return f"the worker process exited with code {exit.code} before reporting a result"
