"""GGUF versions: a `.gguf` file checked for import (whole, a causal LM with a tokenizer, loadable by the engine)
and the registry entry of a version served from one, for imports and for the shipped foundation models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmaas.errors import Unprocessable
from openmaas.recipes.gguf import GGUF_FILE, GGUF_RECIPE, GgufInfo, InvalidGguf, read_gguf
from openmaas.runtime.engines import OPENVINO
from openmaas.storage.artifacts import manifest_sha256


def is_gguf_path(path: Path) -> bool:
    return path.suffix.lower() == ".gguf"


def check_gguf(path: Path) -> GgufInfo:
    """The file's metadata, or a 422 that says what is wrong with it."""
    if not path.is_file():
        raise Unprocessable(
            f"{str(path)!r} is not a file on the server: give the absolute path of a .gguf file on the server's disk",
            param="path",
            code="invalid_path",
        )
    try:
        return read_gguf(path)
    except InvalidGguf as error:
        raise Unprocessable(str(error), param="path", code="invalid_gguf") from None


def check_gguf_loads(path: Path) -> None:
    """Load the file once with the engine (the proof that it serves): an architecture the engine cannot build,
    or tensors it cannot read, are the importer's to hear about now, not every caller's later."""
    from openmaas.runtime.openvino_engine import load_openvino_model

    try:
        load_openvino_model(path)  # builds and compiles the model: an unknown architecture fails here
    except Exception as error:  # whatever the file holds, the answer is "the engine cannot serve it"
        raise Unprocessable(
            f"the OpenVINO engine cannot load {path.name}: {type(error).__name__}: {error}",
            param="path",
            code="invalid_gguf",
        ) from None


def gguf_version_spec(
    tenant_id: str, name: str, info: GgufInfo, files: dict[str, str], hyperparameters: dict[str, Any]
) -> dict[str, Any]:
    """What the registry stores for a text-generation version served from a GGUF file by the OpenVINO engine."""
    assert set(files) == {GGUF_FILE}
    return {
        "tenant_id": tenant_id,
        "model": name,
        "task": "text-generation",
        "recipe": GGUF_RECIPE,
        "runtime": OPENVINO,
        "labels": [],
        "metrics": {
            "context_length": info.context_length,
            "architecture": info.architecture,
            "chat_template": "own" if info.chat_template else "none",
        },
        "hyperparameters": hyperparameters,
        "dataset_id": None,
        "dataset_sha256": None,
        "job_id": None,
        "parameter_count": info.parameter_count,
        "artifact_sha256": manifest_sha256(files),
        "files": files,
    }
