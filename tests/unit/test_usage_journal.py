"""The usage journal and its drain into the database: nothing an answered call recorded is lost or counted twice,
whichever moment a process dies at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from openmaas.domain.entities import Principal
from openmaas.services.usage import UsageRecorder
from openmaas.storage.metadata import MetadataStore, open_store
from openmaas.storage.usage_journal import UsageJournal

CALLER = Principal(tenant_id="t1", key_id="key_1", scopes=frozenset({"infer"}), key_limits={}, tenant_limits={})


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    opened = open_store(f"sqlite:///{tmp_path / 'meta.db'}")
    opened.tenants.ensure("t1", "one")
    return opened


def totals(store: MetadataStore) -> tuple[int, int]:
    rows = store.usage.summary("t1", None, None, None)
    return (rows[0]["records"], rows[0]["items"]) if rows else (0, 0)


async def record(recorder: UsageRecorder, calls: int, items: int = 3) -> None:
    for _ in range(calls):
        await recorder.record(CALLER, model="m", version=1, items=items, tokens=0, seconds=0.001)


def die(journal: UsageJournal) -> None:
    """What SIGKILL does to a journal: its files stay, its lock is released."""
    journal.seal()
    os.close(journal._lock_fd)


async def test_records_reach_the_database_when_drained_and_leave_no_files(store: MetadataStore, tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(store.usage, journal, drain_seconds=3600)
    await record(recorder, 40)
    assert totals(store) == (0, 0)  # in the journal only, until a drain
    recorder.drain()
    assert totals(store) == (40, 120)
    assert list(journal.directory.iterdir()) == []
    await recorder.close()
    assert list((tmp_path / "journal").iterdir()) == []


async def test_the_background_drain_moves_records_without_being_asked(store: MetadataStore, tmp_path: Path) -> None:
    recorder = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=0.01)
    await record(recorder, 5)
    for _ in range(200):
        if totals(store) == (5, 15):
            break
        await asyncio.sleep(0.01)
    assert totals(store) == (5, 15)
    await recorder.close()


async def test_the_journal_of_a_dead_process_is_committed_by_the_next_one(store: MetadataStore, tmp_path: Path) -> None:
    first = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=3600)
    await record(first, 7)
    first.drain()
    await record(first, 5)  # answered, journaled, not drained when the process dies
    die(first.journal)
    second = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=3600)
    assert second.recover() == 5
    assert totals(store) == (12, 36)
    assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == [second.journal.id, f"{second.journal.id}.lock"]
    await second.close()


async def test_a_segment_committed_just_before_the_crash_is_not_counted_twice(
    store: MetadataStore, tmp_path: Path
) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(store.usage, journal, drain_seconds=3600)
    await record(recorder, 4)
    segment = journal.seal()
    assert segment is not None
    store.usage.add_journaled(segment.journal, segment.sequence, segment.records)  # committed; file not yet deleted
    await record(recorder, 2)
    die(journal)
    assert UsageRecorder(store.usage, UsageJournal(tmp_path / "journal")).recover() == 2
    assert totals(store) == (6, 18)


async def test_a_live_process_journal_is_left_alone(store: MetadataStore, tmp_path: Path) -> None:
    alive = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=3600)
    await record(alive, 3)
    other = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=3600)
    assert other.recover() == 0
    assert totals(store) == (0, 0)
    alive.drain()
    assert totals(store) == (3, 9)


async def test_a_torn_last_line_is_skipped(store: MetadataStore, tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path / "journal")
    await record(UsageRecorder(store.usage, journal), 2)
    segment = journal.seal()
    assert segment is not None
    with segment.path.open("ab") as handle:
        handle.write(b'{"tenant_id": "t1", "key_id"')  # a write cut short: its call was never answered
    die(journal)
    assert UsageRecorder(store.usage, UsageJournal(tmp_path / "journal")).recover() == 2


@contextlib.contextmanager
def usage_table_refusing_writes(database: Path) -> Iterator[None]:
    """The test's own SQLite file refuses every usage insert until the block ends: a real failed commit."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute(
            "CREATE TRIGGER usage_down BEFORE INSERT ON usage_records BEGIN SELECT RAISE(ABORT, 'usage down'); END"
        )
        conn.commit()
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER usage_down")
            conn.commit()


def segment_lines(journal: UsageJournal) -> list[int]:
    return [len(path.read_bytes().splitlines()) for path in sorted(journal.directory.glob("*.jsonl"))]


async def test_a_failed_commit_keeps_the_records_and_the_next_drain_commits_them_in_order(
    store: MetadataStore, tmp_path: Path
) -> None:
    recorder = UsageRecorder(store.usage, UsageJournal(tmp_path / "journal"), drain_seconds=3600)
    await record(recorder, 3)
    with usage_table_refusing_writes(tmp_path / "meta.db"):
        with pytest.raises(IntegrityError, match="usage down"):
            recorder.drain()
        await record(recorder, 2, items=1)
        assert totals(store) == (0, 0)
        assert segment_lines(recorder.journal) == [3, 2]  # the failed segment is still on disk, and the new one
    recorder.drain()
    assert totals(store) == (5, 11)
    with store.engine.connect() as conn:
        items = conn.execute(text("SELECT items FROM usage_records ORDER BY id")).scalars().all()
    assert items == [3, 3, 3, 1, 1]
    assert list(recorder.journal.directory.iterdir()) == []
    recorder.drain()
    assert totals(store) == (5, 11)
