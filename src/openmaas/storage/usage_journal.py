"""This process's append-only journal of usage records: a request is answered once its record is on local
disk, and the records reach the database later, many to a transaction.

Each server process writes its own journal, `<root>/<id>/`, a directory of numbered segment files with one
JSON line per record, and holds an exclusive lock on `<root>/<id>.lock` for as long as it lives. The
current segment is sealed each time its records are handed to the database, and deleted once they are
committed. A process that dies leaves its journal behind and the kernel releases its lock; the next process
to start adopts it (`orphans`). Which segments already reached the database is the database's to say (a
high-water mark committed with the records), so a segment is applied once even if a process dies between
the commit and the deletion.

A record is one `write` to a file opened with O_APPEND: when it returns, the record is in the kernel's
page cache and survives the death of the process (SIGKILL, OOM). It is not fsynced: a power cut may lose
the records written since the last drain, as SQLite in WAL mode with synchronous=NORMAL may lose its last
transactions.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from openmaas.domain.entities import UsageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """Sealed records of one journal, in the order they were written."""

    journal: str
    sequence: int
    path: Path
    records: list[UsageRecord]


@dataclass
class Orphan:
    """The journal of a process that is gone, locked by the adopter until it is released."""

    journal: str
    segments: list[Segment]
    lock_fd: int = field(repr=False)
    directory: Path


def _segment_name(sequence: int) -> str:
    return f"{sequence:012d}.jsonl"


class UsageJournal:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.id = uuid.uuid4().hex
        self.directory = root / self.id
        self.directory.mkdir()
        self._lock_fd = self._publish_lock()
        self._mutex = threading.Lock()  # appends run on the event loop, seals on a drain thread
        self._fd: int | None = None
        self._sequence = 0
        self._records: list[UsageRecord] = []

    def _publish_lock(self) -> int:
        # Locked before it gets its name, so another process never sees this journal unlocked.
        temp = self.root / f".{self.id}.lock.tmp"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temp, self.root / f"{self.id}.lock")
        return fd

    def append(self, record: UsageRecord) -> None:
        """Write one record; raises OSError if it could not be written whole (the caller must not answer)."""
        line = orjson.dumps(vars(record)) + b"\n"
        with self._mutex:
            if self._fd is None:
                self._sequence += 1
                path = self.directory / _segment_name(self._sequence)
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            written = os.write(self._fd, line)
            if written != len(line):  # a full disk; the torn line is skipped when the segment is read
                raise OSError(f"usage journal: wrote {written} of {len(line)} bytes")
            self._records.append(record)

    def seal(self) -> Segment | None:
        """Close the current segment and return it; None if nothing was written since the last seal."""
        with self._mutex:
            if self._fd is None:
                return None
            os.close(self._fd)
            self._fd = None
            segment = Segment(self.id, self._sequence, self.directory / _segment_name(self._sequence), self._records)
            self._records = []
        return segment

    @staticmethod
    def discard(segment: Segment) -> None:
        """Delete a segment whose records are committed."""
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove this journal; only once every segment is discarded (what is left is adopted later)."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if not any(self.directory.glob("*.jsonl")):
            shutil.rmtree(self.directory, ignore_errors=True)
            (self.root / f"{self.id}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)

    def orphans(self) -> list[Orphan]:
        """Journals whose process is gone, each locked for the caller until `release`."""
        found = []
        for lock_path in sorted(self.root.glob("*.lock")):
            journal = lock_path.stem
            if journal == self.id:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # adopted by another process meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive
                os.close(fd)
                continue
            directory = self.root / journal
            segments = [self._read(journal, path) for path in sorted(directory.glob("*.jsonl"))]
            found.append(Orphan(journal, segments, fd, directory))
        return found

    def release(self, orphan: Orphan) -> None:
        """Delete an adopted journal once its records are committed."""
        shutil.rmtree(orphan.directory, ignore_errors=True)
        (self.root / f"{orphan.journal}.lock").unlink(missing_ok=True)
        os.close(orphan.lock_fd)

    @staticmethod
    def _read(journal: str, path: Path) -> Segment:
        records = []
        for number, line in enumerate(path.read_bytes().splitlines(keepends=True), 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no end of line")
                records.append(UsageRecord(**orjson.loads(line)))
            except (ValueError, TypeError) as error:
                # Only a write cut short (a full disk, a power cut) leaves a torn line; its request got no answer.
                log.warning("usage journal %s line %d skipped: %s", path, number, error)
        return Segment(journal, int(path.stem), path, records)
