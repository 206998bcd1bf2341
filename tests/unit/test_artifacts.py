import hashlib
from pathlib import Path

import pytest

from openmaas.storage.artifacts import ArtifactCorrupted, manifest_sha256
from openmaas.storage.artifacts.local import LocalArtifactStore


def test_blobs_are_named_by_their_sha256_and_verified(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    sha = store.put_bytes(b"weights")
    assert sha == hashlib.sha256(b"weights").hexdigest()
    assert store.read_bytes(sha) == b"weights"
    assert list(store.tmp.iterdir()) == []  # no temp file left behind


def test_a_corrupted_blob_is_detected(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    sha = store.put_bytes(b"weights")
    store.path_of(sha).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted):
        store.read_bytes(sha)
    with pytest.raises(ArtifactCorrupted):
        store.materialize({"model.safetensors": sha}, tmp_path / "out")


def test_directories_round_trip_through_a_manifest(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "vocab.txt").write_text("a\nb")
    store = LocalArtifactStore(tmp_path / "store")
    files = store.put_directory(source)
    assert set(files) == {"config.json", "sub/vocab.txt"}
    out = store.materialize(files, tmp_path / "out")
    assert (out / "sub" / "vocab.txt").read_text() == "a\nb"
    assert manifest_sha256(files) == manifest_sha256(dict(reversed(list(files.items()))))


def test_the_artifacts_url_is_s3_or_unset(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from openmaas.config import Settings

    assert Settings(data_dir=tmp_path, artifacts_url="").artifacts_url is None  # set but empty: local files
    assert Settings(data_dir=tmp_path, artifacts_url="s3://bucket/prefix").artifacts_url == "s3://bucket/prefix"
    for wrong in ("/mnt/artifacts", "gs://bucket", "s3://"):
        with pytest.raises(ValidationError, match="is not s3://bucket"):
            Settings(data_dir=tmp_path, artifacts_url=wrong)
