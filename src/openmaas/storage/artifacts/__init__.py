"""Artifact storage: content-addressed blobs (local files now, object stores later)."""

from openmaas.storage.artifacts.local import ArtifactCorrupted, LocalArtifactStore

__all__ = ["ArtifactCorrupted", "LocalArtifactStore"]
