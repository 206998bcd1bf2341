"""The classic loop: forward → loss → backprop → step, until a stopping rule fires; checkpoints and resume.

Stopping rules: `epochs` (max_epochs), `max_steps`, `loss_threshold` on an epoch's training loss, and
`early_stopping_patience` on validation loss. A resumed run restores weights, optimizer, RNG state and the
position in the epoch's data order, so it ends with the same weights as a run that never stopped.

With `parallel` (training/parallel.py) the loop is one of several data-parallel workers: each step trains its
share of the step's batches, gradients and counters are summed across workers, and every worker takes the same
decisions (stop, checkpoint, early stopping) at the same step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from openmaas.recipes.base import CommonHyperparameters, TrainingPlan
from openmaas.training.checkpoints import Checkpoint, LoopState
from openmaas.training.parallel import DataParallel

EventSink = Callable[[str, dict[str, Any]], object]
SaveCheckpoint = Callable[[LoopState, torch.Tensor], None]


class Cancelled(Exception):
    """The job was asked to stop; raised at the next step boundary."""


@dataclass
class LoopResult:
    epochs: int
    steps: int
    stopped_reason: str
    history: list[dict[str, Any]]
    rate: float  # samples (or a language model's tokens) per second of training

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


def restore(plan: TrainingPlan, checkpoint: Checkpoint, generator: torch.Generator) -> LoopState:
    plan.load_trainable_state(checkpoint.weights)
    plan.optimizer.load_state_dict(checkpoint.optimizer)
    torch.set_rng_state(checkpoint.torch_rng)
    generator.set_state(checkpoint.epoch_generator)
    return replace(checkpoint.state, history=list(checkpoint.state.history))


def run(
    plan: TrainingPlan,
    hp: CommonHyperparameters,
    *,
    emit: EventSink,
    should_stop: Callable[[], bool],
    save_checkpoint: SaveCheckpoint | None = None,
    resume: Checkpoint | None = None,
    progress_every_s: float | None = None,
    rate_name: str = "samples_per_second",
    parallel: DataParallel | None = None,
) -> LoopResult:
    """Train until a stopping rule fires. A `step` event comes every `hp.log_every_steps` steps and, whatever
    that is, at the first step end `progress_every_s` after the last one, so a slow job is never silent for
    long; its rate is `rate_name` (a language model counts tokens, a classifier samples).

    A data-parallel worker other than the leader must be given the same `save_checkpoint` presence as the
    leader (its calls may do nothing): the counters are summed across workers at each checkpoint."""
    generator = torch.Generator().manual_seed(hp.seed)
    state = restore(plan, resume, generator) if resume else LoopState()
    world = parallel.world if parallel is not None else 1
    parameters = [p for group in plan.optimizer.param_groups for p in group["params"]] if parallel else []
    if parallel is not None and not parallel.leader:
        # The leader's checkpoint holds every worker's sums so far: the others count from zero again.
        state = replace(state, loss_sum=0.0, correct=0, count=0, train_samples=0)

    def gathered(total: Any, correct: Any, *, everyone: bool) -> tuple[Any, Any]:
        """Sum the epoch's counters across workers: held by the leader only (at a checkpoint, so that the sums
        are counted once), or by every worker (at the epoch's end, for the same decisions everywhere)."""
        if parallel is None:
            return total, correct
        loss_sum, right, count, samples = parallel.sum(
            [float(total), float(correct), float(state.count), float(state.train_samples)]
        )
        state.train_samples = int(samples) if parallel.leader else 0
        if everyone or parallel.leader:
            state.count = int(count)
            return loss_sum, int(right)
        state.count = 0
        return 0.0, 0
    stopped_reason = "max_epochs"
    while state.epoch <= hp.epochs and stopped_reason == "max_epochs":
        epoch_generator = generator.get_state()  # the data order of this epoch is drawn from here
        plan.model.train()
        # Sums stay tensors during the epoch: reading a number back every step would cost a sync.
        total: Any = state.loss_sum
        correct: Any = state.correct
        started, last_log, samples_since_log = time.perf_counter(), time.perf_counter(), 0
        batches = plan.train_batches(generator, skip=state.step_in_epoch * world)
        for batch in parallel.my_batches(batches) if parallel is not None else batches:
            stop = should_stop()
            if stop and parallel is None:
                raise Cancelled
            plan.optimizer.zero_grad(set_to_none=True)
            result = plan.step(batch) if batch is not None else None
            if parallel is None:
                assert result is not None
                result.loss.backward()
            else:
                if result is not None:
                    (result.loss * result.count).backward()  # weighted by its rows: see training/parallel.py
                _, stop = parallel.reduce_gradients(parameters, result.count if result is not None else 0, stop)
                if stop:
                    raise Cancelled
            plan.optimizer.step()
            if result is not None:
                total = total + result.loss.detach() * result.count
                correct = correct + result.correct
                state.count += result.count
                state.train_samples += result.count
                samples_since_log += result.count
            state.step_in_epoch += 1
            state.global_step += 1
            now = time.perf_counter()
            every_n = hp.log_every_steps and state.global_step % hp.log_every_steps == 0
            if every_n or (progress_every_s is not None and now - last_log >= progress_every_s):
                emit(
                    "step",
                    {
                        "step": state.global_step,
                        "epoch": state.epoch,
                        "loss": float(result.loss) if result is not None else None,
                        rate_name: samples_since_log / max(now - last_log, 1e-9),
                    },
                )
                last_log, samples_since_log = now, 0
            at_max_steps = hp.max_steps is not None and state.global_step >= hp.max_steps
            every = hp.checkpoint_every_steps
            if save_checkpoint and every and state.global_step % every == 0 and not at_max_steps:
                total, correct = gathered(total, correct, everyone=False)
                snapshot = replace(state, loss_sum=float(total), correct=int(correct), history=list(state.history))
                save_checkpoint(snapshot, epoch_generator)
            if at_max_steps:
                stopped_reason = "max_steps"
                break
        state.train_seconds += time.perf_counter() - started
        total, correct = gathered(total, correct, everyone=True)
        count = max(state.count, 1)
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.global_step,
            "train_loss": float(total) / count,
            "train_accuracy": int(correct) / count,
            rate_name: state.train_samples / state.train_seconds if state.train_seconds > 0 else None,
        }
        validation = evaluate(plan)
        if validation is not None:
            record["val_loss"], record["val_accuracy"] = validation
        state.history.append(record)
        emit("epoch", record)
        if (
            hp.loss_threshold is not None
            and record["train_loss"] <= hp.loss_threshold
            and stopped_reason == "max_epochs"
        ):
            stopped_reason = "loss_threshold"
        if validation is not None and hp.early_stopping_patience is not None:
            if state.best_val_loss is None or validation[0] < state.best_val_loss:
                state.best_val_loss, state.epochs_without_improvement = validation[0], 0
            else:
                state.epochs_without_improvement += 1
                if state.epochs_without_improvement >= hp.early_stopping_patience and stopped_reason == "max_epochs":
                    stopped_reason = "early_stopping"
        state = replace(state, epoch=state.epoch + 1, step_in_epoch=0, loss_sum=0.0, correct=0, count=0)
        if save_checkpoint and stopped_reason == "max_epochs" and state.epoch <= hp.epochs:
            save_checkpoint(replace(state, history=list(state.history)), generator.get_state())
    return LoopResult(
        epochs=len(state.history),
        steps=state.global_step,
        stopped_reason=stopped_reason,
        history=state.history,
        rate=state.train_samples / state.train_seconds if state.train_seconds > 0 else 0.0,
    )
