"""The v2 REST routes (`/v2`): server and model metadata, health and readiness, inference with Triton's binary
tensor extension both ways, and Triton's repository extension (admin keys).

`{name}` is our model reference (`name` or `owner/name`), `{version}` a registry version. The infer route
reads its raw body itself: Triton's async client sends `Content-Type: application/octet-stream` even for JSON
and the sync client sends none, and a binary request is JSON followed by tensors. It is a direct route (see
api/direct.py), the native predict route's short way through the server. Errors on /v2 have v2's shape,
`{"error": "..."}` (api/errors.py).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.convertors import StringConvertor, register_url_convertor

from openmaas.api.bodies import JSONRoute, decode_json
from openmaas.api.deps import Admin, Reader, Svc, add_response_headers, authorize, services_of
from openmaas.api.direct import DirectRoute
from openmaas.api.disconnect import unless_disconnected
from openmaas.api.errors import AUTHENTICATED, v2_error_responses
from openmaas.api.kserve_v2.serving import Given, Inferred, V2Models, server_metadata
from openmaas.api.kserve_v2.tensors import (
    IMAGE_INPUT,
    ITEM_SIZE,
    check_text_input,
    decode_base64_images,
    decode_bytes,
    split_bytes,
)
from openmaas.api.openapi import inline_schema
from openmaas.api.responses import FastJSONResponse
from openmaas.errors import InvalidRequest
from openmaas.protocol.kserve_v2 import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    ServerMetadataResponse,
)

ROUTE_WORDS = ("versions", "ready", "infer", "load", "unload")


class V2ModelConvertor(StringConvertor):
    """`name` or `owner/name`: one or two segments, neither of them a word of the v2 routes."""

    _segment = r"(?!(?:" + "|".join(ROUTE_WORDS) + r")(?:/|$))[^/]+"
    regex = _segment + "(?:/" + _segment + ")?"


register_url_convertor("v2_model", V2ModelConvertor())
Name = Annotated[str, Path(description="The model: `name`, or `owner/name` for another tenant's public model")]
Version = Annotated[str, Path(pattern=r"^[0-9]+$", description="A registry version")]

router = APIRouter(route_class=JSONRoute, tags=["kserve-v2"], responses=v2_error_responses(*AUTHENTICATED, 404))
health = APIRouter(route_class=JSONRoute, tags=["kserve-v2"])
inference = APIRouter(
    route_class=DirectRoute, tags=["kserve-v2"], responses=v2_error_responses(*AUTHENTICATED, 404, 413, 503)
)
_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or with `Inference-Header-Content-Length: N`, N bytes of JSON and then the "
        "binary tensors in input order",
        "content": {
            "application/json": {"schema": inline_schema(InferenceRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "JSON outputs; with binary outputs asked for, `Inference-Header-Content-Length: N`, N "
            "bytes of JSON and then the binary outputs in order",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
}
_INDEX_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": inline_schema(RepositoryIndexRequest)}},
    }
}


@health.get("/v2", response_model=ServerMetadataResponse)
async def metadata_of_server() -> ServerMetadataResponse:
    return server_metadata()


@health.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/v2/health/ready", response_model=None)
async def ready(request: Request) -> dict[str, bool] | FastJSONResponse:
    # As /healthz: not ready while a loaded model's queue no longer serves.
    if services_of(request).inference.backend.stopped():
        return FastJSONResponse({"ready": False}, status_code=503)
    return {"ready": True}


@router.get("/v2/models/{name:v2_model}", response_model=ModelMetadataResponse, response_model_exclude_none=True)
async def model_metadata(name: Name, caller: Reader, svc: Svc) -> ModelMetadataResponse:
    return await V2Models(svc).metadata(caller, name, None)


@router.get(
    "/v2/models/{name:v2_model}/versions/{version}",
    response_model=ModelMetadataResponse,
    response_model_exclude_none=True,
)
async def version_metadata(name: Name, version: Version, caller: Reader, svc: Svc) -> ModelMetadataResponse:
    return await V2Models(svc).metadata(caller, name, version)


@router.get("/v2/models/{name:v2_model}/ready", response_model=ModelReadyResponse)
async def model_ready(name: Name, caller: Reader, svc: Svc) -> ModelReadyResponse:
    return ModelReadyResponse(name=name, ready=await V2Models(svc).ready(caller, name, None))


@router.get("/v2/models/{name:v2_model}/versions/{version}/ready", response_model=ModelReadyResponse)
async def version_ready(name: Name, version: Version, caller: Reader, svc: Svc) -> ModelReadyResponse:
    return ModelReadyResponse(name=name, ready=await V2Models(svc).ready(caller, name, version))


@router.post("/v2/repository/index", response_model=list[RepositoryIndexEntry], openapi_extra=_INDEX_DOC)
async def repository_index(request: Request, caller: Admin, svc: Svc) -> list[RepositoryIndexEntry]:
    raw = await request.body()  # tritonclient sends an empty body
    try:
        body = RepositoryIndexRequest.model_validate(decode_json(raw) if raw.strip() else {})
    except ValidationError as error:
        raise InvalidRequest(f"the index request is invalid: {error.errors()[0]['msg']}") from None
    return await asyncio.to_thread(V2Models(svc).index, caller, bool(body.ready))


# Triton answers a load or unload with an empty 200, which is all its clients read.
_EMPTY: dict[int | str, dict[str, Any]] = {200: {"description": "Done (an empty body)", "content": {}}}


@router.post("/v2/repository/models/{name:v2_model}/load", response_class=Response, responses=_EMPTY)
async def repository_load(name: Name, caller: Admin, svc: Svc) -> Response:
    await V2Models(svc).load(caller, name)
    return Response(status_code=200)


@router.post("/v2/repository/models/{name:v2_model}/unload", response_class=Response, responses=_EMPTY)
async def repository_unload(name: Name, caller: Admin, svc: Svc) -> Response:
    await asyncio.to_thread(V2Models(svc).unload, caller, name)
    return Response(status_code=200)


@inference.post("/v2/models/{name:v2_model}/infer", response_model=InferenceResponse, openapi_extra=_INFER_DOC)
async def infer(name: Name, request: Request) -> Response:
    return await _infer(request, name, None)


@inference.post(
    "/v2/models/{name:v2_model}/versions/{version}/infer", response_model=InferenceResponse, openapi_extra=_INFER_DOC
)
async def infer_version(name: Name, version: Version, request: Request) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    caller = await authorize(request, "infer")
    raw = await request.body()
    body, given = parse_request(raw, request.headers.get(HEADER_LENGTH))
    wanted = [output.name for output in body.outputs] if body.outputs else None
    models = V2Models(services_of(request))
    result = await unless_disconnected(request, models.infer(caller, name, version, given, wanted, "kserve_v2"))
    add_response_headers(request, result.rate_limit)
    return encode_response(name, body, result)


def parse_request(raw: bytes, header_length: str | None) -> tuple[InferenceRequest, Given]:
    """The request's JSON and its texts or images, from JSON data or binary tensors after the JSON."""
    json_part, binary = raw, b""
    if header_length is not None:
        # ASCII digits only: str.isdigit also takes "²", which int() refuses.
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(raw):
            raise InvalidRequest(
                f"Inference-Header-Content-Length is {header_length!r}; the body has {len(raw)} bytes"
            )
        json_part, binary = raw[: int(header_length)], raw[int(header_length) :]
    try:
        body = InferenceRequest.model_validate(decode_json(json_part))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"invalid inference request: {where}: {first['msg']}") from None
    if len(body.inputs) != 1:
        raise InvalidRequest(f"the request has {len(body.inputs)} inputs; the model takes one, 'text' (BYTES)")
    offset = 0
    chunks: list[bytes | None] = []
    for tensor in body.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            chunks.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidRequest(
                f"input {tensor.name!r}: binary_data_size {size!r} does not fit the {len(binary)} binary bytes sent"
            )
        chunks.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidRequest(f"the inputs' binary_data_size add up to {offset} bytes; {len(binary)} were sent")
    tensor, chunk = body.inputs[0], chunks[0]
    count = check_text_input(tensor.name, tensor.datatype, tensor.shape)
    if chunk is not None:
        if tensor.datatype in ITEM_SIZE:
            raise InvalidRequest(f"input {tensor.name!r} has datatype {tensor.datatype}; the model expects BYTES")
        if tensor.name == IMAGE_INPUT:
            return body, Given(tensor.name, split_bytes(chunk, count, tensor.name))
        return body, Given(tensor.name, decode_bytes(chunk, count, tensor.name))
    texts = _json_texts(tensor.name, tensor.data, count)
    if tensor.name == IMAGE_INPUT:
        return body, Given(tensor.name, decode_base64_images(texts, tensor.name))
    return body, Given(tensor.name, texts)


def _json_texts(name: str, data: Any, count: int) -> list[str]:
    if not isinstance(data, list):
        raise InvalidRequest(f"input {name!r} has no data (a list of strings, or binary_data_size)")
    nested = bool(data) and all(isinstance(row, list) for row in data)  # [[t], [t]] for a [n, 1] shape
    flat = [item for row in data for item in row] if nested else data
    if len(flat) != count:
        raise InvalidRequest(f"input {name!r} has {len(flat)} elements; its shape says {count}")
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidRequest(f"input {name!r}: element {index} is {type(item).__name__}, not a string (BYTES)")
    return flat


def encode_response(name: str, body: InferenceRequest, result: Inferred) -> Response:
    """JSON outputs, or binary ones after the JSON where the request asks: `parameters.binary_data` per output,
    else `binary_data_output` for all."""
    default = bool((body.parameters or {}).get("binary_data_output", False))
    asked = {output.name: (output.parameters or {}).get("binary_data") for output in body.outputs or ()}
    outputs: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for tensor in result.outputs.values():
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        binary = asked.get(tensor.name)
        if binary if binary is not None else default:
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binaries.append(raw)
        else:
            entry["data"] = tensor.data()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": name, "model_version": str(result.version.version), "outputs": outputs}
    if body.id is not None:
        answer["id"] = body.id
    if not binaries:
        return FastJSONResponse(answer)
    header = orjson.dumps(answer)
    return Response(
        b"".join([header, *binaries]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
