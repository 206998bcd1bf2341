"""How many copies of a loaded version serve it: a fixed replica count, or autoscaling between bounds (named as
Ray Serve's `autoscaling_config` names them). The embedded server runs one copy in its own process."""

from __future__ import annotations

from dataclasses import dataclass

MAX_REPLICAS = 64


@dataclass(frozen=True)
class Autoscaling:
    """Replicas added or removed to keep about `target_ongoing_requests` requests on each replica."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas <= MAX_REPLICAS or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, 1 <= max_replicas <= {MAX_REPLICAS}")
        if self.target_ongoing_requests <= 0:
            raise ValueError("target_ongoing_requests must be positive")


@dataclass(frozen=True)
class Scaling:
    """`replicas` copies, or (when `autoscaling` is set) as many as it says, which `replicas` does not bound."""

    replicas: int = 1
    autoscaling: Autoscaling | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1 to {MAX_REPLICAS}")

    @property
    def most(self) -> int:
        """The most replicas that may serve at once: how many batches are worth having in flight."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas

    @property
    def single(self) -> bool:
        """One copy, never more: what a server with no cluster runs."""
        return self.autoscaling is None and self.replicas == 1

    def describe(self) -> str:
        if self.autoscaling is None:
            return f"replicas={self.replicas}"
        scaling = self.autoscaling
        return (
            f"autoscaling {scaling.min_replicas}..{scaling.max_replicas} replicas "
            f"(target_ongoing_requests={scaling.target_ongoing_requests:g})"
        )
