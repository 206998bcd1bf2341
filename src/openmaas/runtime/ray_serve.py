"""Models on Ray Serve: each loaded version is a Serve application of one `ModelReplica` deployment on the cluster,
and the API process's pool holds a `RemotePredictor` in its place, whose batches (from the pool's own batch queue)
go to the replica through a deployment handle: no HTTP hop.

A deployment is made asynchronously and watched against a deadline: a replica the cluster cannot place ends the
load with `ReplicaNotPlaced` (its reason and when to retry), never a hung request. Generative models stay in the
API process (their token-by-token queue needs the model at hand).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from openmaas.domain.entities import ModelVersion
from openmaas.recipes.base import InputTooLong
from openmaas.runtime.predictors import EmbeddingPredictor, Predictor, load_predictor

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class ReplicaNotPlaced(Exception):
    """The cluster has no room for a version's replica now; `retry_after` seconds is worth waiting."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelReplica:
    """A Serve replica of one version: loads it from the artifact store (the settings its API process forwarded)
    and runs the batches it is handed."""

    def __init__(self, version: ModelVersion, device: str) -> None:
        from openmaas.config import Settings
        from openmaas.storage.artifacts import open_artifact_store

        settings = Settings()
        artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir, settings.artifacts_cache_dir)
        self.scratch = tempfile.TemporaryDirectory(prefix="openmaas-replica-")
        directory = artifacts.materialize(version.files, Path(self.scratch.name) / "model")
        self.predictor = load_predictor(version, directory, device)
        self.predictor.run_batch([getattr(self.predictor, "warm_up_input", "warm-up")])  # an image for image models

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"memory_bytes": self.predictor.memory_bytes, "labels": self.predictor.labels}
        found["embeds_images"] = getattr(self.predictor, "embeds_images", False)
        if isinstance(self.predictor, EmbeddingPredictor):
            found.update(dimensions=self.predictor.dimensions, max_length=self.predictor.max_length)
        return found

    async def run(self, items: list[Any]) -> list[Any]:
        return await asyncio.to_thread(self.predictor.run_batch, items)

    def too_long(self, texts: list[str]) -> tuple[int, int, int] | None:
        assert isinstance(self.predictor, EmbeddingPredictor)
        try:
            self.predictor.check_lengths(texts)
        except InputTooLong as error:  # as values: Ray wraps exceptions of its tasks in its own
            return error.index, error.tokens, error.max_length
        return None

    def count_tokens(self, texts: list[str]) -> int:
        assert isinstance(self.predictor, EmbeddingPredictor)
        return self.predictor.count_tokens(texts)


class RemotePredictor:
    """A classifier version served by its replicas, as the pool and the batch queue see a predictor."""

    run_parts = None
    inline_seconds = 0.0  # a remote call never runs on the event loop (a handle's `result()` must not)

    def __init__(self, version: ModelVersion, handle: Any, described: dict[str, Any], timeout_s: float) -> None:
        self.version = version
        self.handle = handle
        self.timeout_s = timeout_s
        self.memory_bytes: int = int(described["memory_bytes"])
        self.labels: tuple[str, ...] = tuple(described["labels"])
        self.embeds_images = bool(described.get("embeds_images"))  # its replicas answer ImageToEmbed items

    def run_batch(self, items: list[Any]) -> list[Any]:
        return list(self.handle.run.remote(items).result(timeout_s=self.timeout_s))


class RemoteEmbeddings(EmbeddingPredictor):
    """An embedding version served by its replicas: the embedding predictor's calls, each one a handle call."""

    run_parts = None  # type: ignore[assignment]
    inline_seconds = 0.0

    def __init__(self, version: ModelVersion, handle: Any, described: dict[str, Any], timeout_s: float) -> None:
        self.version = version
        self.handle = handle
        self.timeout_s = timeout_s
        self.labels = ()
        self.memory_bytes = int(described["memory_bytes"])
        self.dimensions = int(described["dimensions"])
        self.max_length = int(described["max_length"])

    def run_batch(self, items: list[Any]) -> list[Any]:
        return list(self.handle.run.remote(items).result(timeout_s=self.timeout_s))

    def check_lengths(self, texts: list[str]) -> None:
        found = self.handle.too_long.remote(texts).result(timeout_s=self.timeout_s)
        if found is not None:
            raise InputTooLong(*found)

    def count_tokens(self, texts: list[str]) -> int:
        return int(self.handle.count_tokens.remote(texts).result(timeout_s=self.timeout_s))


def app_name(version: ModelVersion) -> str:
    return f"om-{version.artifact_sha256[:16]}-{version.tenant_id}-{version.model}-{version.version}"[:120]


class ServeLoader:
    """The pool's loader in cluster mode: deploys a version on Ray Serve (or finds it deployed by another API
    process) and answers with a predictor that calls it. `env` reaches the replicas (the stores' settings)."""

    def __init__(
        self, *, env: dict[str, str], cpus_per_replica: float, deploy_timeout_s: float, request_timeout_s: float
    ) -> None:
        self.env = env
        self.cpus_per_replica = cpus_per_replica
        self.deploy_timeout_s = deploy_timeout_s
        self.request_timeout_s = request_timeout_s
        self.started = False

    def __call__(self, version: ModelVersion, directory: Path, device: str) -> Predictor:
        if version.task == "text-generation":
            return load_predictor(version, directory, device)
        from ray import serve

        if not self.started:
            serve.start(proxy_location="Disabled")  # handles only: the API process is the HTTP front
            self.started = True
        name = app_name(version)
        if not self._running(name):
            deployment: Any = serve.deployment(
                ModelReplica,
                name="model",
                num_replicas=1,
                ray_actor_options={"num_cpus": self.cpus_per_replica, "runtime_env": {"env_vars": self.env}},
            )
            serve._run(deployment.bind(version, device), name=name, route_prefix=None, _blocking=False)
            self._wait_running(name)
        handle = serve.get_app_handle(name)
        described = handle.describe.remote().result(timeout_s=self.request_timeout_s)
        if version.task == "embeddings":
            return RemoteEmbeddings(version, handle, described, self.request_timeout_s)
        return RemotePredictor(version, handle, described, self.request_timeout_s)

    def _running(self, name: str) -> bool:
        from ray import serve
        from ray.serve.schema import ApplicationStatus

        app = serve.status().applications.get(name)
        return app is not None and app.status == ApplicationStatus.RUNNING

    def _wait_running(self, name: str) -> None:
        import ray
        from ray import serve
        from ray.serve.schema import ApplicationStatus

        deadline = time.monotonic() + self.deploy_timeout_s
        while time.monotonic() < deadline:
            app = serve.status().applications.get(name)
            if app is not None and app.status == ApplicationStatus.RUNNING:
                return
            if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
                serve.delete(name, _blocking=False)
                raise RuntimeError(f"its Serve deployment failed: {app.message[-500:]}")
            time.sleep(POLL_SECONDS)
        serve.delete(name, _blocking=False)  # not left waiting for room: the next request tries again
        free = ray.available_resources().get("CPU", 0.0)
        raise ReplicaNotPlaced(
            f"its replica ({self.cpus_per_replica:g} CPU) was not placed on the cluster within "
            f"{self.deploy_timeout_s:g}s ({free:g} CPU free)",
            retry_after=self.deploy_timeout_s,
        )

    def unload(self, version: ModelVersion) -> None:
        """The pool dropped the version: its Serve application goes too."""
        if version.task == "text-generation" or not self.started:
            return
        from ray import serve

        try:
            serve.delete(app_name(version), _blocking=False)
        except Exception:  # already gone, or Serve stopped with the cluster
            log.warning("could not delete the Serve application of %s:%s", version.model, version.version)
