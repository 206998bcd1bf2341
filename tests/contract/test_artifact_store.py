"""One artifact store contract, run on the local store and on the S3 store against a real S3 server (moto's).

Each test touches the stored objects by hand, as a failing disk or another client would, and checks what a
reader of the store sees: the bytes it put, or a clear `ArtifactCorrupted`, never wrong bytes or half an object.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from openmaas.storage.artifacts import ArtifactCorrupted, ArtifactStore
from openmaas.storage.artifacts.local import LocalArtifactStore
from openmaas.storage.artifacts.s3 import S3ArtifactStore
from openmaas.training.checkpoints import CheckpointStore, LoopState
from tests.conftest import S3Server

PART = 5 << 20  # S3's smallest part: a large object goes up in many parts

# A writer in a process of its own, so that it can be killed mid-upload: it builds the store the test describes.
WRITER = """
import json, sys
spec = json.loads(sys.argv[1])
if spec["kind"] == "local":
    from openmaas.storage.artifacts.local import LocalArtifactStore
    store = LocalArtifactStore(__import__("pathlib").Path(spec["root"]))
else:
    import boto3
    from openmaas.storage.artifacts.s3 import S3ArtifactStore
    client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    store = S3ArtifactStore(spec["bucket"], spec["prefix"], __import__("pathlib").Path(spec["cache"]),
                            client=client, part_size=spec["part_size"])
store.put_file(__import__("pathlib").Path(spec["source"]))
"""


@dataclass
class Backend:
    """A store under test, and the hands that reach past it to its stored objects."""

    store: ArtifactStore
    overwrite: Callable[[str, bytes], None]  # replace a blob's stored bytes
    overwrite_ref: Callable[[str, bytes], None]
    fresh: Callable[[Path], ArtifactStore]  # the same objects seen from another machine (its own local files)
    spec: dict[str, Any]  # how the writer process builds the same store
    upload_started: Callable[[], bool]  # a write is under way (a temp file, or a multipart upload)


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    store = LocalArtifactStore(root)

    def started() -> bool:
        for path in store.scratch.iterdir():
            try:
                if path.stat().st_size > 0:
                    return True
            except FileNotFoundError:  # renamed into place while we looked
                continue
        return False

    return Backend(
        store,
        overwrite=lambda sha, data: store.path_of(sha).write_bytes(data),
        overwrite_ref=lambda name, data: (root / "refs" / f"{name}.json").write_bytes(data),
        fresh=lambda _: LocalArtifactStore(root),
        spec={"kind": "local", "root": str(root)},
        upload_started=started,
    )


def s3_backend(tmp_path: Path, s3: S3Server) -> Backend:
    bucket, client = s3.new_bucket(), s3.client()
    store = S3ArtifactStore(bucket, "team/artifacts", tmp_path / "cache", client=client, part_size=PART)

    def started() -> bool:  # the parts go up, ten at a time, once the multipart upload is created
        return bool(client.list_multipart_uploads(Bucket=bucket).get("Uploads"))

    return Backend(
        store,
        overwrite=lambda sha, data: client.put_object(Bucket=bucket, Key=store.blob_key(sha), Body=data),
        overwrite_ref=lambda name, data: client.put_object(
            Bucket=bucket, Key=f"team/artifacts/refs/{name}.json", Body=data
        ),
        fresh=lambda cache: S3ArtifactStore(bucket, "team/artifacts", cache, client=s3.client(), part_size=PART),
        spec={
            "kind": "s3",
            "endpoint": s3.endpoint,
            "bucket": bucket,
            "prefix": "team/artifacts",
            "cache": str(tmp_path / "writer-cache"),
            "part_size": PART,
        },
        upload_started=started,
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(tmp_path, request.getfixturevalue("s3"))


def test_bytes_and_files_round_trip_under_their_sha256(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    sha = store.put_bytes(b"weights")
    assert sha == hashlib.sha256(b"weights").hexdigest()
    assert store.exists(sha) and store.read_bytes(sha) == b"weights"
    assert store.local_file(sha).read_bytes() == b"weights"
    source = tmp_path / "vocab.txt"
    source.write_bytes(b"a\nb\n")
    assert store.put_file(source) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert store.put_bytes(b"weights") == sha  # the same content again: the same name, no second blob
    assert store.list_blobs() == sorted([sha, hashlib.sha256(b"a\nb\n").hexdigest()])
    assert backend.fresh(tmp_path / "other").read_bytes(sha) == b"weights"


def test_directories_round_trip_through_a_manifest(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "vocab.txt").write_text("a\nb")
    files = backend.store.put_directory(source)
    assert set(files) == {"config.json", "sub/vocab.txt"}
    out = backend.fresh(tmp_path / "other").materialize(files, tmp_path / "out")
    assert (out / "sub" / "vocab.txt").read_text() == "a\nb" and (out / "config.json").read_text() == "{}"


def test_a_corrupted_object_is_refused_with_an_error_of_its_own(backend: Backend, tmp_path: Path) -> None:
    sha = backend.store.put_bytes(b"weights")
    backend.overwrite(sha, b"tampered")
    reader = backend.fresh(tmp_path / "reader")  # nothing of it cached yet
    for read in (reader.read_bytes, reader.local_file, lambda s: reader.materialize({"w": s}, tmp_path / "out")):
        with pytest.raises(ArtifactCorrupted, match=f"blob {sha} does not match its hash"):
            read(sha)
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not reader.exists(missing)
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        reader.read_bytes(missing)
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        reader.local_file(missing)


def test_listing_deleting_and_scopes(backend: Backend) -> None:
    store = backend.store
    kept, dropped = store.put_bytes(b"kept"), store.put_bytes(b"dropped")
    job = store.scope("checkpoints").scope("job_1")
    in_scope = job.put_bytes(b"checkpoint")
    assert store.list_blobs() == sorted([kept, dropped])  # a scope's blobs are its own
    assert job.list_blobs() == [in_scope] and store.scope("checkpoints").scope("job_2").list_blobs() == []
    store.delete(dropped)
    store.delete(dropped)  # deleting what is gone is no error
    assert store.list_blobs() == [kept] and not store.exists(dropped)
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        store.read_bytes(dropped)
    with pytest.raises(ValueError):
        store.scope("../escape")
    with pytest.raises(ValueError):
        store.read_bytes("not-a-sha")


def test_references_are_atomic_documents_verified_on_read(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    assert store.read_ref("step-000000001") is None and store.list_refs() == []
    store.put_ref("step-000000001", {"files": {"a": "1"}, "step": 1})
    store.put_ref("step-000000002", {"step": 2})
    store.put_ref("step-000000002", {"step": 3})  # replaced whole
    assert store.list_refs() == ["step-000000001", "step-000000002"]
    assert backend.fresh(tmp_path / "other").read_ref("step-000000002") == {"step": 3}
    backend.overwrite_ref("step-000000001", json.dumps({"body": '{"step": 9}', "sha256": "0" * 64}).encode())
    with pytest.raises(ArtifactCorrupted, match="reference step-000000001 does not match its hash"):
        store.read_ref("step-000000001")
    store.delete_ref("step-000000001")
    assert store.list_refs() == ["step-000000002"]
    with pytest.raises(ValueError):
        store.put_ref("../../blobs/x", {})


def test_a_writer_killed_mid_upload_leaves_no_object(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(48 << 20))  # ten parts on S3; a copy and a hash pass on disk
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    spec = {**backend.spec, "source": str(source)}
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(spec)], cwd=root)
    deadline = time.monotonic() + 60
    while not backend.upload_started():
        assert writer.poll() is None, f"the writer ended ({writer.returncode}) before it was seen writing"
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    reader = backend.fresh(tmp_path / "reader")
    assert not reader.exists(sha) and reader.list_blobs() == []
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        reader.local_file(sha)
    backend.store.clean_temporary()
    assert list(backend.store.scratch.iterdir()) == []
    assert backend.store.put_file(source) == sha  # the next writer stores it whole
    assert reader.local_file(sha).stat().st_size == 48 << 20


def test_the_s3_read_cache_fills_once_with_verified_copies(s3: S3Server, tmp_path: Path) -> None:
    backend = s3_backend(tmp_path, s3)
    store = backend.store
    assert isinstance(store, S3ArtifactStore)
    sha = store.put_bytes(b"model weights")
    cached = store.local_file(sha)
    assert cached == store.cache_path(sha) and cached.read_bytes() == b"model weights"

    s3.client().delete_object(Bucket=store.bucket, Key=store.blob_key(sha))  # gone from S3 behind our back
    assert store.local_file(sha) == cached  # served from the cache: no second download
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        store.read_bytes(sha)  # a plain read always goes to the object store

    bad = store.put_bytes(b"other weights")
    backend.overwrite(bad, b"tampered")
    with pytest.raises(ArtifactCorrupted, match="does not match its hash"):
        store.local_file(bad)
    assert not store.cache_path(bad).exists() and list(store.scratch.iterdir()) == []  # nothing half-cached

    fresh = store.put_bytes(b"fresh")
    assert store.local_file(fresh).is_file()
    store.delete(fresh)  # a delete through the store drops its cached copy too
    assert not store.cache_path(fresh).exists() and not store.exists(fresh)


def test_checkpoints_saved_on_one_machine_load_on_another(backend: Backend, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    checkpoints = CheckpointStore(backend.store.scope("checkpoints"), keep=2)
    for step in (1, 2, 3):
        state = LoopState(global_step=step, history=[{"epoch": 1, "train_loss": 1.0 / step}])
        checkpoints.save("job_1", state, model.state_dict(), optimizer.state_dict(), torch.Generator().get_state())
    elsewhere = CheckpointStore(backend.fresh(tmp_path / "elsewhere").scope("checkpoints"))
    listed = elsewhere.list("job_1")
    assert [c.name for c in listed] == ["step-000000002", "step-000000003"]
    assert listed[-1].step == 3 and listed[-1].metrics["train_loss"] == pytest.approx(1 / 3)
    latest = elsewhere.latest("job_1")
    assert latest is not None and latest.state.global_step == 3
    assert all(torch.equal(latest.weights[k], v) for k, v in model.state_dict().items())
    assert latest.optimizer["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    # The pruned checkpoint's blobs went with it; the kept ones' remain.
    job = backend.store.scope("checkpoints").scope("job_1")
    referenced = {sha for name in job.list_refs() for sha in (job.read_ref(name) or {})["files"].values()}
    assert set(job.list_blobs()) == referenced
    elsewhere.remove("job_1")
    assert checkpoints.list("job_1") == [] and job.list_blobs() == []
