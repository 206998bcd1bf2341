"""This process's connection to a Ray cluster (`ray.init` once, at start-up) and what the cluster holds: nodes,
resources, and Ray Serve's deployments with their replicas."""

from __future__ import annotations

import logging
import os
from typing import Any

from openmaas.domain.cluster import ClusterDeployment, ClusterNode, ClusterState

log = logging.getLogger(__name__)

NAMESPACE = "openmaas"
# What a task or actor of ours needs from the API process's environment to reach the same stores.
FORWARDED_PREFIXES = ("OPENMAAS_", "AWS_")


class RayCluster:
    def __init__(self, address: str) -> None:
        self.address = address
        self.connected = False

    def connect(self, env: dict[str, str]) -> None:
        """Join the cluster as a driver. `env` goes to every task and actor this process starts (the database
        and artifact settings), beside the AWS_* variables of this process."""
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
        ray.init(
            address=self.address,
            namespace=NAMESPACE,
            runtime_env={"env_vars": {**forwarded, **env}},
            log_to_driver=False,
            ignore_reinit_error=True,
        )
        self.connected = True
        log.info("connected to the Ray cluster at %s", self.address)

    def close(self) -> None:
        if self.connected:
            import ray

            ray.shutdown()
            self.connected = False

    def describe(self) -> ClusterState:
        import ray

        nodes = [
            ClusterNode(
                node_id=node["NodeID"],
                address=node["NodeManagerAddress"],
                alive=bool(node["Alive"]),
                head=_is_head(node),
                resources=_public(node.get("Resources", {})),
            )
            for node in ray.nodes()
        ]
        return ClusterState(
            mode="ray",
            address=self.address,
            nodes=nodes,
            total=_public(ray.cluster_resources()),
            available=_public(ray.available_resources()),
            deployments=_deployments(),
        )


def _is_head(node: dict[str, Any]) -> bool:
    return any(key.startswith("node:__internal_head__") for key in node.get("Resources", {}))


def _public(resources: dict[str, float]) -> dict[str, float]:
    # Ray's per-node marker resources ("node:10.0.0.1", "node:__internal_head__") say nothing to an operator.
    return {key: float(value) for key, value in resources.items() if not key.startswith("node:")}


def _deployments() -> list[ClusterDeployment]:
    """Ray Serve's deployments and their replicas by state; none while Serve has not been started."""
    from ray import serve

    try:
        status = serve.status()
    except Exception:  # Serve not running on this cluster
        return []
    details = serve_details()
    found = []
    for app_name, app in status.applications.items():
        for name, deployment in app.deployments.items():
            detail = details.get(app_name, {}).get("deployments", {}).get(name, {})
            autoscaling = (detail.get("deployment_config") or {}).get("autoscaling_config")
            found.append(
                ClusterDeployment(
                    name=f"{app_name}/{name}",
                    status=_name(deployment.status),
                    replicas={_name(state): int(count) for state, count in deployment.replica_states.items()},
                    target_replicas=detail.get("target_num_replicas"),
                    autoscaling=dict(autoscaling) if autoscaling else None,
                )
            )
    return found


def serve_details() -> dict[str, Any]:
    """Each application's details as Serve's controller keeps them (what its dashboard reads): the replicas a
    deployment is brought to and its autoscaling_config, which serve.status() leaves out. Empty if unread."""
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client()
        assert client is not None  # serve.status() found it
        applications = client.get_serve_details().get("applications") or {}
    except Exception:  # an older or newer Serve: the states above are still worth answering
        log.warning("could not read Ray Serve's application details", exc_info=True)
        return {}
    return dict(applications)


def _name(state: Any) -> str:
    """A Serve state as its name ("HEALTHY"): str() of Ray's str enums is "DeploymentStatus.HEALTHY"."""
    return str(getattr(state, "value", state))
