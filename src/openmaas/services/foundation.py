"""Registers the shipped foundation models under the system tenant, once, so they are served like any version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from openmaas.domain.entities import SYSTEM_TENANT
from openmaas.recipes.foundation import FOUNDATION_MODELS, FoundationModelMissing, foundation_directory
from openmaas.storage.artifacts import LocalArtifactStore
from openmaas.storage.artifacts.local import manifest_sha256
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


def store_files(artifacts: LocalArtifactStore, directory: Path) -> dict[str, str]:
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


def ensure_foundation_models(store: MetadataStore, artifacts: LocalArtifactStore) -> None:
    store.tenants.ensure(SYSTEM_TENANT, SYSTEM_TENANT)
    for name, spec in FOUNDATION_MODELS.items():
        if store.models.get(SYSTEM_TENANT, name) is not None:
            continue
        try:
            directory = foundation_directory(name)
        except FoundationModelMissing as error:
            log.warning("foundation model %s is not available: %s", name, error)
            continue
        files = store_files(artifacts, directory)
        config = json.loads((directory / "config.json").read_text())
        metrics: dict[str, Any] = {"dimensions": config.get("hidden_size")}
        store.models.register_version(
            {
                "tenant_id": SYSTEM_TENANT,
                "model": name,
                "task": spec.task,
                "recipe": spec.recipe,
                "runtime": "onnx",
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
