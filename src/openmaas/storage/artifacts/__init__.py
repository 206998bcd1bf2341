"""Artifact storage: the `ArtifactStore` interface, and `open_artifact_store`, which builds the one a URL names."""

from __future__ import annotations

from pathlib import Path

from openmaas.storage.artifacts.store import ArtifactCorrupted, ArtifactStore, manifest_sha256, sha256_file

__all__ = ["ArtifactCorrupted", "ArtifactStore", "manifest_sha256", "open_artifact_store", "sha256_file"]


def open_artifact_store(url: str | None, local_dir: Path, cache_dir: Path) -> ArtifactStore:
    """No URL: files under `local_dir`. `s3://bucket/prefix`: that bucket, with a read cache in `cache_dir`."""
    if url is None:
        from openmaas.storage.artifacts.local import LocalArtifactStore

        return LocalArtifactStore(local_dir)
    if url.startswith("s3://"):
        from openmaas.storage.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(url, cache_dir)
    raise ValueError(f"unsupported artifacts URL {url!r}: leave it unset for local files, or give s3://bucket/prefix")
