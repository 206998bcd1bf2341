"""The model pool: loads versions on first use (one load shared by concurrent callers), evicts LRU by memory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openmaas.domain.entities import ModelVersion
from openmaas.runtime.predictors import Predictor, load_predictor
from openmaas.storage.artifacts import LocalArtifactStore

log = logging.getLogger(__name__)

PoolKey = tuple[str, str, int, str]


class ModelLoadError(Exception):
    """A version could not be loaded (missing or corrupt artifact, bad config)."""


def key_of(version: ModelVersion) -> PoolKey:
    return (version.tenant_id, version.model, version.version, version.artifact_sha256)


@dataclass
class LoadedModel:
    predictor: Predictor
    load_seconds: float
    last_used: float


class ModelPool:
    def __init__(
        self,
        artifacts: LocalArtifactStore,
        cache_dir: Path,
        *,
        device: str,
        memory_budget_bytes: int,
        loader: Callable[[ModelVersion, Path, str], Predictor] = load_predictor,
    ) -> None:
        self.artifacts = artifacts
        self.cache_dir = cache_dir
        self.device = device
        self.memory_budget_bytes = memory_budget_bytes
        self.loader = loader
        self.loaded: OrderedDict[PoolKey, LoadedModel] = OrderedDict()
        self._loading: dict[PoolKey, asyncio.Future[LoadedModel]] = {}
        self.on_evict: list[Callable[[PoolKey], None]] = []

    @property
    def memory_bytes(self) -> int:
        return sum(entry.predictor.memory_bytes for entry in self.loaded.values())

    async def acquire(self, version: ModelVersion) -> Predictor:
        key = key_of(version)
        entry = self.loaded.get(key)
        if entry is None:
            entry = await self._load_shared(key, version)
        entry.last_used = time.monotonic()
        self.loaded.move_to_end(key)
        return entry.predictor

    async def _load_shared(self, key: PoolKey, version: ModelVersion) -> LoadedModel:
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LoadedModel] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            entry = await asyncio.to_thread(self._load, version)
            self.loaded[key] = entry
            self._evict_over_budget(keep=key)
            future.set_result(entry)
            return entry
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            del self._loading[key]

    def _load(self, version: ModelVersion) -> LoadedModel:
        directory = self.cache_dir / version.artifact_sha256
        started = time.perf_counter()
        try:
            # Re-linked from verified blobs on every load; files derived from them (an ONNX export) stay.
            self.artifacts.materialize(version.files, directory)
            predictor = self.loader(version, directory, self.device)
        except Exception as error:
            raise ModelLoadError(f"{type(error).__name__}: {error}") from error
        elapsed = time.perf_counter() - started
        log.info("loaded %s:%s in %.3fs", version.model, version.version, elapsed)
        return LoadedModel(predictor, elapsed, time.monotonic())

    def _evict_over_budget(self, keep: PoolKey) -> None:
        while self.memory_bytes > self.memory_budget_bytes and len(self.loaded) > 1:
            oldest = next(iter(self.loaded))
            if oldest == keep:
                break
            self.unload(oldest)

    def unload(self, key: PoolKey) -> bool:
        entry = self.loaded.pop(key, None)
        if entry is None:
            return False
        for callback in self.on_evict:
            callback(key)
        log.info("unloaded %s:%s", key[1], key[2])
        return True

    def unload_version(self, version: ModelVersion) -> bool:
        return self.unload(key_of(version))
