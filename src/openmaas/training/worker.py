"""The worker process: runs one training job end to end and records its outcome in the metadata store.

It runs apart from the API process (`python -m openmaas.training.worker JOB_ID`) so that a crash or an
out-of-memory kill takes down only this job.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openmaas.config import Settings
from openmaas.domain.entities import Dataset, Job
from openmaas.domain.jobs import JobFailure, JobStatus
from openmaas.domain.refs import ModelRef
from openmaas.failpoints import failpoint
from openmaas.lines import split_lines
from openmaas.recipes import get_recipe
from openmaas.recipes.base import (
    Document,
    Examples,
    ImageExamples,
    ImageRecipe,
    PinnedBase,
    Recipe,
    TextRecipe,
    TrainingPlan,
    resolve_device,
)
from openmaas.recipes.gguf import gguf_in
from openmaas.storage.artifacts import ArtifactStore, manifest_sha256, open_artifact_store
from openmaas.storage.metadata import MetadataStore, open_store
from openmaas.storage.metadata.leases import AttemptClaim
from openmaas.training import loop
from openmaas.training.checkpoints import CheckpointStore, LoopState
from openmaas.training.parallel import DataParallel

PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class _StopFlag:
    """Checked by the loop at every step boundary: set by SIGTERM, by a cancel recorded in the store, or when
    the job is no longer this attempt's (`lost`: its lease was taken over, and another process may run it).

    The store is polled at most once a second, so a cancel reaches the job even when no signal can
    (the job started between the cancel and the signal, or runs on another machine).
    """

    POLL_SECONDS = 1.0

    def __init__(
        self, store: MetadataStore, job_id: str, claim: AttemptClaim | None, *, on_sigterm: bool = True
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.claim = claim  # every outcome this attempt writes holds only while the job is still its own
        self.set = False
        self.lost = False
        self.checked = time.monotonic()
        if on_sigterm:  # a Ray Train worker runs this off its main thread, where no handler can be set
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.set = True

    def __call__(self) -> bool:
        if not self.set and time.monotonic() - self.checked > self.POLL_SECONDS:
            self.checked = time.monotonic()
            if self.claim is None:
                self.set = self.store.jobs.cancel_requested(self.job_id)
            else:
                held, cancel = self.store.leases.still_held(self.claim)
                self.lost = not held
                self.set = cancel or self.lost
        return self.set


def load_rows(artifacts: ArtifactStore, sha256: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in split_lines(artifacts.read_bytes(sha256).decode("utf-8"))]


def die_with_parent() -> None:
    """Ask Linux to kill this worker when the server process dies, so a restarted server never finds a
    job being trained twice."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() == 1:  # the parent already died before the request took effect
        os._exit(1)


@dataclass
class Prepared:
    """A plan ready for the loop, and what the job's events and version say about its data."""

    plan: TrainingPlan
    started: dict[str, Any]
    labels: list[str]
    train_rows: int
    validation_rows: int
    note: str | None
    rate_name: str = "samples_per_second"


def held_out_split(rows: int, held_out: int) -> tuple[list[int], list[int], str | None]:
    """The split when a validation dataset was given: its rows follow the training rows."""
    return list(range(rows)), list(range(rows, rows + held_out)), None


def prepare_classification(
    recipe: Recipe, hp: Any, device: str, rows: list[dict[str, Any]], held_out: list[dict[str, Any]] | None = None
) -> Prepared:
    from openmaas.data.splitting import stratified_split

    all_rows = rows + (held_out or [])
    texts, labels = [row["text"] for row in all_rows], [row["label"] for row in all_rows]
    label_names = sorted(set(labels))
    targets = [label_names.index(label) for label in labels]
    if held_out is not None:
        train_idx, val_idx, note = held_out_split(len(rows), len(held_out))
    else:
        train_idx, val_idx, note = stratified_split(labels, hp.validation_split, hp.seed)

    def pick(indices: list[int]) -> Examples:
        return Examples([texts[i] for i in indices], [targets[i] for i in indices])

    loop.seed_everything(hp.seed)
    plan = recipe.plan(pick(train_idx), pick(val_idx), label_names, hp, device)
    started = {"train_rows": len(train_idx), "validation_rows": len(val_idx), "labels": label_names}
    return Prepared(plan, started, label_names, len(train_idx), len(val_idx), note)


def prepare_images(recipe: ImageRecipe, hp: Any, device: str, blob: Path, base: Path | None = None) -> Prepared:
    from openmaas.data.image_tensors import load_image_dataset
    from openmaas.data.splitting import stratified_split

    stored = load_image_dataset(blob)
    label_names = sorted(set(stored.labels))
    targets = [label_names.index(label) for label in stored.labels]
    train_idx, val_idx, note = stratified_split(stored.labels, hp.validation_split, hp.seed)

    def pick(indices: list[int]) -> ImageExamples:
        return ImageExamples([stored.images[i] for i in indices], [targets[i] for i in indices])

    loop.seed_everything(hp.seed)
    plan = recipe.plan(pick(train_idx), pick(val_idx), label_names, hp, device, base=base)
    started = {"train_rows": len(train_idx), "validation_rows": len(val_idx), "labels": label_names}
    return Prepared(plan, started, label_names, len(train_idx), len(val_idx), note)


def materialize_base(
    store: MetadataStore, artifacts: ArtifactStore, job: Job, hp: Any, scratch: Path
) -> tuple[Path, PinnedBase]:
    """Lay out the exact base version the job was created with, looked up as the job's tenant sees it now: one
    deleted, remade, or no longer shared since is refused."""
    pin = hp.pinned_base
    if pin is None:
        raise JobFailure("the job has no pinned base model (it was not created through the job service)")
    version = store.models.resolve(job.tenant_id, ModelRef(pin.model, version=pin.version, owner=pin.owner))
    if version is None or version.artifact_sha256 != pin.artifact_sha256:
        raise JobFailure(
            f"base model {pin.owner}/{pin.model}:{pin.version} was deleted or stopped being shared after the job "
            "was created"
        )
    base = artifacts.materialize(version.files, scratch / "base")
    gguf_file = gguf_in(base)
    if gguf_file is not None:  # a GGUF version (served by an engine): training needs its float32 torch form
        from openmaas.recipes.foundation import convert_gguf

        convert_gguf(gguf_file, scratch / "base-torch")
        base = scratch / "base-torch"
    return base, pin


def prepare_text(
    recipe: TextRecipe,
    hp: Any,
    device: str,
    rows: list[dict[str, Any]],
    base: Path | None,
    held_out: list[dict[str, Any]] | None = None,
) -> Prepared:
    from openmaas.data.splitting import random_split

    all_rows = rows + (held_out or [])
    documents: list[Document] = [row["messages"] if "messages" in row else row["text"] for row in all_rows]
    if held_out is not None:
        train_idx, val_idx, note = held_out_split(len(rows), len(held_out))
    else:
        train_idx, val_idx, note = random_split(len(documents), hp.validation_split, hp.seed)
    loop.seed_everything(hp.seed)
    plan = recipe.plan([documents[i] for i in train_idx], [documents[i] for i in val_idx], hp, device, base)
    started: dict[str, Any] = {"train_rows": len(train_idx), "validation_rows": len(val_idx)}
    # A language model's step counts the tokens it predicts, so its rate is tokens per second.
    return Prepared(plan, started, [], len(train_idx), len(val_idx), note, rate_name="tokens_per_second")


def train(
    store: MetadataStore,
    artifacts: ArtifactStore,
    checkpoints: CheckpointStore,
    job_id: str,
    stop: _StopFlag,
    meter: AttemptMeter | None,
    progress_every_s: float | None = None,
    parallel: DataParallel | None = None,
) -> None:
    job = store.jobs.get(None, job_id)
    if job is None or job.status is not JobStatus.RUNNING:
        log.warning("job %s is not running; nothing to do", job_id)
        return
    dataset = store.datasets.get(job.tenant_id, job.dataset_id)
    if dataset is None:
        raise JobFailure(f"dataset {job.dataset_id} was deleted before the job started")
    recipe = get_recipe(job.recipe)
    if dataset.kind != recipe.dataset_kind:
        raise JobFailure(f"recipe {job.recipe} trains on {recipe.dataset_kind} datasets, not {dataset.kind} ones")
    hp = recipe.hyperparameters(**job.hyperparameters)
    try:
        device = resolve_device(hp.device)
    except ValueError as error:  # cuda asked for on a machine without a GPU
        raise JobFailure(str(error)) from None
    # The scratch directory holds a base model's files for as long as training and export need them.
    with tempfile.TemporaryDirectory(dir=artifacts.scratch) as scratch:
        if recipe.dataset_kind == "image":
            image_base, lineage = None, None
            if getattr(hp, "pinned_base", None) is not None:  # a registry base (a shipped one needs none)
                image_base, lineage = materialize_base(store, artifacts, job, hp, Path(scratch))
            prepared = prepare_images(recipe, hp, device, artifacts.local_file(dataset.sha256), image_base)
            if lineage is not None:
                prepared.started["base_model"] = f"{lineage.model}:{lineage.version}"
            run_and_register(
                store, artifacts, checkpoints, job, dataset, hp, device, prepared, stop, meter, progress_every_s,
                parallel,
            )
            return
        rows = load_rows(artifacts, dataset.sha256)
        held_out = None
        if hp.validation_dataset_id is not None:
            validation = store.datasets.get(job.tenant_id, hp.validation_dataset_id)
            if validation is None:
                raise JobFailure(f"validation dataset {hp.validation_dataset_id} was deleted before the job started")
            held_out = load_rows(artifacts, validation.sha256)
        if recipe.dataset_kind == "text":
            base, lineage = None, None
            if recipe.base_task is not None:
                base, lineage = materialize_base(store, artifacts, job, hp, Path(scratch))
            prepared = prepare_text(recipe, hp, device, rows, base, held_out)
            if lineage is not None:
                prepared.started["base_model"] = f"{lineage.model}:{lineage.version}"
        else:
            prepared = prepare_classification(recipe, hp, device, rows, held_out)
        run_and_register(
            store, artifacts, checkpoints, job, dataset, hp, device, prepared, stop, meter, progress_every_s, parallel
        )


def run_and_register(
    store: MetadataStore,
    artifacts: ArtifactStore,
    checkpoints: CheckpointStore,
    job: Job,
    dataset: Dataset,
    hp: Any,
    device: str,
    prepared: Prepared,
    stop: _StopFlag,
    meter: AttemptMeter | None,
    progress_every_s: float | None = None,
    parallel: DataParallel | None = None,
) -> None:
    """Train the prepared plan, then export and register its model. A data-parallel worker other than the
    leader trains its share and writes nothing: events, checkpoints and the version are the leader's."""
    job_id, plan, note = job.id, prepared.plan, prepared.note
    follower = parallel is not None and not parallel.leader

    def emit(type_: str, data: dict[str, Any]) -> None:
        if not follower:
            store.jobs.add_event(job_id, type_, data)

    resume = checkpoints.latest(job_id)
    started = {**prepared.started, "device": device, "threads": torch.get_num_threads()}
    if parallel is not None:
        started["workers"] = parallel.world
    if note:
        started["note"] = note
    if resume is None:
        emit("started", started)
    else:
        emit(
            "resumed",
            {
                **started,
                "step": resume.state.global_step,
                "epoch": resume.state.epoch,
                "attempt": job.attempts,
                "checkpoint": resume.name,
            },
        )

    def save(state: LoopState, epoch_generator: torch.Tensor) -> None:
        if follower:  # the leader's weights are the same
            return
        name = checkpoints.save(job_id, state, plan.trainable_state(), plan.optimizer.state_dict(), epoch_generator)
        if meter is not None:
            meter.update()  # a killed attempt is metered at least up to the checkpoint it resumes from
        last = state.history[-1] if state.history else {}
        emit(
            "checkpoint",
            {
                "step": state.global_step,
                "epoch": state.epoch,
                "name": name,
                "train_loss": last.get("train_loss"),
                "val_loss": last.get("val_loss"),
            },
        )
        failpoint("after_checkpoint")

    began = time.perf_counter()
    result = loop.run(
        plan,
        hp,
        emit=emit,
        should_stop=stop,
        save_checkpoint=save,
        resume=resume,
        progress_every_s=progress_every_s,
        rate_name=prepared.rate_name,
        parallel=parallel,
    )
    if follower:
        return
    metrics: dict[str, Any] = {
        **{k: v for k, v in result.final.items() if k != "epoch"},
        "epochs": result.epochs,
        "steps": result.steps,
        "stopped_reason": result.stopped_reason,
        "train_seconds": time.perf_counter() - began,
        prepared.rate_name: result.rate,
        "history": result.history,
        "train_rows": prepared.train_rows,
        "validation_rows": prepared.validation_rows,
    }
    if note:
        metrics["note"] = note
    if parallel is not None:
        metrics["workers"] = parallel.world
    base_spec = {
        "tenant_id": job.tenant_id,
        "model": job.model,
        "recipe": job.recipe,
        "labels": prepared.labels,
        "hyperparameters": hp.model_dump(),
        "dataset_id": dataset.id,
        "dataset_sha256": dataset.sha256,
        "job_id": job_id,
    }
    if store.fine_tunes.get(job.tenant_id, job_id) is not None:
        register_checkpoints(store, artifacts, checkpoints, job, plan, result.steps, base_spec)
    with tempfile.TemporaryDirectory(dir=artifacts.scratch) as out:
        info = plan.export(Path(out))
        files = artifacts.put_directory(Path(out))
    metrics.update(info.metrics)
    failpoint("before_register")
    version = store.jobs.succeed_and_register(
        job_id,
        metrics,
        {
            "tenant_id": job.tenant_id,
            "model": job.model,
            "task": info.task,
            "recipe": job.recipe,
            "runtime": info.runtime,
            "labels": prepared.labels,
            "metrics": metrics,
            "hyperparameters": hp.model_dump(),
            "dataset_id": dataset.id,
            "dataset_sha256": dataset.sha256,
            "job_id": job_id,
            "parameter_count": info.parameter_count,
            "artifact_sha256": manifest_sha256(files),
            "files": files,
        },
        claim=stop.claim,
    )
    emit("succeeded", {"model": job.model, "version": version.version, "stopped_reason": result.stopped_reason})


def register_checkpoints(
    store: MetadataStore,
    artifacts: ArtifactStore,
    checkpoints: CheckpointStore,
    job: Job,
    plan: TrainingPlan,
    final_step: int,
    spec: dict[str, Any],
) -> None:
    """Register each kept checkpoint before the last as a version of the job's model (its metrics name the step),
    so that an OpenAI fine-tune's `fine_tuned_model_checkpoint` is a model inference accepts; the final state is
    the job's own version. A step registered by an earlier attempt is not registered again."""
    model = store.models.get(job.tenant_id, job.model)
    done = {v.metrics.get("checkpoint_step") for v in (model.versions if model is not None else ())}
    final = {name: tensor.detach().clone() for name, tensor in plan.trainable_state().items()}
    for info in checkpoints.list(job.id):
        if info.step >= final_step or info.step in done:
            continue
        plan.load_trainable_state(checkpoints.load(job.id, info.name).weights)
        with tempfile.TemporaryDirectory(dir=artifacts.scratch) as out:
            exported = plan.export(Path(out))
            files = artifacts.put_directory(Path(out))
        metrics = {**info.metrics, "checkpoint_step": info.step, "epoch": info.epoch}
        store.models.register_version(
            {
                **spec,
                "task": exported.task,
                "runtime": exported.runtime,
                "metrics": metrics,
                "parameter_count": exported.parameter_count,
                "artifact_sha256": manifest_sha256(files),
                "files": files,
            }
        )
    plan.load_trainable_state(final)


class AttemptMeter:
    """Meters this attempt's compute time in its one usage record, as it runs: every `EVERY_SECONDS` (from a
    thread, so a long step or a base model's loading is counted too), at each checkpoint, and at the end.

    Each update writes the attempt's total so far into the same record, so an attempt killed with the
    server (or by the OOM killer) is metered up to its last update, and nothing is ever counted twice: no
    one else writes the record, and a later update replaces the earlier total instead of adding to it."""

    EVERY_SECONDS = 5.0

    def __init__(self, store: MetadataStore, job_id: str) -> None:
        self.store = store
        self.began = time.perf_counter()
        job = store.jobs.get(None, job_id)
        self.record = store.jobs.open_attempt_usage(job) if job is not None else None
        self.job_id = job_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attempt-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.EVERY_SECONDS):
            try:
                self.update()
            except Exception:  # the next update, or the last one, writes the total
                log.exception("metering job %s failed; will retry", self.job_id)

    def update(self, version: int | None = None) -> None:
        if self.record is not None:
            self.store.jobs.meter_attempt(self.record, time.perf_counter() - self.began, version)

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        job = self.store.jobs.get(None, self.job_id)
        self.update(job.model_version if job is not None else None)


def failure_reason(error: Exception, data_dir: Path) -> str:
    """What the job's owner reads: our own failures' messages; for anything else only the exception's type,
    since its message may carry server paths (the traceback goes to the job log)."""
    if isinstance(error, JobFailure):
        reason = str(error)
    else:
        reason = f"internal error in the worker (see the job log): {type(error).__name__}"
    # A message of ours may still quote a path by mistake: the data directory never leaves the server.
    return reason.replace(str(data_dir.resolve()), "<data dir>").replace(str(data_dir), "<data dir>")


def main(job_id: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    return run_attempt(job_id, Settings())


def run_attempt(
    job_id: str, settings: Settings, *, on_sigterm: bool = True, parallel: DataParallel | None = None
) -> int:
    """One attempt of the job, its outcome recorded in the store: 0 when it ended as the store says, 1 when it
    failed. The local launcher runs it in its own process (`main`), the Ray launcher in each Ray Train worker
    (`parallel` when there are several: the leader records the outcome, the others only a failure of theirs)."""
    store = open_store(settings.resolved_database_url, run_migrations=False, pooled=False)
    claim = store.leases.attempt_claim(job_id)
    stop = _StopFlag(store, job_id, claim, on_sigterm=on_sigterm)
    # The same stores as the server's, built from the same settings: on S3 the job may run on another machine.
    artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir, settings.artifacts_cache_dir)
    checkpoints = CheckpointStore(artifacts.scope("checkpoints"), keep=settings.checkpoints_kept)
    follower = parallel is not None and not parallel.leader
    meter = None if follower else AttemptMeter(store, job_id)
    try:
        train(store, artifacts, checkpoints, job_id, stop, meter, settings.progress_every_s, parallel)
    except loop.Cancelled:
        if follower:
            return 0  # every worker stopped at the same step; the leader records why
        if stop.lost:
            log.warning("job %s is no longer this attempt's (its lease was taken over); stopped", job_id)
        elif store.jobs.cancel_requested(job_id):
            if store.jobs.transition(job_id, JobStatus.CANCELLED, claim=claim, reason="cancelled by the user"):
                store.jobs.add_event(job_id, "cancelled", {})
        else:
            reason = "interrupted: the server shut down; the job resumes from its last checkpoint"
            if store.jobs.requeue_interrupted(job_id, reason, claim=claim):
                store.jobs.add_event(job_id, "interrupted", {"reason": reason})
    except Exception as error:  # the job fails with the reason; the worker itself ends cleanly
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        reason = failure_reason(error, settings.data_dir)
        if store.jobs.transition(job_id, JobStatus.FAILED, claim=claim, reason=reason):
            store.jobs.add_event(job_id, "failed", {"reason": reason})
        if follower:
            raise  # the other workers wait for this one in an all-reduce: Ray Train ends them with it
        return 1
    finally:
        if meter is not None:
            meter.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
