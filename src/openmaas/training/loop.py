"""The classic loop: forward → loss → backprop → step, per epoch, until a stopping rule fires."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from openmaas.recipes.base import CommonHyperparameters, TrainingPlan

EventSink = Callable[[str, dict[str, Any]], None]


class Cancelled(Exception):
    """The job was asked to stop; raised at the next step boundary."""


@dataclass
class LoopResult:
    epochs: int
    stopped_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)
    samples_per_second: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate(plan: TrainingPlan) -> tuple[float, float] | None:
    """Mean loss and accuracy on the validation split; None when there is none."""
    plan.model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for batch in plan.eval_batches():
            result = plan.step(batch)
            total += float(result.loss) * result.count
            correct += int(result.correct)
            count += result.count
    if count == 0:
        return None
    return total / count, correct / count


def run(
    plan: TrainingPlan,
    hp: CommonHyperparameters,
    *,
    emit: EventSink,
    should_stop: Callable[[], bool],
) -> LoopResult:
    generator = torch.Generator().manual_seed(hp.seed)
    history: list[dict[str, Any]] = []
    stopped_reason = "max_epochs"
    train_seconds, train_samples = 0.0, 0
    for epoch in range(1, hp.epochs + 1):
        plan.model.train()
        # Sums stay tensors during the epoch: reading a number back every step would cost a sync.
        total: Any = 0.0
        correct: Any = 0
        count = 0
        started = time.perf_counter()
        for batch in plan.train_batches(generator):
            if should_stop():
                raise Cancelled
            plan.optimizer.zero_grad(set_to_none=True)
            result = plan.step(batch)
            result.loss.backward()
            plan.optimizer.step()
            total = total + result.loss.detach() * result.count
            correct = correct + result.correct
            count += result.count
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        train_samples += count
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(total) / max(count, 1),
            "train_accuracy": int(correct) / max(count, 1),
            "samples_per_second": count / elapsed if elapsed > 0 else None,
        }
        validation = evaluate(plan)
        if validation is not None:
            record["val_loss"], record["val_accuracy"] = validation
        history.append(record)
        emit("epoch", record)
        if hp.loss_threshold is not None and record["train_loss"] <= hp.loss_threshold:
            stopped_reason = "loss_threshold"
            break
    return LoopResult(
        epochs=len(history),
        stopped_reason=stopped_reason,
        history=history,
        samples_per_second=train_samples / train_seconds if train_seconds > 0 else 0.0,
    )
