"""v2 tensors, shared by REST and gRPC: what each task takes and gives (its signature), the domain results as
output tensors, and the binary encoding both transports use (Triton's binary extension over REST,
`raw_input_contents` / `raw_output_contents` over gRPC): numbers little-endian, row-major; BYTES as a u32-LE
length and the bytes, per element."""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.domain.entities import ModelVersion
from openmaas.domain.results import Classification, Embeddings
from openmaas.errors import InvalidRequest
from openmaas.protocol.kserve_v2 import MetadataTensor

TEXT_INPUT = "text"
IMAGE_INPUT = "image"  # an image model's input: encoded PNG/JPEG/WebP/GIF bytes per element (base64 in JSON)
# Bytes per element of each fixed-size datatype (BYTES has none).
ITEM_SIZE = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
    "FP16": 2, "FP32": 4, "FP64": 8,
}  # fmt: skip
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """An output tensor: `values` is a float array (FP32) or a list of strings (BYTES), flat or not."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[str]

    def data(self) -> list[Any]:
        """The flat, row-major values as JSON takes them."""
        if isinstance(self.values, np.ndarray):
            flat: list[Any] = self.values.astype(np.float32, copy=False).ravel().tolist()
            return flat
        return list(self.values)

    def raw(self) -> bytes:
        if isinstance(self.values, np.ndarray):
            return np.ascontiguousarray(self.values, dtype="<f4").tobytes()
        return encode_bytes(self.values)


def encode_bytes(items: list[str]) -> bytes:
    parts = []
    for item in items:
        encoded = item.encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def decode_bytes(raw: bytes, count: int, name: str) -> list[str]:
    """`count` BYTES elements from their binary form, each UTF-8 text; InvalidRequest when they don't add up."""
    return [_text(value, name, index) for index, value in enumerate(split_bytes(raw, count, name))]


def split_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    """`count` BYTES elements from their binary form, as bytes; InvalidRequest when they don't add up."""
    out = []
    offset, end = 0, len(raw)
    for index in range(count):
        if offset + 4 > end:
            raise InvalidRequest(f"input {name!r}: its binary data ends before element {index} of {count}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequest(f"input {name!r}: element {index} claims {length} bytes, past the end of the data")
        out.append(raw[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidRequest(f"input {name!r}: {end - offset} bytes left over after its {count} elements")
    return out


def _text(value: bytes, name: str, index: int) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"input {name!r}: element {index} is not UTF-8 text") from None


def element_count(shape: list[int], name: str) -> int:
    if any(not isinstance(size, int) or size < 0 for size in shape):
        raise InvalidRequest(f"input {name!r}: shape {shape} has a negative or non-integer dimension")
    return math.prod(shape)


def check_text_input(name: str, datatype: str, shape: list[int]) -> int:
    """The number of texts (or images) an input holds: one BYTES tensor named `text` (or `image`), shape [n] or
    [n, 1]. Which of the two the model takes is checked once it is resolved (`check_input_name`)."""
    if name not in (TEXT_INPUT, IMAGE_INPUT):
        raise InvalidRequest(
            f"unknown input {name!r}: a model takes one input, {TEXT_INPUT!r} or, for images, {IMAGE_INPUT!r} (BYTES)"
        )
    if datatype != "BYTES":
        raise InvalidRequest(f"input {name!r} has datatype {datatype}; the model expects BYTES")
    count = element_count(shape, name)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequest(f"input {name!r} has shape {shape}; the model expects [-1] (or [-1, 1])")
    return count


def input_name(version: ModelVersion) -> str:
    return IMAGE_INPUT if version.task == "image-classification" else TEXT_INPUT


def decode_base64_images(data: list[str], name: str) -> list[bytes]:
    """JSON carries BYTES as strings: an image input's elements are base64."""
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"input {name!r}: in JSON, each image is a base64 string") from None


def signature(version: ModelVersion) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
    """A version's inputs and outputs, from the registry alone (nothing is loaded)."""
    inputs = [MetadataTensor(name=input_name(version), datatype="BYTES", shape=[-1])]
    if version.task == "embeddings":
        dimensions = version.metrics.get("dimensions")
        width = dimensions if isinstance(dimensions, int) and dimensions > 0 else -1
        return inputs, [MetadataTensor(name="embedding", datatype="FP32", shape=[-1, width])]
    if version.task in ("text-classification", "image-classification"):
        classes = len(version.labels) or -1  # an imported classifier names its labels only once loaded
        labels = {"labels": list(version.labels)} if version.labels else None
        return inputs, [
            MetadataTensor(name="label", datatype="BYTES", shape=[-1]),
            MetadataTensor(name="probabilities", datatype="FP32", shape=[-1, classes], parameters=labels),
        ]
    raise InvalidRequest(
        f"model {version.model!r} is a {version.task} model, which v2 does not serve; use /v1/chat/completions",
        code="wrong_task",
    )


def output_names(version: ModelVersion) -> list[str]:
    return [tensor.name for tensor in signature(version)[1]]


def outputs_of(result: Classification | Embeddings) -> dict[str, Tensor]:
    if isinstance(result, Embeddings):
        vectors = result.vectors
        return {"embedding": Tensor("embedding", "FP32", list(vectors.shape), vectors)}
    probabilities = result.probabilities
    return {
        "label": Tensor("label", "BYTES", [len(probabilities)], result.best_labels()),
        "probabilities": Tensor("probabilities", "FP32", list(probabilities.shape), probabilities),
    }
