"""Training checkpoints: trainable weights, optimizer state, RNG states and the loop's position, in the artifact store.

A checkpoint is four blobs (`weights.safetensors`, `optimizer.safetensors`, `rng.safetensors`, `state.json`) in
the job's own scope of the artifact store, and a reference `step-00000123` naming them with a summary for
listings. The blobs are written first and the reference last, each atomically, so a crash leaves either the
whole checkpoint or none; on S3 a job can resume on another machine. Only tensors and JSON are stored: nothing
is ever unpickled.
"""

from __future__ import annotations

import builtins
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.storage.artifacts import ArtifactCorrupted, ArtifactStore

if TYPE_CHECKING:  # torch loads only in the processes that train: the API server lists checkpoints without it
    import torch


@dataclass
class LoopState:
    """Where the loop is: enough to continue exactly as if it had never stopped."""

    epoch: int = 1  # the epoch in progress (1-based)
    step_in_epoch: int = 0  # batches of that epoch already done
    global_step: int = 0
    loss_sum: float = 0.0  # the running sums of the epoch in progress
    correct: int = 0
    count: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    best_val_loss: float | None = None
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Checkpoint:
    name: str
    state: LoopState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    epoch_generator: torch.Tensor  # the data-order generator as it was when the epoch began
    torch_rng: torch.Tensor


@dataclass
class CheckpointInfo:
    """What a listing shows of a checkpoint, read from its reference alone."""

    name: str
    step: int
    epoch: int
    metrics: dict[str, Any]
    created_at: float


def _optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for param_id, values in state_dict["state"].items():
        entry = layout["state"][str(param_id)] = {}
        for name, value in values.items():
            if torch.is_tensor(value):
                key = f"{param_id}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                entry[name] = {"tensor": key}
            else:
                entry[name] = {"value": value}
    return tensors, layout


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state = {
        int(param_id): {
            name: tensors[spec["tensor"]] if "tensor" in spec else spec["value"] for name, spec in values.items()
        }
        for param_id, values in layout["state"].items()
    }
    return {"state": state, "param_groups": layout["param_groups"]}


class CheckpointStore:
    """Each job's checkpoints in `root.scope(job_id)`; the newest `keep` are kept."""

    def __init__(self, root: ArtifactStore, keep: int = 3) -> None:
        self.root = root
        self.keep = keep

    def _job(self, job_id: str) -> ArtifactStore:
        return self.root.scope(job_id)

    def names(self, job_id: str) -> list[str]:
        return [name for name in self._job(job_id).list_refs() if name.startswith("step-")]

    def list(self, job_id: str) -> list[CheckpointInfo]:
        """The job's checkpoints, oldest first; one pruned or unreadable while we looked is left out."""
        store, out = self._job(job_id), []
        for name in self.names(job_id):
            try:
                ref = store.read_ref(name)
            except ArtifactCorrupted:
                continue
            if ref is not None:
                out.append(CheckpointInfo(name, ref["step"], ref["epoch"], ref["metrics"], ref["created_at"]))
        return out

    def save(
        self,
        job_id: str,
        state: LoopState,
        weights: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        epoch_generator: torch.Tensor,
    ) -> str:
        import torch
        from safetensors.torch import save_file

        store = self._job(job_id)
        name = f"step-{state.global_step:09d}"
        with tempfile.TemporaryDirectory(dir=store.scratch, prefix="checkpoint-") as scratch:
            directory = Path(scratch)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(directory / "weights.safetensors")
            )
            optimizer_tensors, layout = _optimizer_to_tensors(optimizer)
            save_file(optimizer_tensors, str(directory / "optimizer.safetensors"))
            save_file(
                {"epoch_generator": epoch_generator.contiguous(), "torch": torch.get_rng_state().contiguous()},
                str(directory / "rng.safetensors"),
            )
            (directory / "state.json").write_text(json.dumps({"loop": asdict(state), "optimizer": layout}))
            files = store.put_directory(directory)
        last = state.history[-1] if state.history else {}
        store.put_ref(
            name,
            {
                "files": files,
                "step": state.global_step,
                "epoch": state.epoch,
                "metrics": last,
                "created_at": time.time(),
            },
        )
        self._prune(store, self.names(job_id)[: -self.keep])
        return name

    @staticmethod
    def _prune(store: ArtifactStore, old: builtins.list[str]) -> None:
        """Drop old references first, then the blobs no remaining checkpoint names: a crash in between leaves
        unreferenced blobs, never a checkpoint with a blob missing."""
        if not old:
            return
        for name in old:
            store.delete_ref(name)
        kept: set[str] = set()
        for name in store.list_refs():
            try:
                ref = store.read_ref(name)
            except ArtifactCorrupted:
                continue
            kept.update((ref or {}).get("files", {}).values())
        for sha256 in store.list_blobs():
            if sha256 not in kept:
                store.delete(sha256)

    def latest(self, job_id: str) -> Checkpoint | None:
        """The newest complete checkpoint; an unreadable one is skipped in favour of the one before."""
        for name in reversed(self.names(job_id)):
            try:
                return self.load(job_id, name)
            except (ArtifactCorrupted, OSError, ValueError, KeyError):
                continue
        return None

    def load(self, job_id: str, name: str) -> Checkpoint:
        from safetensors.torch import load_file

        store = self._job(job_id)
        ref = store.read_ref(name)
        if ref is None:
            raise KeyError(f"no checkpoint {name} for job {job_id}")
        files = ref["files"]
        meta = json.loads(store.read_bytes(files["state.json"]))
        rng = load_file(str(store.local_file(files["rng.safetensors"])))
        return Checkpoint(
            name=name,
            state=LoopState(**meta["loop"]),
            weights=load_file(str(store.local_file(files["weights.safetensors"]))),
            optimizer=_optimizer_from_tensors(
                load_file(str(store.local_file(files["optimizer.safetensors"]))), meta["optimizer"]
            ),
            epoch_generator=rng["epoch_generator"],
            torch_rng=rng["torch"],
        )

    def remove(self, job_id: str) -> None:
        store = self._job(job_id)
        for name in store.list_refs():
            store.delete_ref(name)
        for sha256 in store.list_blobs():
            store.delete(sha256)
