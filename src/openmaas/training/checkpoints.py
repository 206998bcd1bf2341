"""Training checkpoints: trainable weights, optimizer state, RNG states and the loop's position, on disk.

A checkpoint is a directory `step-00000123/` with `weights.safetensors`, `optimizer.safetensors`,
`rng.safetensors` and `state.json`. It is written under a temporary name, fsynced and renamed, so a crash
leaves either the whole checkpoint or none. Only tensors and JSON are stored: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    path: Path
    state: LoopState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    epoch_generator: torch.Tensor  # the data-order generator as it was when the epoch began
    torch_rng: torch.Tensor


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep

    def directory(self, job_id: str) -> Path:
        return self.root / job_id

    def list(self, job_id: str) -> list[Path]:
        directory = self.directory(job_id)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def save(
        self,
        job_id: str,
        state: LoopState,
        weights: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        epoch_generator: torch.Tensor,
    ) -> Path:
        import torch
        from safetensors.torch import save_file

        directory = self.directory(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"step-{state.global_step:09d}"
        scratch = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))
        try:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(scratch / "weights.safetensors")
            )
            optimizer_tensors, layout = _optimizer_to_tensors(optimizer)
            save_file(optimizer_tensors, str(scratch / "optimizer.safetensors"))
            save_file(
                {"epoch_generator": epoch_generator.contiguous(), "torch": torch.get_rng_state().contiguous()},
                str(scratch / "rng.safetensors"),
            )
            (scratch / "state.json").write_text(json.dumps({"loop": asdict(state), "optimizer": layout}))
            _fsync_tree(scratch)
            if final.exists():
                shutil.rmtree(final)
            os.replace(scratch, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for old in self.list(job_id)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self, job_id: str) -> Checkpoint | None:
        """The newest complete checkpoint; an unreadable one is skipped in favour of the one before."""
        for path in reversed(self.list(job_id)):
            try:
                return self.load(path)
            except (OSError, ValueError, KeyError):
                continue
        return None

    @staticmethod
    def load(path: Path) -> Checkpoint:
        from safetensors.torch import load_file

        meta = json.loads((path / "state.json").read_text())
        rng = load_file(str(path / "rng.safetensors"))
        return Checkpoint(
            path=path,
            state=LoopState(**meta["loop"]),
            weights=load_file(str(path / "weights.safetensors")),
            optimizer=_optimizer_from_tensors(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]),
            epoch_generator=rng["epoch_generator"],
            torch_rng=rng["torch"],
        )

    @staticmethod
    def summary(path: Path) -> dict[str, Any]:
        loop = json.loads((path / "state.json").read_text())["loop"]
        last = loop["history"][-1] if loop["history"] else {}
        return {"step": loop["global_step"], "epoch": loop["epoch"], "metrics": last}

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.directory(job_id), ignore_errors=True)
