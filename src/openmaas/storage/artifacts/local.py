"""The artifact store on the local disk: blobs written to a temp file, fsynced and renamed into place, so a
reader sees a whole blob or none; every read hashes the file again. Directories are made on first write."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openmaas.storage.artifacts.store import (
    ArtifactCorrupted,
    ArtifactStore,
    check_name,
    check_sha256,
    clean_directory,
    decode_ref,
    encode_ref,
    fsync_directory,
    sha256_file,
)


class LocalArtifactStore(ArtifactStore):
    """`root/blobs/ab/ab…` for blobs, `root/refs/NAME.json` for references, `root/NAME/` for a scope.

    Scopes share the top store's temporary directory, so one clean at start covers them all, and a rename from
    it stays on one file system."""

    def __init__(self, root: Path, tmp: Path | None = None) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.refs = root / "refs"
        self.tmp = tmp or root / "tmp"

    @property
    def scratch(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def clean_temporary(self) -> int:
        return clean_directory(self.scratch)

    def path_of(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / check_sha256(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        fd, name = tempfile.mkstemp(dir=self.scratch)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return self._commit(Path(name), hashlib.sha256(data).hexdigest())

    def put_file(self, source: Path) -> str:
        fd, name = tempfile.mkstemp(dir=self.scratch)
        os.close(fd)
        if source.resolve().is_relative_to(self.tmp.resolve()):
            # A file of our own scratch directory (a checkpoint being saved), which nothing changes any more:
            # a second name for it instead of a copy of gigabytes.
            os.unlink(name)
            os.link(source, name)
        else:
            shutil.copyfile(source, name)
        return self._commit(Path(name), sha256_file(Path(name)))

    def _commit(self, temp: Path, sha256: str) -> str:
        """fsync the temp file, then rename it into place: readers see the whole blob or none."""
        try:
            target = self.path_of(sha256)
            if target.exists():
                return sha256
            _rename_durably(temp, target)
            return sha256
        finally:
            temp.unlink(missing_ok=True)

    def local_file(self, sha256: str) -> Path:
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

    def list_blobs(self) -> list[str]:
        if not self.blobs.is_dir():
            return []
        return sorted(path.name for path in self.blobs.glob("*/*") if path.is_file())

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)

    def put_ref(self, name: str, document: Mapping[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(dir=self.scratch)
        with os.fdopen(fd, "wb") as handle:
            handle.write(encode_ref(document))
        try:
            _rename_durably(Path(temp), self.refs / f"{check_name(name)}.json")
        finally:
            Path(temp).unlink(missing_ok=True)

    def read_ref(self, name: str) -> dict[str, Any] | None:
        try:
            data = (self.refs / f"{check_name(name)}.json").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return decode_ref(name, data)

    def list_refs(self) -> list[str]:
        if not self.refs.is_dir():
            return []
        return sorted(path.stem for path in self.refs.glob("*.json"))

    def delete_ref(self, name: str) -> None:
        (self.refs / f"{check_name(name)}.json").unlink(missing_ok=True)

    def scope(self, name: str) -> LocalArtifactStore:
        return LocalArtifactStore(self.root / check_name(name), tmp=self.tmp)


def _rename_durably(temp: Path, target: Path) -> None:
    with temp.open("rb+") as handle:
        os.fsync(handle.fileno())
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, target)
    fsync_directory(target.parent)
