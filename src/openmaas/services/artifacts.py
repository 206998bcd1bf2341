"""Artifact downloads: a version's weights as one safetensors file, or its ONNX graph."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from openmaas.domain.entities import ModelVersion, Principal
from openmaas.errors import InvalidRequest
from openmaas.services.inference import InferenceService
from openmaas.services.registry import RegistryService
from openmaas.storage.artifacts import ArtifactStore


class ArtifactService:
    def __init__(
        self, registry: RegistryService, inference: InferenceService, artifacts: ArtifactStore, cache_dir: Path
    ) -> None:
        self.registry = registry
        self.inference = inference
        self.artifacts = artifacts
        self.cache_dir = cache_dir

    async def export(self, principal: Principal, ref: str, fmt: str) -> tuple[ModelVersion, Path]:
        version = await asyncio.to_thread(self.registry.resolve, principal, ref)  # the database: off the loop
        if fmt == "onnx":
            path = (await self.inference.acquire(version)).onnx_path
            if path is None:
                raise InvalidRequest(
                    f"{version.model}:{version.version} ({version.recipe}) has no ONNX form: ONNX export is for "
                    "transformer-based versions served with the onnx runtime, and image models trained with runtime "
                    "'onnx' (served on a CPU)",
                    param="format",
                    code="onnx_unavailable",
                )
            # The served graph keeps its weights in a data file beside it; a download is one file.
            from openmaas.recipes.encoders import single_file  # here: it imports torch, which an idle server has not

            target = self.cache_dir / f"{version.artifact_sha256}.{version.runtime}.onnx"
            return version, await asyncio.to_thread(single_file, Path(path), target)
        if not any(name.endswith(".safetensors") for name in version.files):
            raise InvalidRequest(
                f"{version.model}:{version.version} has no safetensors weights: it is served from "
                f"{', '.join(sorted(version.files))} ({version.runtime} engine)",
                param="format",
                code="safetensors_unavailable",
            )
        return version, await asyncio.to_thread(self._safetensors, version)

    def _safetensors(self, version: ModelVersion) -> Path:
        weights = {name: sha for name, sha in version.files.items() if name.endswith(".safetensors")}
        if len(weights) == 1:
            return self.artifacts.local_file(next(iter(weights.values())))
        target = self.cache_dir / f"{version.artifact_sha256}.safetensors"
        if not target.is_file():
            from safetensors.numpy import load_file, save_file

            merged = {}
            for name, sha in sorted(weights.items()):
                prefix = name.removesuffix(".safetensors").replace("/", ".")
                merged.update(
                    {f"{prefix}.{key}": value for key, value in load_file(self.artifacts.local_file(sha)).items()}
                )
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.cache_dir)
            os.close(fd)
            save_file(merged, temp)
            os.replace(temp, target)
        return target
