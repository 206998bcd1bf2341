"""The Launcher interface: what the job scheduler needs from whatever runs a job's attempts (local worker
processes now, Ray later). A launcher knows nothing of queues, tenants or retries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AttemptExit:
    """How an attempt ended, as its launcher saw it: `code` as a process's exit status (0 a clean exit, above
    0 an error exit, below 0 killed by that signal), and `detail` for what a launcher knows beyond the code."""

    code: int
    detail: str = ""


class Launcher(Protocol):
    def waiting_reason(self, job_id: str) -> str | None:
        """Why a queued job should not be claimed yet (the resources it asks for are not free), or None. A
        launcher says so for a bounded time only, so that no job waits forever: then the attempt starts, and
        fails or is retried as usual."""

    def start(self, job_id: str) -> None:
        """Start an attempt of a job this process has claimed; the attempt reads the job from the store and
        records its own outcome there."""

    def poll(self, job_id: str) -> AttemptExit | None:
        """How the job's attempt ended, or None while it runs. An ended attempt is forgotten once polled."""

    def wait(self, job_id: str, timeout: float) -> AttemptExit | None:
        """Block up to `timeout` seconds for the attempt to end: as `poll`, after waiting."""

    def cancel(self, job_id: str) -> None:
        """Ask the attempt to stop at its next step boundary (its checkpoints are kept); the attempt tells a
        user's cancel from a shutdown by the store's cancel request."""

    def kill(self, job_id: str) -> None:
        """Stop the attempt now."""

    def describe_exit(self, exit: AttemptExit) -> str:
        """The reason a job's owner reads when the attempt ended without recording an outcome."""
