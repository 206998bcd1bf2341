"""Executors run queued jobs: one scheduler (training/executors/scheduler.py) over a launcher that starts the
attempts (local worker processes now, Ray later), behind one Executor interface."""

from openmaas.training.executors.base import Executor
from openmaas.training.executors.launcher import AttemptExit, Launcher
from openmaas.training.executors.local import LocalProcessLauncher
from openmaas.training.executors.owners import default_node
from openmaas.training.executors.scheduler import JobScheduler

__all__ = ["AttemptExit", "Executor", "JobScheduler", "Launcher", "LocalProcessLauncher", "default_node"]
