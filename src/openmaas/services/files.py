"""OpenAI's files as a use case: upload (raw bytes to the artifact store by sha256, counted against the tenant's
storage quota), list, show, read back and delete. A file is parsed only when a job or a batch uses it."""

from __future__ import annotations

from typing import BinaryIO, Literal

from openmaas.domain.entities import File, Principal
from openmaas.domain.ids import new_id, now
from openmaas.errors import InvalidRequest, NotFound, PayloadTooLarge
from openmaas.storage.artifacts import ArtifactStore
from openmaas.storage.metadata import MetadataStore

# Who may upload what: a fine-tune file feeds training, a batch file inference.
UPLOAD_SCOPES = {"fine-tune": "train", "batch": "infer"}
# The purposes of files we write ourselves: a batch's output and errors, a fine-tune's step metrics.
OUTPUT_PURPOSES = ("batch_output", "fine-tune-results")
MAX_FILENAME = 512


class FileService:
    def __init__(self, store: MetadataStore, artifacts: ArtifactStore, max_bytes: int) -> None:
        self.store = store
        self.artifacts = artifacts
        self.max_bytes = max_bytes

    def read_limited(self, stream: BinaryIO) -> bytes:
        data = stream.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is over the upload limit of {self.max_bytes} bytes", param="file")
        return data

    def upload(self, principal: Principal, *, filename: str, purpose: str, data: bytes) -> File:
        if purpose not in UPLOAD_SCOPES:
            known = ", ".join(UPLOAD_SCOPES)
            raise InvalidRequest(f"unknown purpose {purpose!r}; use {known}", param="purpose", code="invalid_purpose")
        if not filename or len(filename) > MAX_FILENAME:
            raise InvalidRequest(f"the file needs a name of 1 to {MAX_FILENAME} characters", param="file")
        if not data:
            raise InvalidRequest("the file is empty", param="file", code="empty_file")
        return self.write(principal, filename=filename, purpose=purpose, data=data)

    def write(self, principal: Principal, *, filename: str, purpose: str, data: bytes) -> File:
        """Store bytes as one of the tenant's files: an upload, or one of ours (OUTPUT_PURPOSES)."""
        quota = principal.tenant_limits.get("storage_bytes")
        if quota is not None and self.store.usage.stored_bytes(principal.tenant_id) + len(data) > quota:
            raise PayloadTooLarge(
                f"storing this file ({len(data)} bytes) would exceed the tenant's storage quota of {quota} bytes; "
                "delete files or datasets, or ask for a larger quota",
                param="file",
                code="storage_quota_exceeded",
            )
        # Blob first, row second: a crash in between leaves an unreferenced blob, never a file without bytes.
        sha256 = self.artifacts.put_bytes(data)
        file = File(
            id=new_id("file"),
            tenant_id=principal.tenant_id,
            filename=filename,
            purpose=purpose,
            sha256=sha256,
            bytes=len(data),
            created_at=now(),
        )
        self.store.files.add(file)
        return file

    def get(self, principal: Principal, file_id: str) -> File:
        file = self.store.files.get(principal.tenant_id, file_id)
        if file is None:
            raise NotFound(f"no file {file_id!r}", param="file_id", code="file_not_found")
        return file

    def content(self, principal: Principal, file_id: str) -> tuple[File, bytes]:
        file = self.get(principal, file_id)
        return file, self.artifacts.read_bytes(file.sha256)

    def list(
        self,
        principal: Principal,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> tuple[list[File], bool]:
        return self.store.files.list(principal.tenant_id, purpose=purpose, after=after, limit=limit, order=order)

    def delete(self, principal: Principal, file_id: str) -> File:
        file = self.get(principal, file_id)
        self.store.files.delete(principal.tenant_id, file_id)
        # The same bytes may be another file's or a dataset's (both address blobs by sha256).
        if self.store.files.references_to(file.sha256) + self.store.datasets.references_to(file.sha256) == 0:
            self.artifacts.delete(file.sha256)
        return file
