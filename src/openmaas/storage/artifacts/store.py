"""The artifact store interface: content-addressed blobs and small named references, and what every store shares.

A blob is named by the sha256 of its bytes and verified against it when read: a blob whose bytes no longer match
is an `ArtifactCorrupted` error, never served. Writes are atomic: after a crash a blob is either whole under its
name or absent. A reference (`put_ref`) is a small JSON document under a name of our choosing (a checkpoint's
manifest), written atomically too and verified by the hash it carries. `scope` gives a store of its own
namespace, so that one job's checkpoints can be listed and deleted without touching anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED = {"blobs", "refs", "tmp"}  # the directories (or key prefixes) a store keeps its own things in


class ArtifactCorrupted(Exception):
    """A blob's or reference's bytes no longer hash to what they should, or it is missing."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(files: Mapping[str, str]) -> str:
    """The hash of a multi-file artifact: the sha256 of its canonical {name: blob sha256} manifest."""
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()


def check_sha256(sha256: str) -> str:
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return sha256


def check_name(name: str) -> str:
    """Reference and scope names become file names and key parts: plain characters only."""
    if not NAME.fullmatch(name) or name in RESERVED:
        raise ValueError(f"invalid artifact name {name!r}")
    return name


def encode_ref(document: Mapping[str, Any]) -> bytes:
    body = json.dumps(document, sort_keys=True)
    return json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "body": body}).encode()


def decode_ref(name: str, data: bytes) -> dict[str, Any]:
    try:
        wrapper = json.loads(data)
        body = wrapper["body"]
        intact = hashlib.sha256(body.encode()).hexdigest() == wrapper["sha256"]
    except (ValueError, KeyError, TypeError, AttributeError):
        intact = False
    if not intact:
        raise ArtifactCorrupted(f"reference {name} does not match its hash")
    document: dict[str, Any] = json.loads(body)
    return document


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_directory(path: Path) -> int:
    """Remove everything in a scratch directory (what a crash left behind); returns how many entries went."""
    if not path.is_dir():
        return 0
    removed = 0
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


class ArtifactStore(ABC):
    """Content-addressed blobs and named references. Everything above `storage` sees only this class."""

    @property
    @abstractmethod
    def scratch(self) -> Path:
        """A local directory for temporary files (created on demand): a loader's staging copy, an export."""

    @abstractmethod
    def put_bytes(self, data: bytes) -> str:
        """Store bytes; returns their sha256. Storing what is already there costs no second copy."""

    @abstractmethod
    def put_file(self, source: Path) -> str:
        """Store a file's bytes; returns their sha256."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, sha256: str) -> bytes:
        """A blob's bytes, verified: `ArtifactCorrupted` when missing or when they do not match the name."""

    @abstractmethod
    def local_file(self, sha256: str) -> Path:
        """A verified local file with the blob's bytes (the blob itself, or a read-cache copy), for loaders
        that want paths. Never write to it."""

    @abstractmethod
    def list_blobs(self) -> list[str]:
        """The sha256 of every blob in this store's namespace (not its scopes'), sorted."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob; removing a missing one is no error."""

    @abstractmethod
    def put_ref(self, name: str, document: Mapping[str, Any]) -> None:
        """Write a small JSON document under `name`, atomically, replacing any before it."""

    @abstractmethod
    def read_ref(self, name: str) -> dict[str, Any] | None:
        """The document under `name`, verified; None when there is none."""

    @abstractmethod
    def list_refs(self) -> list[str]:
        """The names of this namespace's references, sorted."""

    @abstractmethod
    def delete_ref(self, name: str) -> None: ...

    @abstractmethod
    def scope(self, name: str) -> ArtifactStore:
        """A store of its own namespace inside this one (for one job's checkpoints), sharing its local files."""

    @abstractmethod
    def clean_temporary(self) -> int:
        """Remove what interrupted writes left behind. Call only when nothing else writes (server start)."""

    def put_directory(self, directory: Path) -> dict[str, str]:
        """Store every file of a directory; returns the manifest {relative name: sha256}."""
        return {
            str(path.relative_to(directory)): self.put_file(path)
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }

    def materialize(self, files: Mapping[str, str], directory: Path) -> Path:
        """Lay a manifest out as a directory (verified hard links), e.g. for a loader that wants paths."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, sha256 in files.items():
            source = self.local_file(sha256)
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return directory
