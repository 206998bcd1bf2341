"""Registers the shipped foundation models under the system tenant, once, so they are served like any version."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from openmaas.domain.entities import SYSTEM_TENANT
from openmaas.recipes.foundation import (
    FOUNDATION_MODELS,
    FoundationModelMissing,
    foundation_directory,
    foundation_gguf,
)
from openmaas.recipes.gguf import GGUF_FILE, read_gguf
from openmaas.storage.artifacts import ArtifactStore, manifest_sha256
from openmaas.storage.metadata import MetadataStore

log = logging.getLogger(__name__)


def model_files(directory: Path) -> list[Path]:
    """The files that make a model: everything but dotfiles, READMEs and pickled weights."""
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
        and path.suffix not in {".md", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".onnx"}
    ]


def store_files(artifacts: ArtifactStore, directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): artifacts.put_file(path) for path in model_files(directory)}


def safetensors_parameters(directory: Path) -> int:
    """Parameter count from safetensors headers, without loading a single tensor."""
    from safetensors import safe_open

    total = 0
    for path in directory.rglob("*.safetensors"):
        with safe_open(str(path), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = handle.get_slice(key).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def _register(store: MetadataStore, artifacts: ArtifactStore, name: str, directory: Path) -> None:
    spec = FOUNDATION_MODELS[name]
    files = store_files(artifacts, directory)
    config = json.loads((directory / "config.json").read_text())
    metrics: dict[str, Any] = {"dimensions": config.get("hidden_size")} if spec.task == "embeddings" else {}
    if spec.task == "text-generation":
        metrics["context_length"] = config.get("max_position_embeddings")
    store.models.register_version(
        {
            "tenant_id": SYSTEM_TENANT,
            "model": name,
            "task": spec.task,
            "recipe": spec.recipe,
            "runtime": "onnx" if spec.task == "embeddings" else "torch",
            "labels": [],
            "metrics": metrics,
            "hyperparameters": {"description": spec.description, "package": spec.package},
            "dataset_id": None,
            "dataset_sha256": None,
            "job_id": None,
            "parameter_count": safetensors_parameters(directory),
            "artifact_sha256": manifest_sha256(files),
            "files": files,
        }
    )
    log.info("registered foundation model %s", name)


def _register_gguf(store: MetadataStore, artifacts: ArtifactStore, name: str, gguf_file: Path) -> None:
    """A GGUF foundation model is registered as its one file, served as it is by the OpenVINO engine."""
    from openmaas.services.gguf_models import gguf_version_spec

    spec = FOUNDATION_MODELS[name]
    info = read_gguf(gguf_file)
    files = {GGUF_FILE: artifacts.put_file(gguf_file)}
    hyperparameters = {"description": spec.description, "package": spec.package}
    store.models.register_version(gguf_version_spec(SYSTEM_TENANT, name, info, files, hyperparameters))
    log.info("registered foundation model %s from %s", name, gguf_file.name)


class FoundationModels:
    """Registers the shipped models named in the settings. Ready directories register at once; a GGUF file is
    registered as it is (the OpenVINO engine serves it), by a background thread: hashing and reading it take
    seconds that the server's start does not wait for."""

    def __init__(self, store: MetadataStore, artifacts: ArtifactStore, cache_dir: Path) -> None:
        self.store = store
        self.artifacts = artifacts
        self.cache_dir = cache_dir
        self.preparing: set[str] = set()
        self.failed: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    def ensure(self, names: list[str]) -> None:
        self.store.tenants.ensure(SYSTEM_TENANT, SYSTEM_TENANT)
        for name in names:
            spec = FOUNDATION_MODELS.get(name)
            if spec is None:
                log.warning("unknown foundation model %r; known: %s", name, ", ".join(FOUNDATION_MODELS))
                continue
            if self.store.models.get(SYSTEM_TENANT, name) is not None:
                continue
            if spec.gguf is None:
                try:
                    _register(self.store, self.artifacts, name, foundation_directory(name))
                except FoundationModelMissing as error:
                    log.warning("foundation model %s is not available: %s", name, error)
                continue
            self.preparing.add(name)
            thread = threading.Thread(target=self._prepare, args=(name,), name=f"prepare-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _prepare(self, name: str) -> None:
        try:
            _register_gguf(self.store, self.artifacts, name, foundation_gguf(name))
        except Exception as error:  # noqa: BLE001 (a missing package or a bad file only loses this model)
            log.exception("foundation model %s could not be prepared", name)
            self.failed[name] = f"{type(error).__name__}: {error}"
        finally:
            self.preparing.discard(name)

    def wait(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
