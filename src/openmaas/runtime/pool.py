"""The model pool: loads versions on first use (one load shared by concurrent callers), gives each its batch
queue, and evicts the least recently used under a memory budget. A version whose queue stopped serving (its
decoding thread ended unasked) is dropped at once, so the next request loads it afresh. LoRA versions of one
base share one loaded copy of it and one generation queue (runtime/adapters.py); the base counts once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.domain.entities import ModelVersion
from openmaas.recipes.base import resolve_device
from openmaas.runtime.adapters import AdapterPredictor, SharedBases, is_adapter_version
from openmaas.runtime.batching import BatchQueue, BatchStats
from openmaas.runtime.engines import OPENVINO
from openmaas.runtime.generation import GenerationQueue, Generations
from openmaas.runtime.predictors import GenerativePredictor, Predictor, load_predictor
from openmaas.runtime.torch_threads import apply_torch_threads
from openmaas.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)

PoolKey = tuple[str, str, int, str]

# The only request in a queue runs on the event loop instead of a lane thread when its batch is expected to take
# less (see BatchQueue): bow-mlp's do (a few tens of microseconds); a MiniLM text takes ~6 ms and never does.
INLINE_BATCH_SECONDS = 0.0005


class ModelLoadError(Exception):
    """A version could not be loaded (missing or corrupt artifact, bad config), or not now: `retry_after`
    seconds when the loader said waiting helps (a cluster with no room for its replica yet)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def key_of(version: ModelVersion) -> PoolKey:
    return (version.tenant_id, version.model, version.version, version.artifact_sha256)


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_queue_size: int = 4096


@dataclass
class ServedModel:
    """A loaded version and the queue in front of it: a batch queue, or what serves a causal LM's generations."""

    predictor: Predictor
    queue: BatchQueue[Any, Any] | Generations
    settings: BatchSettings
    load_seconds: float
    last_used: float = field(default_factory=time.monotonic)

    @property
    def version(self) -> ModelVersion:
        return self.predictor.version

    @property
    def alive(self) -> bool:
        """Its queue serves (a batch queue's lanes always do; a generation queue's thread may have stopped)."""
        return isinstance(self.queue, BatchQueue) or self.queue.alive


@dataclass
class PoolHooks:
    """Observers for metrics, so the pool does not know about Prometheus."""

    on_load: list[Callable[[ServedModel], None]] = field(default_factory=list)
    on_unload: list[Callable[[ServedModel], None]] = field(default_factory=list)
    batch_stats: Callable[[ModelVersion], BatchStats] | None = None


class ModelPool:
    def __init__(
        self,
        artifacts: ArtifactStore,
        cache_dir: Path,
        *,
        device: str,
        memory_budget_bytes: int,
        defaults: BatchSettings = BatchSettings(),
        loader: Callable[[ModelVersion, Path, str], Predictor] = load_predictor,
        hooks: PoolHooks | None = None,
        generation_queue_size: int = 64,
        generation_batch_size: int = 8,
        torch_threads: int = 0,
    ) -> None:
        self.artifacts = artifacts
        self.cache_dir = cache_dir
        self.device = device
        self.memory_budget_bytes = memory_budget_bytes
        self.defaults = defaults
        self.loader = loader
        self.hooks = hooks or PoolHooks()
        self.generation_queue_size = generation_queue_size
        self.generation_batch_size = generation_batch_size
        self.torch_threads = torch_threads  # applied before the first load (runtime/torch_threads.py)
        self.loaded: OrderedDict[PoolKey, ServedModel] = OrderedDict()
        # LoRA versions share their base where this process loads the models itself (not behind Ray Serve).
        self.shared_bases = SharedBases()
        self.share_bases = loader is load_predictor
        self._lock = threading.Lock()  # versions may be dropped from a worker thread (a delete route)
        self._loading: dict[PoolKey, asyncio.Future[ServedModel]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def memory_bytes(self) -> int:
        with self._lock:
            versions = sum(served.predictor.memory_bytes for served in self.loaded.values())
        return versions + self.shared_bases.memory_bytes

    def get(self, version: ModelVersion) -> ServedModel | None:
        return self.loaded.get(key_of(version))

    async def acquire(self, version: ModelVersion, settings: BatchSettings | None = None) -> ServedModel:
        self._loop = asyncio.get_running_loop()
        key = key_of(version)
        served = self.loaded.get(key)
        if served is not None and not served.alive:  # its queue stopped serving: load it afresh
            self.unload(key)
            served = None
        if served is None:
            served = await self._load_shared(key, version, settings)
        served.last_used = time.monotonic()
        with self._lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
        return served

    async def _load_shared(self, key: PoolKey, version: ModelVersion, settings: BatchSettings | None) -> ServedModel:
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ServedModel] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            predictor, seconds = await asyncio.to_thread(self._load, version)
            settings = settings or self._default_settings(predictor)
            stats = self.hooks.batch_stats(version) if self.hooks.batch_stats else None
            name = f"{version.model}:{version.version}"
            queue: BatchQueue[Any, Any] | Generations
            remote: Generations | None = getattr(predictor, "generations", None)
            if remote is not None:  # a deployment elsewhere decodes (Ray Serve): it queues its own generations
                queue = remote
            elif isinstance(predictor, AdapterPredictor):
                queue = self._shared_queue(predictor, settings)
            elif isinstance(predictor, GenerativePredictor):  # the predictor starts its own engine
                queue = predictor.start_engine(
                    max_queue_size=settings.max_queue_size,
                    max_batch_size=settings.max_batch_size,
                    name=name,
                    stats=stats,
                    on_stopped=lambda: self._drop_stopped(key),
                )
            else:
                queue = BatchQueue(
                    predictor.run_batch,
                    max_batch_size=settings.max_batch_size,
                    max_wait_ms=settings.max_wait_ms,
                    max_queue_size=settings.max_queue_size,
                    # How many batches at once is the model's to say (how it runs one), not a batch setting.
                    concurrency=getattr(predictor, "preferred_concurrency", 1),
                    name=name,
                    stats=stats,
                    run_parts=predictor.run_parts,
                    # A predictor that calls out (a Ray Serve replica) says it must never run on the event loop.
                    inline_seconds=getattr(predictor, "inline_seconds", INLINE_BATCH_SECONDS),
                )
            served = ServedModel(predictor, queue, settings, seconds)
            with self._lock:
                self.loaded[key] = served
            for hook in self.hooks.on_load:
                hook(served)
            self._evict_over_budget(keep=key)
            future.set_result(served)
            return served
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            del self._loading[key]

    def _shared_queue(self, predictor: AdapterPredictor, settings: BatchSettings) -> GenerationQueue:
        """The queue of the version's base, started by its first version (whose settings it keeps)."""
        shared = predictor.shared
        if shared.queue is None or not shared.queue.alive:
            shared.queue = GenerationQueue(
                shared.model,
                max_queue_size=settings.max_queue_size,
                max_batch_size=settings.max_batch_size,
                name=f"lora-base-{shared.key[:12]}",
                on_stopped=lambda: self._drop_stopped_base(shared.key),
            )
        return shared.queue

    def _drop_stopped_base(self, base: str) -> None:
        """A shared base's queue stopped unasked: every version on it reloads on its next request."""
        with self._lock:
            keys = [
                key
                for key, served in self.loaded.items()
                if isinstance(served.predictor, AdapterPredictor) and served.predictor.shared.key == base
            ]
        for key in keys:
            self._drop_stopped(key)

    def _drop_stopped(self, key: PoolKey) -> None:
        """From the worker thread of a queue that stopped unasked: unload the version, if it is still that one."""
        with self._lock:
            served = self.loaded.get(key)
        if served is not None and not served.alive:
            log.error("reloading %s:%s on its next request: its queue stopped serving", key[1], key[2])
            self.unload(key)

    def stopped(self) -> list[str]:
        """The loaded versions whose queue no longer serves (`model:version`): none, unless dropping one failed."""
        with self._lock:
            served_models = list(self.loaded.values())
        return [f"{s.version.model}:{s.version.version}" for s in served_models if not s.alive]

    def _default_settings(self, predictor: Predictor) -> BatchSettings:
        generative = isinstance(predictor, GenerativePredictor) or getattr(predictor, "generations", None) is not None
        if generative:  # generations decoded together; the queue counts requests
            return BatchSettings(self.generation_batch_size, 0.0, self.generation_queue_size)
        preferred = getattr(predictor, "preferred_batch_size", None)
        if preferred is None:
            return self.defaults
        return BatchSettings(preferred, self.defaults.max_wait_ms, max(self.defaults.max_queue_size, preferred))

    def _load(self, version: ModelVersion) -> tuple[Predictor, float]:
        directory = self.cache_dir / version.artifact_sha256
        started = time.perf_counter()
        if version.runtime != OPENVINO:  # the OpenVINO engine runs no torch: importing it costs ~160 MB of RSS
            apply_torch_threads(self.torch_threads)
        try:
            # Re-linked from verified blobs on every load; files derived from them (an ONNX export) stay.
            self.artifacts.materialize(version.files, directory)
            predictor: Predictor
            if self.share_bases and is_adapter_version(version):
                predictor = self.shared_bases.load(version, directory, resolve_device(self.device))
            else:
                predictor = self.loader(version, directory, self.device)
            # First-call costs (allocations, graph set-up) before traffic; an image model warms up on an image.
            predictor.run_batch([getattr(predictor, "warm_up_input", "warm-up")])
        except Exception as error:
            retry_after = getattr(error, "retry_after", None)
            message = str(error) if retry_after is not None else f"{type(error).__name__}: {error}"
            raise ModelLoadError(message, retry_after) from error
        elapsed = time.perf_counter() - started
        log.info("loaded %s:%s in %.3fs", version.model, version.version, elapsed)
        return predictor, elapsed

    def _evict_over_budget(self, keep: PoolKey) -> None:
        while self.memory_bytes > self.memory_budget_bytes:
            with self._lock:
                oldest = next((key for key in self.loaded if key != keep), None)
            if oldest is None:
                break
            self.unload(oldest)

    def unload(self, key: PoolKey) -> bool:
        """Drop a loaded version; safe from any thread. Requests still queued for it get an error."""
        with self._lock:
            served = self.loaded.pop(key, None)
        if served is None:
            return False
        for hook in self.hooks.on_unload:
            hook(served)
        predictor = served.predictor
        if isinstance(predictor, AdapterPredictor) and not self.shared_bases.release(predictor):
            # Other versions still decode on the base: only this adapter's generations end, and its weights go
            # once no row of the batch uses them.
            assert isinstance(served.queue, GenerationQueue)
            served.queue.retire(predictor.adapter, lambda: predictor.shared.remove(predictor.adapter))
            log.info("unloaded %s:%s (its base stays for other versions)", key[1], key[2])
            return True
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(served.queue.close()))
        log.info("unloaded %s:%s", key[1], key[2])
        return True

    def unload_version(self, version: ModelVersion) -> None:
        self.unload(key_of(version))

    async def close(self) -> None:
        with self._lock:
            served_models = list(self.loaded.values())
            self.loaded.clear()
        for queue in {id(served.queue): served.queue for served in served_models}.values():
            await queue.close()
