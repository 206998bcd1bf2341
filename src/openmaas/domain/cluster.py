"""What a cluster is made of, as the operator reads it: its nodes with their resources, and the deployments
serving models with their replicas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    address: str
    alive: bool
    head: bool
    resources: dict[str, float]  # what the node offers (CPU, GPU, memory in bytes, ...)


@dataclass(frozen=True)
class ClusterDeployment:
    name: str
    status: str
    replicas: dict[str, int]  # replica state -> how many (RUNNING, STARTING, ...)
    target_replicas: int | None = None  # how many Serve is bringing it to (None: not known)
    autoscaling: dict[str, Any] | None = None  # its autoscaling_config as Serve runs it, if it autoscales


@dataclass(frozen=True)
class ClusterState:
    mode: str  # "embedded" (no cluster: this process does everything) or "ray"
    address: str | None = None
    nodes: list[ClusterNode] = field(default_factory=list)
    total: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    deployments: list[ClusterDeployment] = field(default_factory=list)
