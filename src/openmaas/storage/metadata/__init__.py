"""The metadata store: tables, repositories that return domain objects, and migrations."""

from openmaas.storage.metadata.engine import MetadataStore, open_store

__all__ = ["MetadataStore", "open_store"]
