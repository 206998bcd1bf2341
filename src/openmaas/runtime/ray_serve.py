"""The cluster inference backend, on Ray Serve: each loaded version is a Serve application of one `ModelReplica`
deployment, and the API process's pool holds a remote predictor in its place (runtime/ray_replicas.py). A
classifier's or an embedding model's batches (from the pool's own batch queue) go to its replicas through a
deployment handle, no HTTP hop; a causal LM's generations stream token by token through a streaming handle
(`handle.options(stream=True)`) from a generation queue inside the replica, and a cancelled stream cancels the
replica's generation.

A deployment is made asynchronously and watched against a deadline: a replica the cluster cannot place ends the
load with `ReplicaNotPlaced` (its reason and when to retry), never a hung request. A load may set a version's
replicas (a count, or Serve's autoscaling); a served version is re-scaled in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from openmaas.cluster.connection import serve_details
from openmaas.domain.entities import ModelVersion
from openmaas.domain.scaling import Autoscaling, Scaling
from openmaas.runtime.backend import LoadedModel
from openmaas.runtime.batching import BatchQueue
from openmaas.runtime.local import LocalBackend, described
from openmaas.runtime.pool import BatchSettings, ModelLoadError, ModelPool, ServedModel
from openmaas.runtime.predictors import Predictor
from openmaas.runtime.ray_replicas import (
    ModelReplica,
    Remote,
    RemoteEmbeddings,
    RemoteGenerator,
    RemotePredictor,
    follow,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class ReplicaNotPlaced(Exception):
    """The cluster has no room for a version's replica now; `retry_after` seconds is worth waiting."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def app_name(version: ModelVersion) -> str:
    return f"om-{version.artifact_sha256[:16]}-{version.tenant_id}-{version.model}-{version.version}"[:120]


def deployed_scaling(name: str) -> Scaling | None:
    """The replicas an application runs with, as Serve's controller keeps its deployment's config; None when
    that cannot be read."""
    config = serve_details().get(name, {}).get("deployments", {}).get("model", {}).get("deployment_config", {})
    try:
        autoscaling = config.get("autoscaling_config")
        if autoscaling:
            low, high = int(autoscaling["min_replicas"]), int(autoscaling["max_replicas"])
            return Scaling(autoscaling=Autoscaling(low, high, float(autoscaling["target_ongoing_requests"])))
        return Scaling(int(config["num_replicas"]))
    except (KeyError, TypeError, ValueError):  # a config of another shape (another Serve)
        return None


class ServeLoader:
    """The pool's loader in cluster mode: deploys a version on Ray Serve (or finds it deployed by another API
    process) and answers with a predictor that calls it. `env` reaches the replicas (the stores' settings).

    A version deploys with the scaling its load asked for (`requested`, set by the backend for that load) or
    `replicas`; `rescale` deploys a served version again with another: the deployment keeps its version, so
    Serve adds or stops replicas and leaves the running ones serving."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        cpus_per_replica: float,
        deploy_timeout_s: float,
        request_timeout_s: float,
        replicas: int = 1,
        max_streams: int = 100,
    ) -> None:
        self.env = env
        self.replicas = replicas
        self.max_streams = max_streams  # generations one replica takes at once (decoding and queued)
        self.cpus_per_replica = cpus_per_replica
        self.deploy_timeout_s = deploy_timeout_s
        self.request_timeout_s = request_timeout_s
        self.requested: dict[str, Scaling] = {}  # app name -> the scaling a load in progress asked for
        self.kept: set[str] = set()  # apps whose next unload by the pool is a reload: not deleted
        self.started = False

    def __call__(self, version: ModelVersion, directory: Path, device: str) -> Predictor:
        from ray import serve

        if not self.started:
            serve.start(proxy_location="Disabled")  # handles only: the API process is the HTTP front
            self.started = True
        name = app_name(version)
        asked = self.requested.get(name)
        scaling = asked or Scaling(self.replicas)
        if asked is None and self._running(name):  # deployed by another API process: kept as it runs
            scaling = deployed_scaling(name) or scaling
        else:
            self._deploy(version, device, scaling)
            try:
                self._wait_running(name)
            except ReplicaNotPlaced:
                serve.delete(name, _blocking=False)  # not left waiting for room: the next request tries again
                raise
        handle = serve.get_app_handle(name)
        described = handle.describe.remote().result(timeout_s=self.request_timeout_s)
        remote: Remote
        if version.task == "text-generation":
            remote = RemoteGenerator(version, handle, described, self.request_timeout_s)
        elif version.task == "embeddings":
            remote = RemoteEmbeddings(version, handle, described, self.request_timeout_s)
        else:
            remote = RemotePredictor(version, handle, described, self.request_timeout_s)
        follow(remote, scaling)
        return remote

    def rescale(self, version: ModelVersion, device: str, scaling: Scaling, previous: Scaling) -> None:
        """Deploy the served version again with `scaling`; replicas the cluster cannot place in time leave it
        running as `previous` (ReplicaNotPlaced)."""
        self._deploy(version, device, scaling)
        try:
            self._wait_running(app_name(version))
        except ReplicaNotPlaced as error:
            self._deploy(version, device, previous)  # the replicas it has go on serving
            raise ReplicaNotPlaced(f"{error} (it goes on with {previous.describe()})", error.retry_after) from None

    def _deploy(self, version: ModelVersion, device: str, scaling: Scaling) -> None:
        from ray import serve

        deployment: Any = serve.deployment(
            ModelReplica,
            name="model",
            # A causal LM's replica queues its generations itself (429 when full): Serve lets them all in.
            max_ongoing_requests=self.max_streams if version.task == "text-generation" else 5,
            ray_actor_options={"num_cpus": self.cpus_per_replica, "runtime_env": {"env_vars": self.env}},
        )
        if scaling.autoscaling is None:
            deployment = deployment.options(num_replicas=scaling.replicas)
        else:
            deployment = deployment.options(autoscaling_config=asdict(scaling.autoscaling))
        # A version Serve keeps across deployments of the same model version (the artifact's digest is in the
        # name): one of another scaling is a configuration change, not new code, and does not restart replicas.
        # Serve's public API no longer takes one (it would pick a random one: every replica restarted).
        deployment = deployment.options(version=f"{app_name(version)}-{device}", _internal=True)
        serve._run(deployment.bind(version, device), name=app_name(version), route_prefix=None, _blocking=False)

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
        app = serve.status().applications.get(name)
        # Serve's own word, once it has one (after 30 s): waiting to be scheduled, or slow to initialise.
        said = next((d.message for d in app.deployments.values() if d.message), "") if app is not None else ""
        free = ray.available_resources().get("CPU", 0.0)
        raise ReplicaNotPlaced(
            f"its replica ({self.cpus_per_replica:g} CPU) was not placed and started on the cluster within "
            f"{self.deploy_timeout_s:g}s ({free:g} CPU free)" + (f"; Ray Serve: {said[-300:]}" if said else ""),
            retry_after=self.deploy_timeout_s,
        )

    def unload(self, version: ModelVersion) -> None:
        """The pool dropped the version: its Serve application goes too, unless it is reloaded with other batch
        settings (`kept`): those are this process's queue, and the replicas go on serving."""
        if not self.started:
            return
        if app_name(version) in self.kept:
            return
        from ray import serve

        try:
            serve.delete(app_name(version), _blocking=False)
        except Exception:  # already gone, or Serve stopped with the cluster
            log.warning("could not delete the Serve application of %s:%s", version.model, version.version)


class RayServeBackend(LocalBackend):
    """The cluster backend: the local backend's pool and queues, whose versions run on Ray Serve replicas
    (`pool` loads through `loader`); an unloaded version's Serve application is deleted. A load that asks for
    other replicas than a served version has re-scales its deployment in place."""

    def __init__(self, pool: ModelPool, loader: ServeLoader) -> None:
        super().__init__(pool)
        self.loader = loader
        self._scaling = asyncio.Lock()  # one scaling load at a time: each sees the replicas the last one left
        pool.hooks.on_unload.append(lambda served: loader.unload(served.version))

    async def _served(self, version: ModelVersion, settings: BatchSettings | None = None) -> ServedModel:
        if settings is not None and (served := self.pool.get(version)) and served.settings != settings:
            # Reloaded for its batch queue, which is this process's: the replicas stay, and the reload finds
            # them running with the scaling they have.
            self.loader.kept.add(app_name(version))
            try:
                self.pool.unload_version(version)
            finally:
                self.loader.kept.discard(app_name(version))
        return await self.pool.acquire(version, settings)

    async def load(
        self, version: ModelVersion, settings: BatchSettings | None = None, scaling: Scaling | None = None
    ) -> LoadedModel:
        if scaling is None:
            return await super().load(version, settings)
        name = app_name(version)
        async with self._scaling:
            self.loader.requested[name] = scaling  # deployed so, if the pool loads it now
            try:
                await super().load(version, settings)
            finally:
                self.loader.requested.pop(name, None)
            served = self.pool.get(version)
            if served is None:  # evicted at once (a budget smaller than the version)
                raise ModelLoadError("it was unloaded as soon as it was loaded")
            remote = served.predictor
            assert isinstance(remote, RemotePredictor | RemoteEmbeddings | RemoteGenerator)
            if remote.scaling != scaling:  # served already, with other replicas
                try:
                    await asyncio.to_thread(self.loader.rescale, version, self.pool.device, scaling, remote.scaling)
                except ReplicaNotPlaced as error:
                    raise ModelLoadError(str(error), error.retry_after) from error
                except Exception as error:  # its deployment failed, and Serve deleted it
                    self.pool.unload_version(version)
                    raise ModelLoadError(f"{type(error).__name__}: {error}") from error
                follow(remote, scaling)
                if isinstance(served.queue, BatchQueue):
                    served.queue.set_concurrency(remote.preferred_concurrency)
            return described(served)
