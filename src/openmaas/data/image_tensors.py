"""An image dataset's stored form, written one image at a time and read back whole or a few rows at once.

The form is one safetensors file of uint8 HxWx3 tensors (`image.000000`, …) with the labels and source file names
in its metadata: pixels we decoded ourselves, never a pickle, never the uploaded bytes. `ImageTensorWriter` writes
the format itself (an 8-byte little-endian header length, the JSON header, then the tensors back to back), because
the library's writers take every tensor at once and a dataset's pixels are gigabytes; reading goes through
safetensors' `safe_open`, which maps the file and copies out only the tensors asked for.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image
from safetensors import safe_open

_CHUNK = 1 << 20


def tensor_name(index: int) -> str:
    return f"image.{index:06d}"


class ImageTensorWriter:
    """Appends images to a scratch body file as they come, then lays out `target` as header + body: memory holds
    one image and the header, never the dataset. Used as a context manager, it removes its files on an error."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self._body_path = target.with_name(target.name + ".body")
        self._body = self._body_path.open("wb")
        self._shapes: list[tuple[int, ...]] = []
        self._size = 0

    def append(self, image: np.ndarray) -> None:
        pixels = np.ascontiguousarray(image, dtype=np.uint8)
        self._body.write(pixels.data)
        self._shapes.append(pixels.shape)
        self._size += pixels.nbytes

    def finish(self, labels: list[str], files: list[str]) -> None:
        self._body.close()
        header: dict[str, object] = {}
        offset = 0
        for index, shape in enumerate(self._shapes):
            end = offset + int(np.prod(shape))
            header[tensor_name(index)] = {"dtype": "U8", "shape": list(shape), "data_offsets": [offset, end]}
            offset = end
        header["__metadata__"] = {"labels": json.dumps(labels), "files": json.dumps(files)}
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the format's alignment: tensors start on an 8-byte boundary
        with self.target.open("wb") as out, self._body_path.open("rb") as body:
            out.write(len(encoded).to_bytes(8, "little"))
            out.write(encoded)
            shutil.copyfileobj(body, out, _CHUNK)
        self._body_path.unlink()

    def __enter__(self) -> ImageTensorWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._body.close()
        self._body_path.unlink(missing_ok=True)
        if error is not None:
            self.target.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredImages:
    """A stored image dataset read back: images in order with their labels and source files."""

    images: list[np.ndarray]
    labels: list[str]
    files: list[str]


def _index(handle: object) -> tuple[list[str], list[str]]:
    metadata = handle.metadata()  # type: ignore[attr-defined]
    return json.loads(metadata["labels"]), json.loads(metadata["files"])


def load_image_dataset(path: Path) -> StoredImages:
    """Every image of a stored dataset (the file mapped, each tensor copied out once)."""
    with safe_open(str(path), framework="numpy") as handle:
        labels, files = _index(handle)
        images = [handle.get_tensor(tensor_name(i)) for i in range(len(labels))]
    return StoredImages(images, labels, files)


@dataclass(frozen=True)
class Thumbnail:
    label: str
    file: str
    width: int  # of the stored image
    height: int
    png: bytes  # at most `size` pixels on its longer side


def thumbnails(path: Path, per_class: int, size: int = 64) -> list[Thumbnail]:
    """The first `per_class` images of each class (labels in sorted order), as small PNGs; only those images are
    read from the file."""
    with safe_open(str(path), framework="numpy") as handle:
        labels, files = _index(handle)
        taken: Counter[str] = Counter()
        picked: list[Thumbnail] = []
        for index in sorted(range(len(labels)), key=lambda i: (labels[i], i)):
            label = labels[index]
            if taken[label] >= per_class:
                continue
            taken[label] += 1
            image = Image.fromarray(handle.get_tensor(tensor_name(index)))
            width, height = image.size
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            picked.append(Thumbnail(label, files[index], width, height, buffer.getvalue()))
    return picked
