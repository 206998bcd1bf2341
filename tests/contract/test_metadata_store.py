"""One suite for the metadata store, run against SQLite and the Postgres on 127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from openmaas.domain.entities import ApiKey, Batch, BatchLine, Dataset, File, FineTune, Job, UsageRecord
from openmaas.domain.ids import new_id, now
from openmaas.domain.jobs import JobStatus
from openmaas.domain.refs import ModelRef
from openmaas.storage.metadata import MetadataStore, open_store
from openmaas.storage.metadata.repositories import AlreadyExists

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_url() -> Iterator[str]:
    admin = sa.create_engine(POSTGRES)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError:
        admin.dispose()
        pytest.skip("Postgres at 127.0.0.1:5432 is unreachable")
    schema = f"t_{secrets.token_hex(6)}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop schema {schema} cascade"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'meta.db'}"])
    else:
        urls = _postgres_url()
    url = next(urls)
    opened = open_store(url)
    opened.tenants.ensure("t1", "one")
    opened.tenants.ensure("t2", "two")
    try:
        yield opened
    finally:
        opened.close()
        next(urls, None)


def dataset(tenant: str = "t1") -> Dataset:
    return Dataset(new_id("ds"), tenant, "d", "csv", "ab" * 32, 10, 3, {"a": 2, "b": 1}, {}, now())


def job(dataset_id: str, tenant: str = "t1") -> Job:
    return Job(new_id("job"), tenant, "m", dataset_id, "bow-mlp", {"epochs": 1}, JobStatus.QUEUED, now())


def version_spec(tenant: str = "t1", model: str = "m", job_id: str | None = None) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "model": model,
        "task": "text-classification",
        "recipe": "bow-mlp",
        "runtime": "torch",
        "labels": ["a", "b"],
        "metrics": {"val_accuracy": 0.9},
        "hyperparameters": {},
        "dataset_id": None,
        "dataset_sha256": None,
        "job_id": job_id,
        "parameter_count": 10,
        "artifact_sha256": "cd" * 32,
        "files": {"model.safetensors": "cd" * 32},
    }


def test_migrations_are_idempotent(store: MetadataStore) -> None:
    again = open_store(str(store.engine.url.render_as_string(hide_password=False)))
    again.close()
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0011"


def test_a_key_is_found_by_its_hash_alone(store: MetadataStore) -> None:
    key = ApiKey(id=new_id("key"), tenant_id="t1", prefix="a1b2c3d4e5f6", scopes=("read",), created_at=now())
    store.api_keys.add(key, "ab" * 32)
    found = store.api_keys.by_hash("ab" * 32)
    assert found is not None and found[0].id == key.id and found[1].name == "one"
    assert store.api_keys.by_hash("cd" * 32) is None


def test_datasets_are_scoped_to_their_tenant(store: MetadataStore) -> None:
    d = dataset("t1")
    store.datasets.add(d)
    assert store.datasets.get("t1", d.id) == d
    assert store.datasets.get("t2", d.id) is None
    assert store.datasets.list("t2") == ([], False)
    assert not store.datasets.delete("t2", d.id)
    assert store.datasets.delete("t1", d.id)
    assert store.datasets.get("t1", d.id) is None


def test_dataset_listing_pages_with_after(store: MetadataStore) -> None:
    ids = []
    for _ in range(3):
        d = dataset()
        store.datasets.add(d)
        ids.append(d.id)
    first, more = store.datasets.list("t1", limit=2)
    assert more and [d.id for d in first] == sorted(ids)[:2]
    rest, more = store.datasets.list("t1", after=first[-1].id, limit=2)
    assert not more and [d.id for d in rest] == sorted(ids)[2:]


def test_files_page_both_ways_by_purpose_and_count_as_stored_bytes(store: MetadataStore) -> None:
    files = [
        File(new_id("file"), "t1", f"f{i}.jsonl", ("batch", "fine-tune")[i % 2], "ab" * 32, 7, now()) for i in range(5)
    ]
    for f in files:
        store.files.add(f)
    batch = sorted(f.id for f in files if f.purpose == "batch")  # ids made in one millisecond are in random order
    page, more = store.files.list("t1", purpose="batch", limit=2)
    assert more and [f.id for f in page] == batch[::-1][:2]
    rest, more = store.files.list("t1", purpose="batch", after=page[-1].id)
    assert not more and [f.id for f in rest] == batch[::-1][2:]
    ascending, more = store.files.list("t1", order="asc", after=min(f.id for f in files), limit=10)
    assert not more and ascending == sorted(files, key=lambda f: f.id)[1:]
    assert store.files.list("t2") == ([], False) and store.files.get("t2", files[0].id) is None
    store.datasets.add(dataset("t1"))
    assert store.usage.stored_bytes("t1") == 5 * 7 + 10 and store.files.references_to("ab" * 32) == 5
    assert not store.files.delete("t2", files[0].id) and store.files.delete("t1", files[0].id)
    assert store.usage.stored_bytes("t1") == 4 * 7 + 10


def test_job_transitions_are_compare_and_set(store: MetadataStore) -> None:
    j = job("ds_x")
    store.jobs.add(j)
    assert not store.jobs.transition(j.id, JobStatus.SUCCEEDED)
    assert store.jobs.transition(j.id, JobStatus.RUNNING, started_at=now())
    assert not store.jobs.transition(j.id, JobStatus.RUNNING)
    assert not store.jobs.transition(j.id, JobStatus.CANCELLED, only_from=[JobStatus.QUEUED])
    assert store.jobs.transition(j.id, JobStatus.FAILED, reason="boom")
    stored = store.jobs.get("t1", j.id)
    assert stored is not None and stored.status is JobStatus.FAILED and stored.reason == "boom"
    assert stored.finished_at is not None
    assert store.jobs.get("t2", j.id) is None


def test_job_events_page_in_order(store: MetadataStore) -> None:
    j = job("ds_x")
    store.jobs.add(j)
    for epoch in range(5):
        store.jobs.add_event(j.id, "epoch", {"epoch": epoch})
    first, more = store.jobs.events(j.id, limit=3)
    assert more and [e.data["epoch"] for e in first] == [0, 1, 2]
    rest, more = store.jobs.events(j.id, after=first[-1].id)
    assert not more and [e.data["epoch"] for e in rest] == [3, 4]


def test_an_attempts_usage_record_holds_its_latest_total_once(store: MetadataStore) -> None:
    j = job("ds_x")
    store.jobs.add(j)
    first, second = store.jobs.open_attempt_usage(j), store.jobs.open_attempt_usage(j)
    for seconds in (1.5, 4.0, 4.0):  # a repeated update changes nothing
        store.jobs.meter_attempt(first, seconds)
    store.jobs.meter_attempt(second, 2.0, version=3)
    rows = store.usage.summary("t1", None, None, "model")
    assert [(r["kind"], r["records"], r["seconds"]) for r in rows] == [("training", 2, 6.0)]


def test_succeeding_registers_the_version_in_the_same_transaction(store: MetadataStore) -> None:
    j = job("ds_x")
    store.jobs.add(j)
    with pytest.raises(AlreadyExists):  # still queued, not running: nothing may be registered
        store.jobs.succeed_and_register(j.id, {}, version_spec(job_id=j.id))
    assert store.models.get("t1", "m") is None
    store.jobs.transition(j.id, JobStatus.RUNNING)
    version = store.jobs.succeed_and_register(j.id, {"acc": 1}, version_spec(job_id=j.id))
    stored = store.jobs.get("t1", j.id)
    assert stored is not None and stored.status is JobStatus.SUCCEEDED and stored.model_version == version.version


def test_versions_are_numbered_without_gaps_under_concurrency(store: MetadataStore) -> None:
    with ThreadPoolExecutor(4) as pool:
        numbers = sorted(pool.map(lambda _: store.models.register_version(version_spec()).version, range(8)))
    assert numbers == list(range(1, 9))


def test_references_resolve_by_version_alias_and_default(store: MetadataStore) -> None:
    for _ in range(3):
        store.models.register_version(version_spec())
    resolve = lambda ref: store.models.resolve("t1", ref)  # noqa: E731
    assert resolve(ModelRef("m")).version == 3
    assert resolve(ModelRef("m", version=2)).version == 2
    assert resolve(ModelRef("m", version=9)) is None
    assert resolve(ModelRef("m", alias="production")) is None
    assert store.models.set_alias("t1", "m", "production", 1)
    assert resolve(ModelRef("m")).version == 1
    assert resolve(ModelRef("m", alias="production")).version == 1
    assert not store.models.set_alias("t1", "m", "production", 7)
    assert store.models.resolve("t2", ModelRef("m")) is None


def test_a_public_model_is_visible_to_others_by_owner_name_and_changed_only_by_its_owner(
    store: MetadataStore,
) -> None:
    store.models.register_version(version_spec())
    assert store.models.visible("t2", "one", "m") is None
    assert store.models.resolve("t2", ModelRef("m", owner="one")) is None
    assert not store.models.set_public("t2", "m", True)
    assert store.models.set_public("t1", "m", True)
    shared = store.models.visible("t2", "one", "m")
    assert shared is not None and shared.public and shared.owner == "one" and shared.tenant_id == "t1"
    assert store.models.resolve("t2", ModelRef("m", version=1, owner="one")).version == 1
    assert store.models.resolve("t2", ModelRef("m")) is None  # a bare name stays among the tenant's own
    assert [m.name for m in store.models.public_of_others("t2")] == ["m"]
    assert store.models.public_of_others("t1") == []
    assert store.models.set_public("t1", "m", False)
    assert store.models.visible("t2", "one", "m") is None and store.models.public_of_others("t2") == []
    assert store.models.visible("t1", "one", "m") is not None  # the owner may qualify its own name


def test_deleting_a_version_drops_its_aliases_and_never_reuses_its_number(store: MetadataStore) -> None:
    store.models.register_version(version_spec())
    store.models.register_version(version_spec())
    store.models.set_alias("t1", "m", "production", 2)
    assert store.models.delete_version("t1", "m", 2) is not None
    model = store.models.get("t1", "m")
    assert model is not None and model.aliases == {} and [v.version for v in model.versions] == [1]
    assert store.models.register_version(version_spec()).version == 3
    assert store.models.delete_version("t2", "m", 1) is None


def test_a_journal_segment_is_applied_once_and_in_order(store: MetadataStore) -> None:
    record = UsageRecord("t1", "key_1", "inference", "m", 1, 2, 0, 0.01, now())
    assert store.usage.add_journaled("j1", 1, [record, record])
    assert not store.usage.add_journaled("j1", 1, [record, record])  # replayed after a crash: already there
    assert store.usage.add_journaled("j1", 2, [record])
    assert not store.usage.add_journaled("j1", 1, [record])
    assert store.usage.add_journaled("j2", 1, [record])  # another process's journal has its own mark
    assert store.usage.summary("t1", None, None, None)[0]["records"] == 4
    store.usage.forget_journal("j1")
    assert store.usage.add_journaled("j1", 1, [])


def test_usage_is_summed_by_protocol(store: MetadataStore) -> None:
    records = [
        UsageRecord("t1", "key_1", "inference", "m", 1, 2, 0, 0.01, now(), protocol="kserve_v2"),
        UsageRecord("t1", "key_1", "inference", "m", 1, 3, 0, 0.01, now(), protocol="native"),
        UsageRecord("t1", "key_1", "inference", "m", 1, 4, 0, 0.01, now(), protocol="kserve_v2"),
    ]
    assert store.usage.add_journaled("j-protocol", 1, records)
    rows = {row["protocol"]: row["items"] for row in store.usage.summary("t1", None, None, "protocol")}
    assert rows == {"kserve_v2": 6, "native": 3}


def test_one_process_at_a_time_holds_a_batch_until_its_lease_expires(store: MetadataStore) -> None:
    batch = Batch(new_id("batch"), "t1", "/v1/embeddings", "file_x", "24h", "in_progress", now(), total=1)
    store.batches.add(batch, [BatchLine(batch.id, 1, "a", "/v1/embeddings", {"input": "x"})])
    assert store.batches.claim(batch.id, "node/1/1", 60)
    assert store.batches.claim(batch.id, "node/1/1", 60)  # its holder renews it
    assert not store.batches.claim(batch.id, "node/2/2", 60)  # another process waits
    assert store.batches.claim(batch.id, "node/2/2", 60, take_from="node/1/1")  # unless its holder is dead
    assert store.batches.owner_of(batch.id) == "node/2/2"
    assert store.batches.claim(batch.id, "node/2/2", 0.05)
    time.sleep(0.2)
    assert store.batches.claim(batch.id, "node/3/3", 60)  # an expired lease is taken over
    store.batches.set_status(batch.id, "finalizing", only_from=("in_progress",), at=now())
    store.batches.set_status(batch.id, "completed", only_from=("finalizing",), at=now())
    assert store.batches.owner_of(batch.id) is None and not store.batches.claim(batch.id, "node/3/3", 60)


def test_one_process_at_a_time_validates_a_fine_tune_and_only_its_holder_ends_it(store: MetadataStore) -> None:
    fine_tune = FineTune(
        job_id=new_id("job"),
        tenant_id="t1",
        base_model="bow-mlp",
        training_file="file_x",
        suffix=None,
        seed=0,
        metadata=None,
        hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0},
        created_at=now(),
        status="validating_files",
    )
    store.fine_tunes.add(fine_tune, owner="node/1/1", lease_s=60)
    assert [(f.job_id, holder) for f, holder in store.fine_tunes.validating()] == [(fine_tune.job_id, "node/1/1")]
    assert store.fine_tunes.claim(fine_tune.job_id, "node/1/1", 60)  # its holder renews it
    assert not store.fine_tunes.claim(fine_tune.job_id, "node/2/2", 60)  # another process waits
    assert store.fine_tunes.claim(fine_tune.job_id, "node/2/2", 0.05, take_from="node/1/1")  # its holder died
    assert not store.fine_tunes.validated(fine_tune.job_id, report=None, error=None, owner="node/1/1")
    time.sleep(0.2)
    assert store.fine_tunes.claim(fine_tune.job_id, "node/3/3", 60)  # an expired lease is taken over
    assert store.fine_tunes.validated(fine_tune.job_id, report={"rows": 1}, error=None, owner="node/3/3")
    assert store.fine_tunes.validating() == [] and not store.fine_tunes.claim(fine_tune.job_id, "node/3/3", 60)
