"""The Executor interface: what the job service needs from whatever runs training jobs."""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    async def start(self) -> None:
        """Begin taking queued jobs from the store."""

    async def stop(self) -> None:
        """Stop taking jobs and stop the ones running here."""

    def wake(self) -> None:
        """A job was queued: look for work now rather than at the next poll."""

    def cancel(self, job_id: str) -> None:
        """Ask a running job to stop at its next step boundary."""
