"""Data-parallel training (training/parallel.py) over a real gloo process group on loopback: two workers each
training one batch of a step take the step one worker takes on both batches at once, and stay identical."""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from openmaas.recipes import get_recipe
from openmaas.training import loop, worker
from openmaas.training.parallel import DataParallel
from tests.conftest import free_port
from tests.fault.test_resume import SMS


def sms_rows(count: int) -> list[dict[str, str]]:
    with SMS.open(encoding="utf-8") as handle:
        rows = itertools.islice(csv.DictReader(handle), count)
        return [{"text": row["text"], "label": row["label"]} for row in rows]


def train(rank: int, world: int, batch_size: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    recipe = get_recipe("bow-mlp")
    hp = recipe.hyperparameters(epochs=3, batch_size=batch_size, seed=7, log_every_steps=0)
    prepared = worker.prepare_classification(recipe, hp, "cpu", sms_rows(300))
    parallel = DataParallel(rank, world) if world > 1 else None
    result = loop.run(prepared.plan, hp, emit=lambda *_: None, should_stop=lambda: False, parallel=parallel)
    torch.save(
        {"weights": prepared.plan.trainable_state(), "final": result.final, "steps": result.steps},
        out / f"{world}-{rank}.pt",
    )
    if world > 1:
        dist.destroy_process_group()


def test_two_workers_take_the_steps_of_one_worker_with_batches_twice_as_large(tmp_path: Path) -> None:
    train(0, 1, 8, 0, tmp_path)  # one worker, batches of 8
    mp.spawn(train, args=(2, 4, free_port(), tmp_path), nprocs=2)  # two workers, 4 rows each a step
    one = torch.load(tmp_path / "1-0.pt", weights_only=True)
    first, second = (torch.load(tmp_path / f"2-{rank}.pt", weights_only=True) for rank in (0, 1))
    for name, weight in one["weights"].items():
        assert torch.equal(first["weights"][name], second["weights"][name]), name  # the workers never drift
        assert torch.allclose(first["weights"][name], weight, atol=1e-5), name  # the same steps, summed apart
    assert first["steps"] == one["steps"]
    # Every worker's epoch counters are everyone's: the same training loss and accuracy as one worker's.
    assert abs(first["final"]["train_loss"] - one["final"]["train_loss"]) < 1e-5
    assert first["final"]["train_accuracy"] == one["final"]["train_accuracy"] == second["final"]["train_accuracy"]
    assert first["final"]["val_accuracy"] == one["final"]["val_accuracy"]
