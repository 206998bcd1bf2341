"""The composition root: the only place where concrete stores, executors and pools are built and wired."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from openmaas import __version__
from openmaas.api import admin, kserve_v2, native, openai
from openmaas.api.bodies import JSONRoute
from openmaas.api.dashboard import install_dashboard
from openmaas.api.deps import Services
from openmaas.api.direct import DirectRoute, DirectRoutes
from openmaas.api.errors import install_error_handlers
from openmaas.api.limits import BodyGate, BodyGateMiddleware
from openmaas.api.metrics import Metrics, MetricsMiddleware, RequestSeries
from openmaas.api.middleware import RequestIdMiddleware, RequestIds
from openmaas.api.native.datasets import MULTIPART_SLACK
from openmaas.api.openapi import install_openapi
from openmaas.api.responses import FastJSONResponse
from openmaas.cluster import RayCluster
from openmaas.config import Settings
from openmaas.data.archives import ArchiveLimits
from openmaas.data.images import ImageLimits
from openmaas.domain.entities import Principal
from openmaas.runtime.backend import InferenceBackend
from openmaas.runtime.local import LocalBackend
from openmaas.runtime.pool import BatchSettings, ModelPool
from openmaas.services.artifacts import ArtifactService
from openmaas.services.auth import DEFAULT_TENANT, AuthService
from openmaas.services.batches import BatchRunner, BatchService
from openmaas.services.cluster import ClusterService
from openmaas.services.datasets import DatasetService
from openmaas.services.exports import ExportService
from openmaas.services.files import FileService
from openmaas.services.fine_tuning import FineTuningService
from openmaas.services.foundation import FoundationModels
from openmaas.services.generation import GenerationService
from openmaas.services.idempotency import Idempotency
from openmaas.services.inference import SCALING_EMBEDDED, InferenceService
from openmaas.services.jobs import JobService
from openmaas.services.limits import RateLimiter
from openmaas.services.preload import Preloader
from openmaas.services.registry import RegistryService
from openmaas.services.tenancy import TenancyService
from openmaas.services.usage import UsageRecorder, UsageService
from openmaas.storage.artifacts import open_artifact_store
from openmaas.storage.counters import Counters, LocalCounters, RedisCounters
from openmaas.storage.metadata import MetadataStore, open_store
from openmaas.storage.usage_journal import UsageJournal
from openmaas.training.checkpoints import CheckpointStore
from openmaas.training.executors import JobScheduler, Launcher, LocalProcessLauncher, default_node

if TYPE_CHECKING:
    from openmaas.runtime.ray_serve import ServeLoader

log = logging.getLogger(__name__)


def image_limits(settings: Settings) -> ImageLimits:
    archive = ArchiveLimits(
        settings.archive_max_files, settings.archive_max_uncompressed_bytes, settings.archive_max_ratio
    )
    return ImageLimits(settings.image_max_pixels, settings.image_max_total_pixels, archive)


def announce_key(key: str, settings: Settings) -> None:
    # Printed once, on the first start, so the operator can copy it; never logged.
    print(
        f"\nOpenMaaS created the admin API key (shown only now; also in {settings.admin_key_file}):\n\n    {key}\n",
        file=sys.stderr,
        flush=True,
    )


class OpenMaaSApp(FastAPI):
    """FastAPI, except that a request for a direct route (the predictions) is answered by `direct` before the
    middleware stack: see api/direct.py for what that saves and what it does instead."""

    direct: DirectRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct is not None and scope["type"] == "http":
            if self.root_path:  # as FastAPI.__call__ does before routing
                scope["root_path"] = self.root_path
            if (route := self.direct.match(scope)) is not None:
                scope["app"] = self
                await self.direct.answer(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        # The direct routes do what the middleware known when they were set up does, and would skip a new one.
        self.direct = None
        super().add_middleware(middleware_class, *args, **kwargs)


WORKERS_EMBEDDED = (1, "the embedded server trains with one worker (set OPENMAAS_CLUSTER to train on Ray)")
# Ray Train runs the attempt with `num_workers` data-parallel workers; a job the cluster cannot place waits queued.
WORKERS_ON_RAY = (256, "a job trains with at most 256 Ray Train workers")


def ray_launcher(settings: Settings, store: MetadataStore) -> Launcher:
    from openmaas.training.executors.ray_train import RayTrainLauncher  # Ray is the `cluster` extra

    def workers_of(job_id: str) -> int:
        job = store.jobs.get(None, job_id)
        return int(job.hyperparameters.get("num_workers", 1)) if job is not None else 1

    return RayTrainLauncher(
        workers_of=workers_of,
        cpus_per_worker=settings.ray_cpus_per_worker,
        gpus_per_worker=settings.ray_gpus_per_worker,
        placement_timeout_s=settings.ray_placement_timeout_s,
    )


def serve_loader_for(settings: Settings, env: dict[str, str]) -> ServeLoader:
    from openmaas.runtime.ray_serve import ServeLoader  # Ray is the `cluster` extra

    return ServeLoader(
        env=env,
        cpus_per_replica=settings.ray_cpus_per_replica,
        deploy_timeout_s=settings.ray_placement_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        replicas=settings.ray_replicas,
        max_streams=settings.max_queued_generations + settings.generation_batch_size,
    )


def create_app(settings: Settings, *, prepared: bool = False) -> FastAPI:
    """The app; `prepared` when it is one of several processes whose data directory was prepared before they
    started (api/workers.py): then it neither cleans up interrupted writes nor makes the admin key."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        store = open_store(url)
        artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir, settings.artifacts_cache_dir)
        if not prepared:
            artifacts.clean_temporary()  # before any worker starts: nothing else is writing
        foundation = FoundationModels(store, artifacts, settings.resolved_foundation_cache_dir)
        foundation.ensure(settings.foundation_models)
        auth = AuthService(store.tenants, store.api_keys)
        gate.auth = auth
        counters: Counters = LocalCounters()
        if settings.redis_url:
            counters = await RedisCounters.connect(settings.redis_url)
        limiter = RateLimiter(counters, settings.rate_limit_window_s)
        recorder = UsageRecorder(store.usage, UsageJournal(settings.data_dir / "journal"), settings.usage_drain_s)
        recorder.recover()  # calls answered by a process that died before they reached the database
        new_key = None if prepared else auth.bootstrap(settings.admin_key, settings.admin_key_file)
        if new_key:
            announce_key(new_key, settings)
        worker_env = {
            "OPENMAAS_DATA_DIR": str(settings.data_dir),
            "OPENMAAS_DATABASE_URL": url,
            "OPENMAAS_ARTIFACTS_URL": settings.artifacts_url or "",
        }
        cluster = RayCluster(settings.cluster) if settings.cluster else None
        launcher: Launcher
        if cluster is not None:
            await asyncio.to_thread(cluster.connect, worker_env)
            launcher = ray_launcher(settings, store)
            metrics.watch_cluster(cluster.describe)
        else:
            launcher = LocalProcessLauncher(env=worker_env, log_dir=settings.data_dir / "logs" / "jobs")
        executor = JobScheduler(
            store.jobs,
            store.leases,
            launcher,
            node=settings.node_name or default_node(),
            lease_s=settings.job_lease_s,
            max_concurrent=settings.max_concurrent_jobs,
            max_attempts=settings.job_max_attempts,
            tenant_limits=store.tenants.limits_by_tenant,
            poll_seconds=settings.job_poll_seconds,
        )
        metrics.watch_jobs(store.jobs.count_by_status)
        serve_loader = serve_loader_for(settings, worker_env) if cluster is not None else None
        pool = ModelPool(
            artifacts,
            settings.data_dir / "cache" / "models",
            device=settings.device,
            memory_budget_bytes=settings.model_memory_mb * 1024 * 1024,
            defaults=BatchSettings(settings.max_batch_size, settings.max_wait_ms, settings.max_queue_size),
            hooks=metrics.pool_hooks(),
            generation_queue_size=settings.max_queued_generations,
            generation_batch_size=settings.generation_batch_size,
            # Models loaded here run their operators here; Ray Serve replicas are processes of their own.
            torch_threads=settings.torch_threads if serve_loader is None else 0,
            **({"loader": serve_loader} if serve_loader is not None else {}),
        )
        backend: InferenceBackend = LocalBackend(pool)
        metrics.watch_pool(lambda: pool.memory_bytes)
        if serve_loader is not None:
            from openmaas.runtime.ray_serve import RayServeBackend

            backend = RayServeBackend(pool, serve_loader)
        registry = RegistryService(store, artifacts)
        idempotency = Idempotency(store.idempotency)
        inference = InferenceService(
            registry,
            backend,
            max_inputs=settings.max_predict_inputs,
            limiter=limiter,
            usage=recorder,
            request_timeout_s=settings.request_timeout_s,
            max_image_pixels=settings.image_max_pixels,
            scaling_refused=None if serve_loader is not None else SCALING_EMBEDDED,  # Ray Serve runs replicas
        )
        inference.on_resolve.append(series.resolved)
        datasets = DatasetService(store, artifacts, settings.max_upload_bytes, idempotency, image_limits(settings))
        files = FileService(store, artifacts, settings.max_upload_bytes)
        jobs = JobService(
            store,
            executor,
            CheckpointStore(artifacts.scope("checkpoints")),
            idempotency,
            registry,
            workers_limit=WORKERS_ON_RAY if cluster is not None else WORKERS_EMBEDDED,
        )
        app.state.services = Services(
            settings=settings,
            auth=auth,
            datasets=datasets,
            files=files,
            fine_tuning=FineTuningService(
                store,
                jobs,
                datasets,
                files,
                registry,
                node=settings.node_name or default_node(),
                lease_s=settings.job_lease_s,
            ),
            batches=BatchService(store, files, window_s=settings.batch_completion_window_s),
            jobs=jobs,
            registry=registry,
            inference=inference,
            generation=GenerationService(
                inference, limiter, recorder, foundation.preparing, request_timeout_s=settings.request_timeout_s
            ),
            artifacts=ArtifactService(registry, inference, artifacts, settings.data_dir / "cache" / "exports"),
            exports=ExportService(registry, inference, artifacts, settings.data_dir / "cache" / "archives"),
            tenancy=TenancyService(store),
            usage=UsageService(store.usage, recorder),
            limiter=limiter,
            cluster=ClusterService(cluster.describe if cluster is not None else None),
        )
        await executor.start()
        # Batches are answered in the background, through the same services as the routes (api/openai/batches.py).
        batch_runner = BatchRunner(
            store,
            files,
            openai.batches.executor(app.state.services),
            wait_idle=openai.batches.idle_waiter(app.state.services),
            node=settings.node_name or default_node(),
            lease_s=settings.batch_lease_s,
        )
        app.state.services.batches.on_created.append(batch_runner.wake)
        batching = asyncio.create_task(batch_runner.run(), name="batches")
        # Fine-tunes a stopped process left validating their files are validated again (services/fine_tuning.py).
        revalidating = asyncio.create_task(app.state.services.fine_tuning.run(), name="fine-tune validations")
        grpc = None
        if settings.grpc_port is not None:
            grpc = await kserve_v2.start_grpc(app.state.services, series, settings.host, settings.grpc_port)
        # After the start, in the background: /healthz answers at once, /readyz once the preloads are loaded.
        admin = Principal(tenant_id=DEFAULT_TENANT, key_id="preload")
        app.state.preloader = Preloader(inference, admin, settings.preload_models, foundation.preparing)
        preloading = asyncio.create_task(app.state.preloader.run(), name="preload")
        log.info("OpenMaaS ready: data in %s", settings.data_dir)
        try:
            yield
        finally:
            preloading.cancel()
            batching.cancel()
            revalidating.cancel()
            if grpc is not None:
                await grpc.stop(grace=5)
            await executor.stop()
            await backend.close()
            await recorder.close()
            await counters.close()
            store.close()
            if cluster is not None:
                cluster.close()

    metrics = Metrics()
    # FastAPI's OpenTelemetry hooks look up the global providers on every request (~5% of the event loop's
    # time at 32 clients of the MiniLM classifier, py-spy), so they are on only when asked for.
    on = settings.opentelemetry
    telemetry: TelemetryConfig = {"tracing": on, "metrics": on, "logs": on}
    # /docs and /redoc are the dashboard's, from local files: FastAPI's own load their scripts from a CDN.
    app = OpenMaaSApp(
        title="OpenMaaS",
        version=__version__,
        lifespan=lifespan,
        telemetry=telemetry,
        docs_url=None,
        redoc_url=None,
    )
    ids, series = RequestIds(), RequestSeries(metrics)
    # Uploads have their own limit (the dataset route checks the file's own size again, within the form).
    uploads = settings.max_upload_bytes + MULTIPART_SLACK
    gate = BodyGate(settings.max_json_body_bytes, {"/v1/datasets": uploads, "/v1/files": uploads})
    app.add_middleware(BodyGateMiddleware, gate=gate)
    app.add_middleware(MetricsMiddleware, series=series)
    app.add_middleware(RequestIdMiddleware, ids=ids)
    install_openapi(app, settings)
    app.router.route_class = JSONRoute  # the app's own routes, like every router's

    @app.get("/healthz", tags=["health"], response_model=None)
    async def healthz(request: Request) -> dict[str, str] | FastJSONResponse:
        # Not ready while a loaded model's queue no longer serves (the pool drops such a one at once). Counted,
        # not named: the route is open to anyone, and model names are their tenants'.
        services: Services | None = getattr(request.app.state, "services", None)
        stopped = services.inference.backend.stopped() if services is not None else []
        if stopped:
            return FastJSONResponse({"status": "degraded", "models_stopped": len(stopped)}, status_code=503)
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=None,
        responses={503: {"description": "Still loading the preloaded models (named in `loading`)."}},
    )
    async def readyz(request: Request) -> dict[str, Any] | FastJSONResponse:
        # Ready once the models of OPENMAAS_PRELOAD_MODELS (chosen by the operator) are loaded or failed to load.
        preloader: Preloader | None = getattr(request.app.state, "preloader", None)
        if preloader is None:
            return FastJSONResponse({"status": "starting", "loading": []}, status_code=503)
        status = preloader.status
        body: dict[str, Any] = {"status": "ready" if status.done else "loading", "loading": list(status.loading)}
        body.update(loaded=list(status.loaded), failed=dict(status.failed))
        return body if status.done else FastJSONResponse(body, status_code=503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routers = (*native.routers, *openai.routers, *kserve_v2.routers, *admin.routers)  # the inference routes first
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute) and not isinstance(route, JSONRoute | DirectRoute):
            # Its body would be decoded by Python's json, which lets lone surrogates through (api/bodies.py).
            raise TypeError(f"the route {route.path} must be a JSONRoute (APIRouter(route_class=JSONRoute))")
    for router in routers:
        app.include_router(router)  # no prefix: a router's routes carry their whole path
    install_dashboard(app)  # after the API: its /dashboard/static mount matches nothing of the API's
    routes = [route for router in routers for route in router.routes]
    install_error_handlers(app, [*app.routes, *routes])
    if not on:  # traced requests take the usual way, through FastAPI's telemetry middleware
        app.direct = DirectRoutes(routes, app.exception_handlers, ids, series, gate)  # keeps the DirectRoutes of them
    return app
