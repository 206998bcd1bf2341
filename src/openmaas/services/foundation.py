"""Registers the shipped foundation models under the system tenant, once, so they are served like any version."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from filelock import FileLock

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

CONVERTER = "openmaas.recipes.foundation_convert"


class ConversionFailed(RuntimeError):
    pass


def working_prefix(name: str) -> str:
    """The name prefix of a conversion's working directory in the cache."""
    return f".{name}.converting-"


def remove_abandoned_conversions(cache_dir: Path, name: str) -> None:
    """Delete the working directories that conversions of `name` left when their process died (a server
    stopped mid-conversion leaves one, a few hundred MB). The caller holds the model's conversion lock, so
    none of them belongs to a live conversion. `.{name}-xxxxxxxx` is where an earlier release worked."""
    earlier = re.compile(rf"\.{re.escape(name)}-[a-z0-9_]{{8}}")
    for leftover in sorted(cache_dir.iterdir()):
        if leftover.is_dir() and (leftover.name.startswith(working_prefix(name)) or earlier.fullmatch(leftover.name)):
            shutil.rmtree(leftover, ignore_errors=True)
            log.info("removed %s, left by a conversion that did not finish", leftover)


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
    if spec.task == "image-classification":  # an image-classifier directory (recipes/imagenet.py)
        metrics["embedding_dimensions"] = config["embedding_dimensions"]
        metrics["image_size"] = config["preprocessing"]["image_size"]
    store.models.register_version(
        {
            "tenant_id": SYSTEM_TENANT,
            "model": name,
            "task": spec.task,
            "recipe": spec.recipe,
            "runtime": "onnx" if spec.task == "embeddings" else "torch",
            "labels": config.get("labels", []) if spec.task == "image-classification" else [],
            "metrics": metrics,
            "hyperparameters": spec.card(),
            "dataset_id": None,
            "dataset_sha256": None,
            "job_id": None,
            "parameter_count": config.get("parameter_count") or safetensors_parameters(directory),
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
    """Registers the shipped models named in the settings, each by a background thread. Ready directories
    register at once; a GGUF file is registered as it is (the OpenVINO engine serves it; hashing and reading it
    take seconds that the server's start does not wait for); the image model's weights are converted the first
    time (seconds), into a cache that later starts reuse, by a child process that the thread waits for."""

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
            if not spec.converted:
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
            if FOUNDATION_MODELS[name].gguf is not None:  # served as it is: nothing to convert
                _register_gguf(self.store, self.artifacts, name, foundation_gguf(name))
                return
            directory = self.cache_dir / name
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # One conversion of a model at a time, across the processes that share the cache (every data
            # directory of the machine): a second one waits, then finds the model converted. The lock is the
            # kernel's (filelock's flock on Unix), released however its holder ends.
            with FileLock(self.cache_dir / f".{name}.lock"):
                remove_abandoned_conversions(self.cache_dir, name)
                if not (directory / "config.json").is_file():
                    log.info("converting foundation model %s (once; it is cached in %s)", name, directory)
                    with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=working_prefix(name)) as temporary:
                        self._convert(name, Path(temporary))
                        # config.json comes with the rename: a crash never leaves a half directory in place
                        os.replace(Path(temporary) / "model", directory)
            _register(self.store, self.artifacts, name, directory)
        except Exception as error:  # noqa: BLE001 (a missing package or a bad file only loses this model)
            log.exception("foundation model %s could not be prepared", name)
            self.failed[name] = f"{type(error).__name__}: {error}"
        finally:
            self.preparing.discard(name)

    def _convert(self, name: str, work: Path) -> None:
        """Converts into work/model in a child process; its stderr (work/convert.log) explains a failure.

        The child holds the read end of a pipe whose write end only this process has: when this process ends,
        however it ends (a stopping server, kill -9), the child reads end-of-file and leaves with it."""
        stderr_path = work / "convert.log"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", CONVERTER, name, str(work / "model")],
                env={**os.environ, "TQDM_DISABLE": "1"},  # the GGUF reader's progress bar, else in the error's tail
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        log.info("converting %s in child pid %s", name, process.pid)
        try:
            code = process.wait()
        finally:
            assert process.stdin is not None
            process.stdin.close()
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = stderr_path.read_text(errors="replace")[-2000:].strip()
            raise ConversionFailed(f"the conversion process {how}; its stderr ends with:\n{tail}")

    def wait(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
