"""Dataset use cases: upload (parse, clean, store immutably by content hash), list, show, samples, delete."""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from openmaas.data.cleaning import clean, clean_documents
from openmaas.data.documents import detect_text_format, looks_like_text_dataset, read_documents
from openmaas.data.image_tensors import Thumbnail, thumbnails
from openmaas.data.images import ImageLimits, read_image_zip
from openmaas.data.readers import DatasetFileError, detect_format, read_rows
from openmaas.domain.entities import Dataset, Principal
from openmaas.domain.ids import new_id, now
from openmaas.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, Unprocessable
from openmaas.failpoints import failpoint
from openmaas.lines import split_lines
from openmaas.services.idempotency import Idempotency, fingerprint
from openmaas.storage.artifacts import ArtifactStore
from openmaas.storage.metadata import MetadataStore
from openmaas.storage.metadata.repositories import AlreadyExists

# Problems with the file's bytes are malformed requests (400); well-formed files with unusable content are 422.
_UNPROCESSABLE = {"no_rows", "too_few_classes", "too_few_images", "missing_column", "empty_file"}
# Bounds on what an archive or its images may expand to are 413s, like the upload limit itself.
_TOO_LARGE = {"too_many_files", "archive_too_large", "image_too_large"}
# "classification": labelled texts (CSV, TSV, JSONL); "text": documents for language models (TXT, JSONL);
# "image": labelled images (a zip of class folders, or of images and a CSV/JSONL of file,label).
DATASET_KINDS = ("classification", "text", "image")
SAMPLES_PER_CLASS_MAX = 16
TEXT_KIND_HINT = (
    ". It looks like a text dataset (documents for a language model: one a line, or JSONL of text or chats): "
    "upload it with kind=text (`-F kind=text` with curl, `--kind text` with the CLI)"
)


def _canonical(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


class DatasetService:
    def __init__(
        self,
        store: MetadataStore,
        artifacts: ArtifactStore,
        max_bytes: int,
        idempotency: Idempotency,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.image_limits = image_limits or ImageLimits()
        self.idempotency = idempotency
        self.store = store
        self.artifacts = artifacts
        self.max_bytes = max_bytes

    def read_limited(self, stream: BinaryIO) -> bytes:
        data = stream.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is over the upload limit of {self.max_bytes} bytes", param="file")
        return data

    def upload(
        self,
        principal: Principal,
        *,
        name: str,
        filename: str,
        data: bytes,
        text_column: str = "text",
        label_column: str = "label",
        kind: str = "classification",
        idempotency_key: str | None = None,
    ) -> Dataset:
        self.idempotency.check(idempotency_key)
        parts: list[Any] = [hashlib.sha256(data).hexdigest(), name, filename, text_column, label_column]
        if kind != "classification":  # so that keys stored before text datasets existed still match
            parts.append(kind)
        request = fingerprint(*parts)
        if (first := self.idempotency.first_result(principal, "datasets", idempotency_key, request)) is not None:
            return self.get(principal, first)
        if not name.strip() or len(name) > 256:
            raise InvalidRequest("name must be 1 to 256 characters", param="name")
        if kind not in DATASET_KINDS:
            known = ", ".join(DATASET_KINDS)
            raise InvalidRequest(f"unknown dataset kind {kind!r}; use {known}", param="kind", code="invalid_kind")
        with self._scratch_path() as stored:
            return self._parse_and_store(
                principal, name, filename, data, text_column, label_column, kind, idempotency_key, request, stored
            )

    @contextmanager
    def _scratch_path(self) -> Iterator[Path]:
        """Where an image dataset's decoded pixels go as they are decoded (never all in memory); removed after."""
        path = self.artifacts.scratch / f"{new_id('upload')}.safetensors"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _parse_and_store(
        self,
        principal: Principal,
        name: str,
        filename: str,
        data: bytes,
        text_column: str,
        label_column: str,
        kind: str,
        idempotency_key: str | None,
        request: str,
        stored: Path,
    ) -> Dataset:
        labels: dict[str, int] = {}
        canonical: bytes | Path
        try:
            if kind == "image":
                images = read_image_zip(data, self.image_limits, stored)
                fmt, canonical, rows = "zip", stored, len(images.labels)
                report, labels = images.report, images.label_counts
            elif kind == "text":
                fmt = detect_text_format(filename)
                documents = clean_documents(read_documents(data, fmt, text_column))
                canonical, rows, report = _canonical(documents.rows), len(documents.rows), documents.report
            else:
                fmt = detect_format(filename)
                cleaned = clean(read_rows(data, fmt, text_column, label_column))
                canonical = _canonical(
                    [{"text": t, "label": label} for t, label in zip(cleaned.texts, cleaned.labels, strict=True)]
                )
                rows, report, labels = len(cleaned.texts), cleaned.report, cleaned.label_counts
                report = dict(report, label_column=label_column)
        except DatasetFileError as error:
            status = (
                Unprocessable
                if error.code in _UNPROCESSABLE
                else PayloadTooLarge
                if error.code in _TOO_LARGE
                else InvalidRequest
            )
            message = str(error)
            missing = error.code == "missing_column" and kind == "classification"
            if missing and looks_like_text_dataset(filename, data, label_column):
                message += TEXT_KIND_HINT
            raise status(message, param=error.param, code=error.code) from None
        size = canonical.stat().st_size if isinstance(canonical, Path) else len(canonical)
        quota = principal.tenant_limits.get("storage_bytes")
        if quota is not None and self.store.usage.stored_bytes(principal.tenant_id) + size > quota:
            raise PayloadTooLarge(
                f"storing this dataset ({size} bytes) would exceed the tenant's storage quota of "
                f"{quota} bytes; delete datasets or ask for a larger quota",
                param="file",
                code="storage_quota_exceeded",
            )
        # Blob first, row second: a crash in between leaves an unreferenced blob, never half a dataset.
        if isinstance(canonical, Path):
            sha256 = self.artifacts.put_file(canonical)
        else:
            sha256 = self.artifacts.put_bytes(canonical)
        failpoint("dataset_after_blob")
        dataset = Dataset(
            id=new_id("ds"),
            tenant_id=principal.tenant_id,
            name=name.strip(),
            format=fmt,
            sha256=sha256,
            bytes=size,
            rows=rows,
            labels=labels,
            report=dict(report, source_filename=filename, source_bytes=len(data), text_column=text_column),
            created_at=now(),
            kind=kind,
        )
        try:
            self.store.datasets.add(dataset, (idempotency_key, request) if idempotency_key else None)
        except AlreadyExists:  # the same key arrived twice at once: the other request won
            first = self.idempotency.first_result(principal, "datasets", idempotency_key, request)
            assert first is not None
            return self.get(principal, first)
        return dataset

    def get(self, principal: Principal, dataset_id: str) -> Dataset:
        dataset = self.store.datasets.get(principal.tenant_id, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r}", param="dataset_id", code="dataset_not_found")
        return dataset

    def samples(self, principal: Principal, dataset_id: str, per_class: int) -> list[Thumbnail]:
        """A few thumbnails per class of an image dataset."""
        dataset = self.get(principal, dataset_id)
        if dataset.kind != "image":
            raise InvalidRequest(
                f"dataset {dataset_id!r} is a {dataset.kind} dataset; samples are shown for image datasets",
                param="dataset_id",
                code="wrong_dataset_kind",
            )
        if not 1 <= per_class <= SAMPLES_PER_CLASS_MAX:
            raise InvalidRequest(f"per_class must be 1 to {SAMPLES_PER_CLASS_MAX}", param="per_class")
        return thumbnails(self.artifacts.local_file(dataset.sha256), per_class)

    def list(self, principal: Principal, *, after: str | None, limit: int) -> tuple[list[Dataset], bool]:
        return self.store.datasets.list(principal.tenant_id, after=after, limit=limit)

    def delete(self, principal: Principal, dataset_id: str) -> Dataset:
        dataset = self.get(principal, dataset_id)
        if self.store.jobs.count_unfinished_for_dataset(principal.tenant_id, dataset_id):
            raise Conflict(
                f"dataset {dataset_id!r} is used by a queued or running job; cancel it first",
                param="dataset_id",
                code="dataset_in_use",
            )
        self.store.datasets.delete(principal.tenant_id, dataset_id)
        # A file of the same bytes (/v1/files) shares the blob.
        if self.store.datasets.references_to(dataset.sha256) + self.store.files.references_to(dataset.sha256) == 0:
            self.artifacts.delete(dataset.sha256)
        return dataset

    def first_rows(
        self, principal: Principal, dataset_id: str, limit: int
    ) -> tuple[builtins.list[dict[str, Any]], bool]:
        """The cleaned dataset's first `limit` rows, as stored and as training reads them; and whether more follow."""
        dataset = self.get(principal, dataset_id)
        if dataset.kind == "image":
            raise InvalidRequest(
                f"dataset {dataset_id!r} is an image dataset; its thumbnails are at /v1/datasets/{dataset_id}/samples",
                param="dataset_id",
                code="wrong_dataset_kind",
            )
        lines = split_lines(self.artifacts.read_bytes(dataset.sha256).decode("utf-8"))
        return [json.loads(line) for line in lines[:limit]], len(lines) > limit
