"""Reads an uploaded zip archive safely: bounds on files, sizes and ratio, no links, no paths out of the archive.

Bounds are checked twice: from the central directory before anything is inflated, and again while inflating,
because a crafted archive can declare small sizes and hold more.
"""

from __future__ import annotations

import io
import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from openmaas.data.uploads import DatasetFileError

_CHUNK = 1 << 16

# What reading a member may raise: zlib.error and LZMAError are a damaged stream; RuntimeError is zipfile's
# refusal of an encrypted member.
UNREADABLE_MEMBER = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 100_000
    max_uncompressed_bytes: int = 1 << 30
    max_ratio: float = 200.0  # uncompressed/compressed of one member; PNG and JPEG barely compress further


@dataclass(frozen=True)
class Member:
    name: str  # the member's path inside the archive, as written there
    data: bytes


def _ignored(path: PurePosixPath) -> bool:
    """Folders macOS and Windows add to a zip of a folder, and hidden files such as .DS_Store."""
    return path.parts[0] == "__MACOSX" or any(part.startswith(".") for part in path.parts)


def _check_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetFileError(f"{name!r}: the path leaves the archive", code="unsafe_path")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetFileError(f"{name!r}: links are not accepted in an archive", code="link_in_archive")
    if info.flag_bits & 0x1:
        raise DatasetFileError(f"{name!r}: encrypted members are not accepted", code="encrypted_archive")
    return path


def open_archive(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DatasetFileError(
            "an image dataset must be a .zip archive (class folders, or images and a CSV/JSONL of file,label)",
            code="malformed_file",
        ) from None


class ArchiveReader:
    """An archive whose central directory passed the bounds: its files listed, and read one at a time, so that a
    caller holds one member's bytes at once rather than the whole inflated archive."""

    def __init__(self, data: bytes, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.archive = open_archive(data)
        self.entries: list[zipfile.ZipInfo] = []  # the files (folders and ignored files left out), in order
        declared = 0
        for info in self.archive.infolist():
            path = _check_path(info)
            if info.is_dir() or not path.parts or _ignored(path):
                continue
            self.entries.append(info)
            if len(self.entries) > limits.max_files:
                raise DatasetFileError(
                    f"the archive has more than {limits.max_files} files", code="too_many_files", param="file"
                )
            declared += info.file_size
            if declared > limits.max_uncompressed_bytes:
                raise DatasetFileError(
                    f"the archive inflates to more than {limits.max_uncompressed_bytes} bytes",
                    code="archive_too_large",
                )
            if info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise DatasetFileError(
                    f"{info.filename!r}: compressed {info.compress_size} bytes inflate to {info.file_size}, a ratio "
                    f"over {limits.max_ratio:g} (a zip bomb?)",
                    code="archive_too_large",
                )
        self.inflated = 0  # bytes inflated so far, over every read

    def read(self, info: zipfile.ZipInfo) -> Member:
        """One member, whole, its inflated bytes counted against the archive's bound."""
        chunks: list[bytes] = []
        read = 0
        try:
            with self.archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    read += len(chunk)
                    self.inflated += len(chunk)
                    # More than declared: a lying header. zipfile stops at the declared size, this is belt and braces.
                    if read > info.file_size or self.inflated > self.limits.max_uncompressed_bytes:
                        raise DatasetFileError(
                            f"{info.filename!r}: inflates past its declared size or the archive's bound",
                            code="archive_too_large",
                        )
                    chunks.append(chunk)
        except UNREADABLE_MEMBER as error:
            raise DatasetFileError(
                f"{info.filename!r}: cannot be read from the archive ({error})", code="malformed_file"
            ) from None
        return Member(info.filename, b"".join(chunks))
