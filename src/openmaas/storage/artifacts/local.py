"""Content-addressed blobs on the local disk: written atomically, named by sha256, verified when read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

CHUNK = 1 << 20


class ArtifactCorrupted(Exception):
    """A blob's bytes no longer hash to its name, or it is missing."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(files: Mapping[str, str]) -> str:
    """The hash of a multi-file artifact: the sha256 of its canonical {name: blob sha256} manifest."""
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def clean_temporary(self) -> int:
        """Remove temp files a crash left behind. Call only when nothing else writes (server start)."""
        removed = 0
        for path in self.tmp.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    def path_of(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        fd, name = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return self._commit(Path(name), hashlib.sha256(data).hexdigest())

    def put_file(self, source: Path) -> str:
        fd, name = tempfile.mkstemp(dir=self.tmp)
        os.close(fd)
        shutil.copyfile(source, name)
        return self._commit(Path(name), sha256_file(Path(name)))

    def _commit(self, temp: Path, sha256: str) -> str:
        """fsync the temp file, then rename it into place: readers see the whole blob or none."""
        try:
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
            target = self.path_of(sha256)
            target.parent.mkdir(exist_ok=True)
            if target.exists():
                return sha256
            os.replace(temp, target)
            _fsync_dir(target.parent)
            return sha256
        finally:
            temp.unlink(missing_ok=True)

    def put_directory(self, directory: Path) -> dict[str, str]:
        """Store every file of a directory; returns the manifest {relative name: sha256}."""
        return {
            str(path.relative_to(directory)): self.put_file(path)
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }

    def verify(self, sha256: str) -> Path:
        path = self.path_of(sha256)
        if not path.is_file():
            raise ArtifactCorrupted(f"blob {sha256} is missing")
        if sha256_file(path) != sha256:
            raise ArtifactCorrupted(f"blob {sha256} does not match its hash")
        return path

    def read_bytes(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        if not path.is_file():
            raise ArtifactCorrupted(f"blob {sha256} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupted(f"blob {sha256} does not match its hash")
        return data

    def materialize(self, files: Mapping[str, str], directory: Path) -> Path:
        """Lay a manifest out as a directory (verified hard links), e.g. for a loader that wants paths."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, sha256 in files.items():
            source = self.verify(sha256)
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return directory

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)
