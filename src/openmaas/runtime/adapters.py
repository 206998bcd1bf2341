"""LoRA versions over one shared base: the pool loads the base files that several LoRA versions have in common
once, adds each version's adapter to it under a name of its own, and serves them all through one generation
queue, whose batches mix adapters (peft's `adapter_names`). The base's memory is counted once.

A LoRA version is a causal-LM directory with `adapter/` (recipes/lora.py's unmerged export): its other files
are the base's, content-addressed, so two versions share a base exactly when those files have the same digests.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.domain.entities import ModelVersion
from openmaas.recipes.generative import ADAPTER_DIRECTORY, CausalLM, load_causal_lm
from openmaas.runtime.generation import GenerationQueue
from openmaas.runtime.predictors import GenerativePredictor

log = logging.getLogger(__name__)

BaseKey = str


def is_adapter_version(version: ModelVersion) -> bool:
    return version.task == "text-generation" and f"{ADAPTER_DIRECTORY}/adapter_config.json" in version.files


def base_key(version: ModelVersion) -> BaseKey:
    """The digest of the version's base: every file outside `adapter/`, by path and content."""
    base = sorted((path, sha) for path, sha in version.files.items() if not path.startswith(f"{ADAPTER_DIRECTORY}/"))
    return hashlib.sha256(repr(base).encode()).hexdigest()


def adapter_name(version: ModelVersion) -> str:
    """A name peft takes (no dots: it names modules) that no other loaded version has."""
    ident = f"{version.tenant_id}/{version.model}/{version.version}/{version.artifact_sha256}"
    return "lora_" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def _parameter_bytes(model: Any, keep: Callable[[str], bool]) -> int:
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if keep(name))


@dataclass
class SharedBase:
    """One loaded base with the adapters of the versions that use it, and the queue that decodes them all."""

    key: BaseKey
    model: CausalLM
    base_bytes: int
    adapter_bytes: dict[str, int] = field(default_factory=dict)
    queue: GenerationQueue | None = None

    def remove(self, name: str) -> None:
        """Delete an adapter's weights (from the queue's worker, once no row of the batch uses it)."""
        with self.model.lock:
            self.model.model.delete_adapter(name)


class AdapterPredictor(GenerativePredictor):
    """A LoRA version served through a shared base: its memory is its adapter's; the base's is the pool's."""

    def __init__(self, version: ModelVersion, shared: SharedBase, adapter: str) -> None:
        super().__init__(version, shared.model)
        self.shared = shared
        self.adapter = adapter
        self.memory_bytes = shared.adapter_bytes[adapter]

    def run_batch(self, items: list[Any]) -> list[Any]:
        import torch

        out = []
        with torch.inference_mode():
            for text in items:
                logits, _ = self.causal_lm.prefill(self.causal_lm.encode(text, chat=False), self.adapter)
                out.append(self.causal_lm.decode([int(torch.argmax(logits))]))
        return out


class SharedBases:
    """The loaded bases, by the digest of their files; safe from the pool's loading threads."""

    def __init__(self) -> None:
        self.bases: dict[BaseKey, SharedBase] = {}
        self._lock = threading.Lock()  # guards `bases` and the adapter lists; held briefly (the event loop reads)
        self._loading = threading.Lock()  # one load at a time, on the pool's loading threads only

    @property
    def memory_bytes(self) -> int:
        with self._lock:
            return sum(shared.base_bytes for shared in self.bases.values())

    def load(self, version: ModelVersion, directory: Path, device: str) -> AdapterPredictor:
        """Add the version's adapter to its base, loading the base first if no loaded version shares it."""
        key, name = base_key(version), adapter_name(version)
        with self._loading:
            with self._lock:
                shared = self.bases.get(key)
            if shared is None:
                model = load_causal_lm(directory, device, adapter_name=name)
                shared = SharedBase(key, model, _parameter_bytes(model.model, lambda n: "lora_" not in n))
            elif name not in shared.adapter_bytes:
                peft_model = shared.model.model
                with shared.model.lock:
                    peft_model.load_adapter(directory / ADAPTER_DIRECTORY, adapter_name=name, is_trainable=False)
                    peft_model.eval()
            adapter_bytes = _parameter_bytes(shared.model.model, lambda n: f".{name}." in n)
            with self._lock:
                shared.adapter_bytes[name] = adapter_bytes
                self.bases[key] = shared  # again, should its last version have been released meanwhile
        log.info("adapter %s of %s:%s on base %s", name, version.model, version.version, key[:12])
        return AdapterPredictor(version, shared, name)

    def release(self, predictor: AdapterPredictor) -> bool:
        """The version is unloaded: forget its adapter. True when it was the base's last (the base goes too:
        the caller closes its queue); otherwise the caller retires the adapter from the queue."""
        shared = predictor.shared
        with self._lock:
            shared.adapter_bytes.pop(predictor.adapter, None)
            if shared.adapter_bytes:
                return False
            if self.bases.get(shared.key) is shared:
                del self.bases[shared.key]
            return True
