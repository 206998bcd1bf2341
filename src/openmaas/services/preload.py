"""Preloading: the models named in OPENMAAS_PRELOAD_MODELS are loaded into the serving pool in the background
after start, so that no user waits on a cold model; what is still loading is what /readyz reports."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from openmaas.domain.entities import Principal
from openmaas.errors import OpenMaaSError
from openmaas.services.inference import InferenceService

log = logging.getLogger(__name__)

WAIT_FOR_PREPARATION_S = 1.0  # how often to look whether a foundation model's conversion has registered it


@dataclass
class PreloadStatus:
    loading: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.loading


class Preloader:
    """Loads each named model as `principal` (the bootstrap admin's tenant) reads it: a foundation model, or
    one of that tenant's own. A model that cannot load is reported as failed, and the others still load."""

    def __init__(
        self, inference: InferenceService, principal: Principal, names: list[str], preparing: set[str]
    ) -> None:
        self.inference = inference
        self.principal = principal
        self.preparing = preparing  # foundation models still being converted: they are waited for
        self.status = PreloadStatus(loading=list(dict.fromkeys(names)))

    async def run(self) -> None:
        for name in list(self.status.loading):
            try:
                while name.partition(":")[0] in self.preparing:
                    await asyncio.sleep(WAIT_FOR_PREPARATION_S)
                version = await asyncio.to_thread(self.inference.registry.resolve, self.principal, name)
                await self.inference.acquire(version)
            except OpenMaaSError as error:
                log.warning("could not preload %s: %s", name, error.message)
                self.status.failed[name] = error.message
            except Exception as error:  # noqa: BLE001 (one model that fails to load must not stop the others)
                log.exception("could not preload %s", name)
                self.status.failed[name] = f"{type(error).__name__}: {error}"
            else:
                log.info("preloaded %s", name)
                self.status.loaded.append(name)
            finally:
                self.status.loading.remove(name)
