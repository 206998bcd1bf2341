"""Executors run queued jobs: local worker processes now, a Ray executor later, behind one interface."""

from openmaas.training.executors.base import Executor
from openmaas.training.executors.local import LocalProcessExecutor

__all__ = ["Executor", "LocalProcessExecutor"]
