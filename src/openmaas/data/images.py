"""Image datasets: decoding one untrusted image, and reading a labelled zip of them into the stored form, cleaned.

An image is decoded by Pillow (PNG, JPEG, WebP, GIF's first frame), turned upright by its EXIF orientation and
converted to RGB. A zip is read one member at a time and each image written out as soon as it is decoded
(`image_tensors.ImageTensorWriter`), so an upload holds one image in memory, not the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from openmaas.data.archives import ArchiveLimits, ArchiveReader, Member
from openmaas.data.cleaning import normalise_label
from openmaas.data.image_tensors import ImageTensorWriter
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
    """What reading a zip wrote: the labels and source files of the images, in order, and the report."""

    labels: list[str]
    files: list[str]
    report: dict[str, Any]

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


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


def _labelled_entries(reader: ArchiveReader) -> tuple[list[tuple[zipfile.ZipInfo, Any]], str, int]:
    """Each image member with its raw label, the layout read, and how many files a manifest left out."""
    entries = reader.entries
    manifests = [info for info in entries if info.filename.lower().endswith(MANIFEST_SUFFIXES)]
    if len(manifests) > 1:
        names = ", ".join(repr(info.filename) for info in manifests)
        raise DatasetFileError(f"the archive has more than one CSV/JSONL manifest ({names})", code="malformed_file")
    if not manifests:
        labelled = []
        for info in entries:
            parts = PurePosixPath(info.filename).parts
            if len(parts) < 2:
                raise DatasetFileError(
                    f"{info.filename!r} is not in a class folder: put each image in a folder named by its label "
                    "(cat/1.png), or add a CSV/JSONL of file,label",
                    code="no_label",
                )
            labelled.append((info, parts[-2]))
        return labelled, "folders", 0
    manifest = manifests[0]
    base = PurePosixPath(manifest.filename).parent
    by_path = {PurePosixPath(info.filename): info for info in entries if info is not manifest}
    labelled, listed = [], set()
    for line, file, label in _manifest_rows(reader.read(manifest)):
        path = base / PurePosixPath(file.replace("\\", "/"))
        if path not in by_path:
            raise DatasetFileError(
                f"{manifest.filename!r} line {line}: {file!r} is not in the archive", code="missing_file"
            )
        listed.add(path)
        labelled.append((by_path[path], label))
    return labelled, "manifest", len(by_path) - len(listed)


def read_image_zip(data: bytes, limits: ImageLimits, target: Path) -> ImageDataset:
    """A zip of class folders, or of images and one CSV/JSONL naming `file,label`, decoded, cleaned and written to
    `target` in the stored form (removed again when the archive is refused)."""
    reader = ArchiveReader(data, limits.archive)
    labelled, layout, unlisted = _labelled_entries(reader)
    labels: list[str] = []
    files: list[str] = []
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    pixels = 0
    widths, heights = (1 << 31, 0), (1 << 31, 0)  # (min, max)
    with ImageTensorWriter(target) as writer:
        for info, raw_label in labelled:
            name = info.filename
            label = normalise_label(raw_label)
            if label is None:
                raise DatasetFileError(f"{name!r} has no label", code="no_label")
            try:
                image = decode_image(reader.read(info).data, limits.max_pixels)
            except ImageError as error:
                raise DatasetFileError(f"{name!r}: {error}", code=error.code) from None
            height, width = image.shape[:2]
            pixels += height * width
            if pixels > limits.max_total_pixels:
                raise DatasetFileError(
                    f"the images decode to more than {limits.max_total_pixels} pixels together (at {name!r})",
                    code="archive_too_large",
                )
            # Equal pixels are the same image, whatever file format or name carried them.
            digest = hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()
            if digest in seen:
                duplicates.append(name)
                if len(duplicates) <= EXAMPLES_PER_REASON:
                    duplicates[-1] = f"{name} (same as {seen[digest]})"
                continue
            seen[digest] = name
            writer.append(image)
            labels.append(label)
            files.append(name)
            widths = (min(widths[0], width), max(widths[1], width))
            heights = (min(heights[0], height), max(heights[1], height))
        if not labels:
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
        writer.finish(labels, files)
    report: dict[str, Any] = {
        "layout": layout,
        "input_images": len(labelled),
        "images": len(labels),
        "width": {"min": widths[0], "max": widths[1]},
        "height": {"min": heights[0], "max": heights[1]},
        "dropped": {"duplicate": {"count": len(duplicates), "files": duplicates[:EXAMPLES_PER_REASON]}}
        if duplicates
        else {},
    }
    if layout == "manifest":
        report["unlisted_files"] = unlisted
    return ImageDataset(labels, files, report)
