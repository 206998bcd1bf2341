"""Prometheus metrics: HTTP requests by route, model and status; batches, queues, loaded models; jobs by state;
in cluster mode, the cluster's nodes and CPUs and Ray Serve's deployments and replicas by state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.domain.cluster import ClusterState
from openmaas.domain.entities import ModelVersion, Principal
from openmaas.runtime.batching import BatchStats
from openmaas.runtime.pool import PoolHooks, ServedModel
from openmaas.services.registry import name_for

# The request's model label: set only once a reference resolved to a registered version, so a client's made-up
# names never become series. A context variable, because the service that resolves sees no request; each
# request's task (and `RequestSeries.start`) begins it empty.
_MODEL: ContextVar[str] = ContextVar("openmaas_request_model", default="")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _JobStates(Collector):
    """Reads job counts from the store at scrape time, so every process sees the same numbers."""

    def __init__(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        self.count_by_status = count_by_status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("openmaas_training_jobs", "Training jobs by state", labels=["state"])
        for state, count in sorted(self.count_by_status().items()):
            family.add_metric([state], count)
        yield family


class _ClusterFigures(Collector):
    """Reads the cluster's state at scrape time (Ray's own figures, so every API process reports the same)."""

    def __init__(self, read_state: Callable[[], ClusterState]) -> None:
        self.read_state = read_state  # not `describe`: the registry would take it for Collector.describe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.read_state()
        nodes = GaugeMetricFamily("openmaas_cluster_nodes", "Ray nodes by state", labels=["state"])
        alive = sum(node.alive for node in state.nodes)
        nodes.add_metric(["alive"], alive)
        nodes.add_metric(["dead"], len(state.nodes) - alive)
        yield nodes
        yield GaugeMetricFamily(
            "openmaas_cluster_cpus", "CPUs of the cluster's alive nodes", value=state.total.get("CPU", 0.0)
        )
        yield GaugeMetricFamily(
            "openmaas_cluster_cpus_available",
            "CPUs no task, actor or replica holds",
            value=state.available.get("CPU", 0.0),
        )
        deployments = GaugeMetricFamily(
            "openmaas_serve_deployments", "Ray Serve deployments by status", labels=["status"]
        )
        replicas = GaugeMetricFamily("openmaas_serve_replicas", "Ray Serve replicas by state", labels=["state"])
        by_status: dict[str, int] = {}
        by_state: dict[str, int] = {}
        for deployment in state.deployments:
            by_status[deployment.status] = by_status.get(deployment.status, 0) + 1
            for replica_state, count in deployment.replicas.items():
                by_state[replica_state] = by_state.get(replica_state, 0) + count
        for status, count in sorted(by_status.items()):
            deployments.add_metric([status], count)
        for replica_state, count in sorted(by_state.items()):
            replicas.add_metric([replica_state], count)
        yield deployments
        yield replicas


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "openmaas_requests_total", "HTTP requests", ["route", "method", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "openmaas_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "openmaas_batch_size", "Items per forward pass", ["model"], buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "openmaas_batch_duration_seconds",
            "Forward pass time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "openmaas_generated_tokens_total", "Tokens generated", ["model"], registry=self.registry
        )
        self.first_token_seconds = Histogram(
            "openmaas_time_to_first_token_seconds",
            "Time from a generation's start (after its queue wait) to its first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("openmaas_queue_depth", "Inputs waiting to run", ["model"], registry=self.registry)
        self.load_seconds = Histogram(
            "openmaas_model_load_seconds",
            "Time to load a model version",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.model_bytes = Gauge(
            "openmaas_loaded_model_bytes",
            "Memory of loaded model versions",
            ["model", "version"],
            registry=self.registry,
        )

    def watch_pool(self, memory_bytes: Callable[[], int]) -> None:
        """The pool's memory, read at scrape time: every loaded version, a base shared by LoRA versions once."""
        Gauge(
            "openmaas_pool_memory_bytes",
            "Memory of all loaded models; a base shared by several LoRA versions counts once",
            registry=self.registry,
        ).set_function(lambda: float(memory_bytes()))

    def watch_jobs(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobStates(count_by_status))

    def watch_cluster(self, describe: Callable[[], ClusterState]) -> None:
        self.registry.register(_ClusterFigures(describe))

    def pool_hooks(self) -> PoolHooks:
        def loaded(served: ServedModel) -> None:
            version = served.version
            self.load_seconds.labels(version.model).observe(served.load_seconds)
            self.model_bytes.labels(version.model, str(version.version)).set(served.predictor.memory_bytes)
            queue = served.queue
            self.queue_depth.labels(version.model).set_function(lambda: queue.depth)

        def unloaded(served: ServedModel) -> None:
            version = served.version
            self.model_bytes.remove(version.model, str(version.version))
            self.queue_depth.labels(version.model).set(0)

        def batch_stats(version: ModelVersion) -> BatchStats:
            sizes = self.batch_size.labels(version.model)
            seconds = self.batch_seconds.labels(version.model)

            def observe(size: int, elapsed: float) -> None:
                sizes.observe(size)
                seconds.observe(elapsed)

            tokens = self.generated_tokens.labels(version.model)
            first_token = self.first_token_seconds.labels(version.model)

            def observe_generation(count: int, first: float, _elapsed: float) -> None:
                tokens.inc(count)
                if count:
                    first_token.observe(first)

            return BatchStats(on_batch=[observe], on_generation=[observe_generation])

        return PoolHooks(on_load=[loaded], on_unload=[unloaded], batch_stats=batch_stats)


class RequestSeries:
    """Counts and times requests by route template (never the raw path), method, model and status.

    The model is the registered one a request's reference resolved to (`resolved`, a hook of the inference
    service), else "": names the registry does not know never become labels."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # (route, method, model, status) → its counter and histogram: `labels()` validates and locks on every
        # call, and a server sees few distinct label sets. Bounded all the same, in case of many models.
        self._series: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    @staticmethod
    def start() -> Token[str]:
        """Begin a request with no model; returns what `observe` takes to end it."""
        return _MODEL.set("")

    @staticmethod
    def resolved(principal: Principal, version: ModelVersion, ref: str) -> None:
        _MODEL.set(name_for(principal, version, ref))

    def observe(self, scope: Scope, status: int, seconds: float, started: Token[str] | None = None) -> None:
        route = scope.get("route")
        # path_format: the template without convertors (`{ref}`, not `{ref:path}`), as the OpenAPI schema names it
        template = getattr(route, "path_format", None) or "unmatched"
        self.record(template, scope["method"], status, seconds, started)

    def record(self, template: str, method: str, status: int, seconds: float, started: Token[str] | None) -> None:
        """One request of `template` (a route, or a gRPC method's full name): by its status's HTTP number."""
        labels = (template, method, _MODEL.get(), status)
        if started is not None:
            _MODEL.reset(started)
        series = self._series.get(labels)
        if series is None:
            if len(self._series) > 10_000:
                self._series.clear()
            names = (template, labels[1], labels[2], str(status))
            series = self._series[labels] = (self.metrics.requests.labels(*names), self.metrics.latency.labels(*names))
        series[0].inc()
        series[1].observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, series: RequestSeries) -> None:
        self.app = app
        self.series = series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        model = self.series.start()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.series.observe(scope, status, time.perf_counter() - started, model)
