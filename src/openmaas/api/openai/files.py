"""Routes for /v1/files as OpenAI's clients expect them: a thin adapter between multipart uploads and FileService."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Caller, Reader, Svc, Trainer
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import File as StoredFile
from openmaas.errors import PayloadTooLarge, PermissionDenied
from openmaas.protocol.openai import FileDeleted, FileObject, ListOf
from openmaas.protocol.openai.files import UploadPurpose
from openmaas.services.files import UPLOAD_SCOPES

router = APIRouter(route_class=JSONRoute, tags=["openai"], responses=error_responses(*AUTHENTICATED))
MULTIPART_SLACK = 64 * 1024


def file_object(f: StoredFile) -> FileObject:
    return FileObject(
        id=f.id,
        bytes=f.bytes,
        created_at=int(f.created_at),
        filename=f.filename,
        purpose=f.purpose,  # type: ignore[arg-type]  # one of Purpose: the service writes no other
    )


# A plain def: reading the spooled upload, hashing it and storing it (a file write, or boto3) run in the
# threadpool, never on the event loop (as the dataset upload does).
@router.post("/v1/files", response_model=FileObject, responses=error_responses(413))
def create_file(
    request: Request,
    caller: Caller,
    svc: Svc,
    file: Annotated[UploadFile, File(description="JSONL: chat or text/label rows to fine-tune on, or batch requests")],
    purpose: Annotated[UploadPurpose, Form()],
) -> FileObject:
    # A fine-tune file feeds training, a batch file inference: the key needs that scope.
    if not caller.may(scope := UPLOAD_SCOPES[purpose]):
        raise PermissionDenied(f"this API key lacks the {scope!r} scope", code="missing_scope")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > svc.files.max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(f"the upload is over the limit of {svc.files.max_bytes} bytes", param="file")
    data = svc.files.read_limited(file.file)
    return file_object(svc.files.upload(caller, filename=file.filename or "", purpose=purpose, data=data))


@router.get("/v1/files", response_model=ListOf[FileObject])
def list_files(
    caller: Reader,
    svc: Svc,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
) -> ListOf[FileObject]:
    items, more = svc.files.list(caller, purpose=purpose, after=after, limit=limit, order=order)
    return ListOf[FileObject](data=[file_object(f) for f in items], has_more=more)


@router.get("/v1/files/{file_id}", response_model=FileObject, responses=error_responses(404))
def retrieve_file(file_id: str, caller: Reader, svc: Svc) -> FileObject:
    return file_object(svc.files.get(caller, file_id))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={**error_responses(404), 200: {"content": {"application/octet-stream": {}}}},
)
def retrieve_file_content(file_id: str, caller: Reader, svc: Svc) -> Response:
    _, data = svc.files.content(caller, file_id)
    return Response(data, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=error_responses(404))
def delete_file(file_id: str, caller: Trainer, svc: Svc) -> FileDeleted:
    return FileDeleted(id=svc.files.delete(caller, file_id).id, deleted=True)
