"""Image datasets: decoding one untrusted image, reading a labelled zip of them, cleaning, storing and thumbnails.

An image is decoded by Pillow (PNG, JPEG, WebP, GIF's first frame), turned upright by its EXIF orientation and
converted to RGB. A dataset is stored as one safetensors file of uint8 HxWx3 tensors (`image.000000`, …)
with the labels and source file names in its metadata: pixels we decoded ourselves, never a pickle, never the
uploaded bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from openmaas.data.archives import ArchiveLimits, Member, read_members
from openmaas.data.cleaning import normalise_label
from openmaas.data.uploads import DatasetFileError, decode_utf8, read_json_objects

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
MIN_PER_CLASS = 2
EXAMPLES_PER_REASON = 5


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 25_000_000  # one image's width x height: a larger one is refused before it is decoded
    max_total_pixels: int = 400_000_000  # every image of a dataset together, decoded
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


class ImageError(ValueError):
    """An image that cannot be used; `code` names why (the message does not name the file: callers do)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Untrusted bytes → an upright RGB uint8 array (H, W, 3), or ImageError."""
    if not data:
        raise ImageError("the file is empty (0 bytes)", "empty_image")
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it, and raises beyond: both are a refusal here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"{width}x{height} pixels is over the limit of {max_pixels}", "image_too_large")
                image.seek(0)
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                rgb = upright.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"the image is over the limit of {max_pixels} pixels", "image_too_large") from None
    except UnidentifiedImageError:
        raise ImageError("not a PNG, JPEG, WebP or GIF image", "not_an_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"the image is corrupt or truncated ({error})", "corrupt_image") from None
    return np.asarray(rgb, dtype=np.uint8)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array resized (bilinear, aspect ratio not kept) to (size, size, 3)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """The image's central square (the aspect ratio kept), resized (bilinear) to (size, size, 3)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return square(image[top : top + side, left : left + side], size)


@dataclass
class ImageDataset:
    images: list[np.ndarray]
    labels: list[str]
    files: list[str]
    report: dict[str, Any]

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def to_safetensors(self) -> bytes:
        tensors = {f"image.{i:06d}": np.ascontiguousarray(image) for i, image in enumerate(self.images)}
        metadata = {"labels": json.dumps(self.labels), "files": json.dumps(self.files)}
        return save_safetensors(tensors, metadata=metadata)


@dataclass(frozen=True)
class StoredImages:
    """A stored image dataset read back: images in order with their labels and source files."""

    images: list[np.ndarray]
    labels: list[str]
    files: list[str]


def _metadata(blob: bytes) -> dict[str, str]:
    """The safetensors header's `__metadata__` (the format: an 8-byte little-endian length, then JSON)."""
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata


def load_image_dataset(blob: bytes) -> StoredImages:
    tensors = load_safetensors(blob)
    metadata = _metadata(blob)
    labels, files = json.loads(metadata["labels"]), json.loads(metadata["files"])
    return StoredImages([tensors[f"image.{i:06d}"] for i in range(len(labels))], labels, files)


def _manifest_rows(member: Member) -> list[tuple[int, str, Any]]:
    """(line, file, label) of a CSV with `file,label` columns or a JSONL of `{"file", "label"}` objects."""
    text = decode_utf8(member.data)
    if member.name.lower().endswith(".jsonl"):
        records = list(read_json_objects(text))
    else:
        reader = csv.DictReader(io.StringIO(text))
        try:
            records = [(number, row) for number, row in enumerate(reader, start=2)]
        except csv.Error as error:
            raise DatasetFileError(f"{member.name!r}: {error}", code="malformed_file") from None
    rows = []
    for line, record in records:
        if not isinstance(record.get("file"), str) or "label" not in record:
            raise DatasetFileError(
                f"{member.name!r} line {line}: each row needs a file and a label", code="missing_column"
            )
        rows.append((line, record["file"], record["label"]))
    return rows


def _labelled_members(members: list[Member]) -> tuple[list[tuple[Member, Any]], str, int]:
    """Each image member with its raw label, the layout read, and how many files a manifest left out."""
    manifests = [m for m in members if m.name.lower().endswith(MANIFEST_SUFFIXES)]
    if len(manifests) > 1:
        names = ", ".join(repr(m.name) for m in manifests)
        raise DatasetFileError(f"the archive has more than one CSV/JSONL manifest ({names})", code="malformed_file")
    if not manifests:
        labelled = []
        for member in members:
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2:
                raise DatasetFileError(
                    f"{member.name!r} is not in a class folder: put each image in a folder named by its label "
                    "(cat/1.png), or add a CSV/JSONL of file,label",
                    code="no_label",
                )
            labelled.append((member, parts[-2]))
        return labelled, "folders", 0
    manifest = manifests[0]
    base = PurePosixPath(manifest.name).parent
    by_path = {PurePosixPath(m.name): m for m in members if m is not manifest}
    labelled, listed = [], set()
    for line, file, label in _manifest_rows(manifest):
        path = base / PurePosixPath(file.replace("\\", "/"))
        if path not in by_path:
            raise DatasetFileError(
                f"{manifest.name!r} line {line}: {file!r} is not in the archive", code="missing_file"
            )
        listed.add(path)
        labelled.append((by_path[path], label))
    return labelled, "manifest", len(by_path) - len(listed)


def read_image_zip(data: bytes, limits: ImageLimits) -> ImageDataset:
    """A zip of class folders, or of images and one CSV/JSONL naming `file,label`, decoded and cleaned."""
    members = list(read_members(data, limits.archive))
    labelled, layout, unlisted = _labelled_members(members)
    images: list[np.ndarray] = []
    labels: list[str] = []
    files: list[str] = []
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    pixels = 0
    for member, raw_label in labelled:
        label = normalise_label(raw_label)
        if label is None:
            raise DatasetFileError(f"{member.name!r} has no label", code="no_label")
        try:
            image = decode_image(member.data, limits.max_pixels)
        except ImageError as error:
            raise DatasetFileError(f"{member.name!r}: {error}", code=error.code) from None
        pixels += image.shape[0] * image.shape[1]
        if pixels > limits.max_total_pixels:
            raise DatasetFileError(
                f"the images decode to more than {limits.max_total_pixels} pixels together (at {member.name!r})",
                code="archive_too_large",
            )
        # Equal pixels are the same image, whatever file format or name carried them.
        digest = hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()
        if digest in seen:
            duplicates.append(member.name)
            if len(duplicates) <= EXAMPLES_PER_REASON:
                duplicates[-1] = f"{member.name} (same as {seen[digest]})"
            continue
        seen[digest] = member.name
        images.append(image)
        labels.append(label)
        files.append(member.name)
    if not images:
        raise DatasetFileError("the archive has no images", code="no_rows")
    counts = Counter(labels)
    if len(counts) < 2:
        raise DatasetFileError(
            f"a classifier needs at least 2 classes; every image is labeled {next(iter(counts))!r}",
            code="too_few_classes",
        )
    small = sorted(label for label, n in counts.items() if n < MIN_PER_CLASS)
    if small:
        raise DatasetFileError(
            f"each class needs at least {MIN_PER_CLASS} distinct images; too few in "
            + ", ".join(f"{label!r} ({counts[label]})" for label in small),
            code="too_few_images",
        )
    heights = [image.shape[0] for image in images]
    widths = [image.shape[1] for image in images]
    report: dict[str, Any] = {
        "layout": layout,
        "input_images": len(labelled),
        "images": len(images),
        "width": {"min": min(widths), "max": max(widths)},
        "height": {"min": min(heights), "max": max(heights)},
        "dropped": {"duplicate": {"count": len(duplicates), "files": duplicates[:EXAMPLES_PER_REASON]}}
        if duplicates
        else {},
    }
    if layout == "manifest":
        report["unlisted_files"] = unlisted
    return ImageDataset(images, labels, files, report)


@dataclass(frozen=True)
class Thumbnail:
    label: str
    file: str
    width: int  # of the stored image
    height: int
    png: bytes  # at most `size` pixels on its longer side


def thumbnails(stored: StoredImages, per_class: int, size: int = 64) -> list[Thumbnail]:
    """The first `per_class` images of each class (labels in sorted order), as small PNGs."""
    taken: Counter[str] = Counter()
    picked: list[Thumbnail] = []
    for index in sorted(range(len(stored.labels)), key=lambda i: (stored.labels[i], i)):
        label = stored.labels[index]
        if taken[label] >= per_class:
            continue
        taken[label] += 1
        image = Image.fromarray(stored.images[index])
        width, height = image.size
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        picked.append(Thumbnail(label, stored.files[index], width, height, buffer.getvalue()))
    return picked
