"""Data-parallel training: which of each step's batches a worker trains on, and the all-reduces (torch.distributed:
gloo on CPU, NCCL on GPUs, set up by Ray Train) that keep every worker's weights, counters and decisions the same.

Every worker draws the same epoch order from the same seed; a step takes `world` consecutive batches of it and
worker `rank` trains on the `rank`-th. Their gradients, each weighted by its batch's rows, are summed and divided
by the step's rows: the gradient of the mean loss over all of the step's batches, as one worker training batches
`world` times larger would take. Each worker then takes the same optimizer step, so weights stay identical, and
worker 0 (the leader) alone writes events, checkpoints and the model version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def my_batches(self, batches: Iterable[Any]) -> Iterator[Any | None]:
        """This worker's batch of each step; None at the epoch's last step when it has fewer than `world`
        batches and none is this worker's (it still joins the step's all-reduce, with no rows)."""
        mine: Any | None = None
        taken = 0
        for batch in batches:
            if taken == self.rank:
                mine = batch
            taken += 1
            if taken == self.world:
                yield mine
                mine, taken = None, 0
        if taken:
            yield mine

    def reduce_gradients(self, parameters: Sequence[torch.nn.Parameter], rows: int, stop: bool) -> tuple[int, bool]:
        """Average the step's gradients over every worker's rows (each worker's gradients must be of its mean
        loss times its `rows`), in one all-reduce that also carries the stop flags, so that every worker stops at
        the same step boundary. Returns the step's rows, and whether any worker was asked to stop."""
        grads = [_dense_grad(p) for p in parameters]
        device = parameters[0].device if parameters else torch.device("cpu")
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([float(rows), float(stop)], device=device)])
        dist.all_reduce(flat)
        total, stops = int(flat[-2].item()), flat[-1].item() > 0
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            size = grad.numel()
            parameter.grad = (flat[offset : offset + size] / max(total, 1)).view_as(grad).to(grad.dtype)
            offset += size
        return total, stops

    def sum(self, values: Sequence[float]) -> list[float]:
        """Every worker's `values`, summed elementwise (float64, so row counts stay exact)."""
        tensor = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(tensor)
        return [float(value) for value in tensor.tolist()]


def _dense_grad(parameter: torch.nn.Parameter) -> torch.Tensor:
    if parameter.grad is None:  # this worker had no batch at this step, or the parameter was not used
        return torch.zeros_like(parameter, dtype=torch.float32)
    grad = parameter.grad.to_dense() if parameter.grad.is_sparse else parameter.grad
    return grad.float()
