"""The training job state machine: queued → running → succeeded | failed | cancelled, as pure functions."""

from __future__ import annotations

from enum import StrEnum


class JobFailure(Exception):
    """A job cannot go on, for a reason its owner can act on: the message becomes the job's failure reason as
    it is, so it names only the user's own things (ids, names, settings), never a server path. Any other
    exception in a worker is our bug, and the reason only names its type (the traceback is in the job log)."""


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # RUNNING → QUEUED: the worker died or the server stopped; the job waits to resume from its checkpoint.
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in _ALLOWED[current]


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """The states a job may be in for `target` to be reachable: used for compare-and-set updates."""
    return frozenset(state for state, targets in _ALLOWED.items() if target in targets)
