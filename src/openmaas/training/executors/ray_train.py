"""Launches each job attempt on a Ray cluster: a Ray task (no CPU of its own) drives a Ray Train `TorchTrainer`
whose workers run the same attempt as a local worker process (training/worker.py `run_attempt`), reading the
job from the shared database and its data and checkpoints from the shared artifact store. With `num_workers`
above 1 the workers train data-parallel (training/parallel.py) over the process group Ray Train sets up: gloo
on CPUs, NCCL when each worker has a GPU.

Ray Train restarts a killed worker (`max_failures`), and the attempt resumes from the job's last checkpoint.
A cancelled attempt's worker sees the cancel request in the store within a second and ends cleanly, and its
trainer gives back its resources; one that has not ended after `CANCEL_GRACE_S` (a shutdown, which is no
request in the store) is cancelled by force: Ray ends the trainer and its workers with the task that owns them,
though their placement group is only freed when this API process leaves the cluster.

A job whose workers the cluster has no room for stays queued, with that reason on the job, for up to
`placement_timeout_s` (`waiting_reason`, from the free resources Ray reports); then its attempt starts anyway,
and ends after another `placement_timeout_s` if the workers still cannot be placed, so the scheduler queues the
job again with that reason (and fails it after its attempts) instead of waiting forever.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from openmaas.training.executors.launcher import AttemptExit

log = logging.getLogger(__name__)

CANCELLED_CODE = -15  # as a local worker ended by SIGTERM
UNPLACED_CODE = 75  # EX_TEMPFAIL: the cluster had no room for the workers
WORKER_RESTARTS = 1
CANCEL_GRACE_S = 10.0
FREE_RESOURCES_TTL_S = 1.0  # how long one look at the cluster's free resources answers for


def train_one_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker: the attempt of training/worker.py, with the settings the API process forwarded."""
    from openmaas.config import Settings
    from openmaas.training import worker
    from openmaas.training.parallel import DataParallel

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    context = ray.train.get_context()
    world = context.get_world_size()
    parallel = DataParallel(context.get_world_rank(), world) if world > 1 else None
    if worker.run_attempt(config["job_id"], Settings(), on_sigterm=False, parallel=parallel) != 0:
        log.info("job %s failed; its reason is recorded", config["job_id"])


def worker_resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus > 0 else {"CPU": cpus}


def placeable(num_workers: int, resources: dict[str, float], timeout_s: float) -> bool:
    """Whether the cluster has room for the workers now: Ray Train itself waits for resources forever, so the
    attempt reserves them first (released at once, for the trainer to take) and gives up after `timeout_s`."""
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([resources] * num_workers, strategy="PACK")
    try:
        ready, _ = ray.wait([group.ready()], timeout=timeout_s)
        return bool(ready)
    finally:
        remove_placement_group(group)


def run_trainer(
    job_id: str, num_workers: int, resources: dict[str, float], storage: str, placement_timeout_s: float
) -> int:
    """The attempt's driver, run as a Ray task: fit the trainer; 0 once it ended (the outcome is in the store)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not placeable(num_workers, resources, placement_timeout_s):
        return UNPLACED_CODE

    trainer = TorchTrainer(
        train_one_worker,
        train_loop_config={"job_id": job_id},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=resources.get("GPU", 0) > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"openmaas-{job_id}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=WORKER_RESTARTS),
        ),
    )
    trainer.fit()
    return 0


class RayTrainLauncher:
    def __init__(
        self,
        *,
        workers_of: Callable[[str], int],
        cpus_per_worker: float,
        placement_timeout_s: float,
        gpus_per_worker: float = 0.0,
    ) -> None:
        self.workers_of = workers_of  # a job's `num_workers` hyperparameter, read from the store
        self.resources = worker_resources(cpus_per_worker, gpus_per_worker)
        self.placement_timeout_s = placement_timeout_s
        self.attempts: dict[str, ray.ObjectRef[int]] = {}
        self.requests: dict[str, str] = {}
        self.cancel_by: dict[str, float] = {}  # job id -> when a cancelled attempt is cancelled by force
        self.storage = str(Path(tempfile.gettempdir()) / "openmaas-ray-train")
        self.waiting_since: dict[str, float] = {}  # job id -> when it was first found with no room
        self._free: tuple[float, dict[str, float]] = (float("-inf"), {})

    def free_resources(self) -> dict[str, float]:
        looked, free = self._free
        if time.monotonic() - looked > FREE_RESOURCES_TTL_S:
            free = {name: float(amount) for name, amount in ray.available_resources().items()}
            self._free = (time.monotonic(), free)
        return free

    def waiting_reason(self, job_id: str) -> str | None:
        num_workers = self.workers_of(job_id)
        free = self.free_resources()
        if all(free.get(name, 0.0) + 1e-9 >= amount * num_workers for name, amount in self.resources.items()):
            self.waiting_since.pop(job_id, None)
            return None
        first = self.waiting_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - first > self.placement_timeout_s:
            del self.waiting_since[job_id]  # the attempt starts, and tries to place its workers once more
            return None
        each = " + ".join(f"{amount:g} {name}" for name, amount in self.resources.items())
        return (
            f"waiting for resources: the cluster has no room for {num_workers} worker(s) × {each} now; "
            f"the job starts once it has, or tries after {self.placement_timeout_s:g}s"
        )

    def start(self, job_id: str) -> None:
        self.waiting_since.pop(job_id, None)
        num_workers = self.workers_of(job_id)
        task = ray.remote(run_trainer).options(
            num_cpus=0,
            max_retries=0,  # a retry is the scheduler's call, from the store
            name=f"openmaas-job-{job_id}",
        )
        self.attempts[job_id] = task.remote(
            job_id, num_workers, self.resources, self.storage, self.placement_timeout_s
        )
        each = " + ".join(f"{amount:g} {name}" for name, amount in self.resources.items())
        self.requests[job_id] = f"{num_workers} worker(s) × {each}"
        log.info("job %s started on the Ray cluster (%s)", job_id, self.requests[job_id])

    def poll(self, job_id: str) -> AttemptExit | None:
        ref = self.attempts[job_id]
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            if time.monotonic() > self.cancel_by.get(job_id, float("inf")):
                self.kill(job_id)
            return None
        return self._ended(job_id, ref)

    def wait(self, job_id: str, timeout: float) -> AttemptExit | None:
        ref = self.attempts.get(job_id)
        if ref is None:
            return None
        ready, _ = ray.wait([ref], timeout=timeout)
        return self._ended(job_id, ref) if ready else None

    def _ended(self, job_id: str, ref: ray.ObjectRef[int]) -> AttemptExit:
        del self.attempts[job_id]
        self.cancel_by.pop(job_id, None)
        wanted = self.requests.pop(job_id, "")
        try:
            code = int(ray.get(ref))
        except ray.exceptions.TaskCancelledError:
            return AttemptExit(CANCELLED_CODE, "the attempt was cancelled on the Ray cluster")
        except ray.exceptions.RayError as error:
            log.error("job %s: its Ray attempt failed: %s", job_id, error)
            return AttemptExit(1, f"the Ray attempt failed: {type(error).__name__}")
        if code == UNPLACED_CODE:
            return AttemptExit(
                code,
                f"waiting for resources: the cluster could not place {wanted} within {self.placement_timeout_s:g}s",
            )
        return AttemptExit(code)

    def cancel(self, job_id: str) -> None:
        # A user's cancel is in the store, where the worker looks every second; `poll` forces it after the grace.
        if job_id in self.attempts:
            self.cancel_by.setdefault(job_id, time.monotonic() + CANCEL_GRACE_S)

    def kill(self, job_id: str) -> None:
        # The trainer's controller and workers are owned by the task and end with it; the job's checkpoints are
        # kept, and the scheduler records a user's cancel or queues the job again.
        ref = self.attempts.get(job_id)
        if ref is not None:
            ray.cancel(ref, force=True, recursive=True)

    def describe_exit(self, exit: AttemptExit) -> str:
        return exit.detail or f"the Ray attempt ended with code {exit.code} before reporting a result"
