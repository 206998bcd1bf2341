"""Builders of real image files and zip archives for the image tests: PNG/JPEG/WebP/GIF bytes, digits as PNGs."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid(width: int, height: int, seed: int, fmt: str = "PNG") -> bytes:
    """A small noisy image, distinct for each seed."""
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), fmt)


def zip_of(files: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def zip_with_link(name: str, target: str, files: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file, data in files:
            archive.writestr(file, data)
        link = zipfile.ZipInfo(name)
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, target)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def two_classes(count: int = 3, fmt: str = "PNG") -> list[tuple[str, bytes]]:
    return [
        (f"{label}/{i}.{fmt.lower()}", solid(12, 10, seed * 100 + i, fmt))
        for seed, label in enumerate("ab")
        for i in range(count)
    ]


def digits_zip(limit: int | None = None, scale: int = 1) -> tuple[bytes, np.ndarray, np.ndarray]:
    """scikit-learn's load_digits (1,797 real 8x8 handwritten digits) as PNGs in class folders; also the
    pixels and targets, in the same order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)[:limit]
    targets = digits.target[:limit]
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    files = [
        (f"digits/{t}/{i:04d}.png", encode(image)) for i, (image, t) in enumerate(zip(images, targets, strict=True))
    ]
    return zip_of(files), images, targets
