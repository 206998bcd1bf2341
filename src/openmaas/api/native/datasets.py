"""Routes for /v1/datasets: a thin adapter between multipart uploads and DatasetService."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import IdempotencyKey, Reader, Svc, Trainer
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import Dataset
from openmaas.errors import PayloadTooLarge
from openmaas.protocol.native import DatasetOut, DatasetSample, DatasetSamples, Deleted
from openmaas.protocol.openai import ListOf

router = APIRouter(route_class=JSONRoute, tags=["datasets"], responses=error_responses(*AUTHENTICATED))
MULTIPART_SLACK = 64 * 1024


def dataset_out(d: Dataset) -> DatasetOut:
    return DatasetOut(
        id=d.id,
        name=d.name,
        kind=d.kind,
        format=d.format,
        sha256=d.sha256,
        bytes=d.bytes,
        rows=d.rows,
        labels=d.labels,
        report=d.report,
        created_at=int(d.created_at),
    )


@router.post("/v1/datasets", status_code=201, response_model=DatasetOut, responses=error_responses(409, 413, 422))
def upload_dataset(
    request: Request,
    caller: Trainer,
    svc: Svc,
    file: Annotated[
        UploadFile,
        File(description="classification: CSV, TSV or JSONL; text: TXT or JSONL (UTF-8); image: a .zip"),
    ],
    name: Annotated[str | None, Form()] = None,
    text_column: Annotated[str, Form()] = "text",
    label_column: Annotated[str, Form()] = "label",
    kind: Annotated[
        str,
        Form(
            description="'classification' (labelled texts), 'text' (documents or chats for language models) or "
            "'image' (a zip of class folders, or of images and a CSV/JSONL of file,label)"
        ),
    ] = "classification",
    idempotency_key: IdempotencyKey = None,
) -> DatasetOut:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > svc.datasets.max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(f"the upload is over the limit of {svc.datasets.max_bytes} bytes", param="file")
    filename = file.filename or ""
    data = svc.datasets.read_limited(file.file)
    dataset = svc.datasets.upload(
        caller,
        name=name if name is not None else filename.rsplit(".", 1)[0],
        filename=filename,
        data=data,
        text_column=text_column,
        label_column=label_column,
        kind=kind,
        idempotency_key=idempotency_key,
    )
    return dataset_out(dataset)


@router.get("/v1/datasets", response_model=ListOf[DatasetOut])
def list_datasets(
    caller: Reader,
    svc: Svc,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ListOf[DatasetOut]:
    items, more = svc.datasets.list(caller, after=after, limit=limit)
    return ListOf[DatasetOut](data=[dataset_out(d) for d in items], has_more=more)


@router.get("/v1/datasets/{dataset_id}", response_model=DatasetOut, responses=error_responses(404))
def get_dataset(dataset_id: str, caller: Reader, svc: Svc) -> DatasetOut:
    return dataset_out(svc.datasets.get(caller, dataset_id))


@router.get("/v1/datasets/{dataset_id}/samples", response_model=DatasetSamples, responses=error_responses(404))
def dataset_samples(
    dataset_id: str, caller: Reader, svc: Svc, per_class: Annotated[int, Query()] = 3
) -> DatasetSamples:
    """A few thumbnails of each class of an image dataset, as PNG data: URLs."""
    samples = svc.datasets.samples(caller, dataset_id, per_class)
    return DatasetSamples(
        data=[
            DatasetSample(
                label=s.label,
                file=s.file,
                width=s.width,
                height=s.height,
                image="data:image/png;base64," + base64.b64encode(s.png).decode(),
            )
            for s in samples
        ]
    )


@router.delete("/v1/datasets/{dataset_id}", response_model=Deleted, responses=error_responses(404, 409))
def delete_dataset(dataset_id: str, caller: Trainer, svc: Svc) -> Deleted:
    svc.datasets.delete(caller, dataset_id)
    return Deleted(id=dataset_id, object="dataset")
