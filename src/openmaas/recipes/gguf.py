"""GGUF files (the format llama.cpp and Ollama serve): what one holds (architecture, context length, chat template,
parameter count), read with the `gguf` package without loading a tensor, and refused with a reason when the file
is not a complete GGUF causal LM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_FILE = "model.gguf"  # the name a GGUF version's one weight file has in its artifact manifest
GGUF_RECIPE = "gguf"  # the recipe a version read from a GGUF file is registered with (nothing trains it)
MAGIC = b"GGUF"


class InvalidGguf(ValueError):
    """The file cannot be served as a GGUF causal LM; the message says why."""


@dataclass(frozen=True)
class GgufInfo:
    architecture: str
    name: str | None
    context_length: int
    chat_template: str | None
    parameter_count: int
    file_type: int | None  # llama.cpp's quantisation code (3 is Q4_1)


def _field(fields: Any, key: str) -> Any:
    field = fields.get(key)
    return None if field is None else field.contents()


def read_gguf(path: Path) -> GgufInfo:
    """The file's metadata, after checking that it is a whole GGUF file: every tensor's data lies inside it."""
    if not path.is_file():
        raise InvalidGguf(f"{path} is not a file")
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise InvalidGguf(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as error:  # the reader's own errors on a cut or corrupt file are numpy's and struct's
        raise InvalidGguf(f"{path.name} is truncated or corrupt: {type(error).__name__}: {error}") from None
    size = path.stat().st_size
    if not reader.tensors:
        raise InvalidGguf(f"{path.name} holds no tensors")
    end = max(int(tensor.data_offset) + int(tensor.n_bytes) for tensor in reader.tensors)
    if end > size:
        raise InvalidGguf(f"{path.name} is truncated: its tensors need {end} bytes, the file has {size}")
    fields = reader.fields
    architecture = _field(fields, "general.architecture")
    if not isinstance(architecture, str):
        raise InvalidGguf(f"{path.name} names no architecture (general.architecture)")
    context = _field(fields, f"{architecture}.context_length")
    if not isinstance(context, int) or context < 1:
        raise InvalidGguf(f"{path.name} has no {architecture}.context_length")
    if _field(fields, "tokenizer.ggml.model") is None:
        raise InvalidGguf(f"{path.name} has no tokenizer (tokenizer.ggml.model): it cannot read or write text")
    template = _field(fields, "tokenizer.chat_template")
    name = _field(fields, "general.name")
    file_type = _field(fields, "general.file_type")
    return GgufInfo(
        architecture=architecture,
        name=name if isinstance(name, str) else None,
        context_length=context,
        chat_template=template if isinstance(template, str) and template else None,
        parameter_count=sum(int(tensor.n_elements) for tensor in reader.tensors),
        file_type=file_type if isinstance(file_type, int) else None,
    )


def gguf_in(directory: Path) -> Path | None:
    """The GGUF weight file of a version's directory, if it is a GGUF version."""
    path = directory / GGUF_FILE
    return path if path.is_file() else None
