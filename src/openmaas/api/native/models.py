"""Routes for /v1/models: the registry (OpenAI-style list, versions, aliases) and predictions.

A model in a path may be another tenant's public one, `owner/name`: every `{name}` and `{ref}` takes the
`model_ref` convertor, one or two segments, so the slash reaches the registry (which answers 404 for what the
caller may not touch) instead of making the route miss. A segment never is one of the words that end these
routes' paths (`predict`, `load`, ...): `GET /v1/models/spam/predict` is the predict route's 405, not a read
of a model `spam/predict`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.datastructures import UploadFile

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Admin, Reader, Svc, Trainer, add_response_headers, authorize, json_body, services_of
from openmaas.api.direct import DirectRoute
from openmaas.api.disconnect import unless_disconnected
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.api.openapi import inline_schema
from openmaas.api.responses import FastJSONResponse
from openmaas.domain.entities import SYSTEM_TENANT, ModelVersion, Principal, RegisteredModel
from openmaas.domain.ids import DB_INT_MAX
from openmaas.domain.refs import ROUTE_WORDS
from openmaas.domain.results import Classification
from openmaas.errors import InvalidRequest, Unprocessable
from openmaas.protocol.native import (
    ALIAS_PATTERN,
    DEFAULT_TOP_K,
    MAX_DEFAULT_SCORES,
    MAX_TOP_K,
    REF_PATTERN,
    AliasSet,
    AutoscalingConfig,
    Deleted,
    ImageEmbeddingsResponse,
    ImageEmbedRequest,
    LoadedOut,
    LoadRequest,
    ModelImport,
    ModelOut,
    ModelUpdate,
    PredictRequest,
    PredictResponse,
    VersionOut,
)
from openmaas.protocol.openai import ListOf
from openmaas.runtime.backend import Autoscaling, BatchSettings, LoadedModel, Scaling
from openmaas.services.registry import reference_for


class ModelRefConvertor(StringConvertor):
    """`name`, `name:3` or `owner/name:alias`: one or two segments, neither of them a word of our routes."""

    _segment = r"(?!(?:" + "|".join(ROUTE_WORDS) + r")(?:/|$))[^/]+"
    regex = _segment + "(?:/" + _segment + ")?"


register_url_convertor("model_ref", ModelRefConvertor())
# The patterns are documented, not checked here: the registry checks them and names the rule broken.
Ref = Annotated[str, Path(json_schema_extra={"pattern": REF_PATTERN})]
Alias = Annotated[str, Path(json_schema_extra={"pattern": ALIAS_PATTERN})]

router = APIRouter(route_class=JSONRoute, tags=["models"], responses=error_responses(*AUTHENTICATED))
# Included before `router`: routes are tried in order, and predictions are the hot path. Their key and body
# are read by plain calls, not as dependencies, which FastAPI would solve anew on every request.
predictions = APIRouter(tags=["models"], route_class=DirectRoute, responses=error_responses(*AUTHENTICATED, 404, 503))

VersionNumber = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


def _image_files(field: str) -> dict[str, Any]:
    """A multipart body's documented shape: the images as files (any field name; `image` by convention)."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return {"type": "object", "properties": {field: files}, "required": [field]}


_predict_multipart = _image_files("image")
_predict_multipart["properties"]["top_k"] = {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K}


@predictions.post(
    "/v1/models/{ref:model_ref}/predict",
    response_model=PredictResponse,
    response_class=FastJSONResponse,
    responses=error_responses(422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(PredictRequest)},
                "multipart/form-data": {"schema": _predict_multipart},
            },
        }
    },
)
async def predict(ref: Ref, request: Request) -> FastJSONResponse:
    """Texts, or images (multipart files, or JSON `{"image": base64}` objects): each one's best label and the
    `top_k` best labels' probabilities."""
    caller = await authorize(request, "infer")
    svc = services_of(request)
    if is_multipart(request):
        images, fields = await uploaded_images(request, svc.inference.max_inputs)
        top_k = top_k_of(fields.get("top_k"), text=True)
        call = svc.inference.predict_images(caller, ref, images)
    else:
        body = await json_body(request)
        if not isinstance(body, dict) or "inputs" not in body:
            raise InvalidRequest('the body must be a JSON object {"inputs": ["text", ...]}', param="inputs")
        top_k = top_k_of(body.get("top_k"))
        inputs = body["inputs"]
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            call = svc.inference.predict_images(caller, ref, [image_of(item, i) for i, item in enumerate(inputs)])
        else:
            call = svc.inference.predict(caller, ref, inputs)
    result = await unless_disconnected(request, call)
    add_response_headers(request, result.rate_limit)
    return FastJSONResponse(
        {"model": result.model, "version": result.version.version, "predictions": predictions_of(result.result, top_k)}
    )


@predictions.post(
    "/v1/models/{ref:model_ref}/embed",
    response_model=ImageEmbeddingsResponse,
    response_class=FastJSONResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(ImageEmbedRequest)},
                "multipart/form-data": {"schema": _image_files("image")},
            },
        }
    },
)
async def embed_images(ref: Ref, request: Request) -> FastJSONResponse:
    """Image embeddings (the foundation model `efficientnet-lite0` and `image-classifier` versions): each
    image's pooled features, L2-normalised, in OpenAI's embeddings list. The images come as for predict."""
    caller = await authorize(request, "infer")
    svc = services_of(request)
    if is_multipart(request):
        images, _ = await uploaded_images(request, svc.inference.max_inputs)
    else:
        body = await json_body(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
            raise InvalidRequest(
                'the body must be a JSON object {"inputs": [{"image": "<base64 or a data: URL>"}, ...]} (texts are '
                "embedded by POST /v1/embeddings)",
                param="inputs",
            )
        images = [image_of(item, index) for index, item in enumerate(inputs)]
    result = await unless_disconnected(request, svc.inference.embed_images(caller, ref, images))
    add_response_headers(request, result.rate_limit)
    data = [
        {"object": "embedding", "index": index, "embedding": vector}
        for index, vector in enumerate(result.result.vectors.tolist())
    ]
    return FastJSONResponse(
        {
            "object": "list",
            "data": data,
            "model": result.model,
            "version": result.version.version,
            "usage": {"images": len(data)},
        }
    )


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def top_k_of(value: Any, *, text: bool = False) -> int | None:
    """`top_k` as the body gives it (a form field's text with `text`), checked: a 422 when out of bounds."""
    if value is None:
        return None
    number: int | None = None
    if text and isinstance(value, str) and re.fullmatch(r"[0-9]{1,7}", value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():  # JSON Schema's integers include 5.0
        number = int(value)
    if number is None or not 1 <= number <= MAX_TOP_K:
        message = f"top_k must be an integer from 1 to {MAX_TOP_K}, not {repr(value)[:40]}"
        raise Unprocessable(message, param="top_k", code="invalid_top_k")
    return number


def image_of(item: Any, index: int) -> bytes:
    """`{"image": "<base64>"}` or `{"image": "data:image/png;base64,..."}` → the image's bytes."""
    if not isinstance(item, dict) or not isinstance(item.get("image"), str) or set(item) != {"image"}:
        raise InvalidRequest(f'inputs[{index}] must be {{"image": "<base64 or a data: URL>"}}', param=f"inputs.{index}")
    text: str = item["image"]
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidRequest(f"inputs[{index}].image: a data: URL must be base64", param=f"inputs.{index}.image")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"inputs[{index}].image is not valid base64", param=f"inputs.{index}.image") from None


async def uploaded_images(request: Request, limit: int) -> tuple[list[bytes], dict[str, str]]:
    """Every file of a multipart body, in order (any field name; `image` by convention), and its text fields."""
    try:
        form = await request.form(max_files=limit, max_fields=limit)
    except Exception as error:  # python-multipart's parse errors and Starlette's limits alike are the caller's
        raise InvalidRequest(f"the multipart body cannot be read: {error}", param="inputs") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
    images = [await file.read() for file in files]
    await form.close()
    return images, fields


def predictions_of(classification: Classification, top_k: int | None = None) -> list[dict[str, Any]]:
    """The native shape: per input, the best label, its probability, and the `top_k` best labels'
    probabilities, best first (by default every label of a model with few, the DEFAULT_TOP_K best otherwise)."""
    labels = classification.labels
    if top_k is None:
        top_k = len(labels) if len(labels) <= MAX_DEFAULT_SCORES else DEFAULT_TOP_K
    out = []
    if len(labels) <= MAX_DEFAULT_SCORES:
        # Few labels: Python's sort of each row costs less than numpy's calls (one row of two labels, bow-mlp's hot
        # path, measured here side by side: 1.2 us against 102 us). Stable, so ties keep argmax's first label.
        for row in classification.probabilities.tolist():
            order = sorted(range(len(labels)), key=row.__getitem__, reverse=True)[:top_k]
            scores = {labels[index]: row[index] for index in order}
            out.append({"label": labels[order[0]], "score": row[order[0]], "scores": scores})
        return out
    ranked = classification.ranked(top_k)
    chosen = np.take_along_axis(classification.probabilities, ranked, axis=1).tolist()
    for indices, probabilities in zip(ranked.tolist(), chosen, strict=True):
        scores = {labels[index]: probability for index, probability in zip(indices, probabilities, strict=True)}
        out.append({"label": labels[indices[0]], "score": probabilities[0], "scores": scores})
    return out


def version_out(v: ModelVersion) -> VersionOut:
    return VersionOut(
        version=v.version,
        task=v.task,
        recipe=v.recipe,
        runtime=v.runtime,
        labels=list(v.labels),
        aliases=list(v.aliases),
        metrics=v.metrics,
        hyperparameters=v.hyperparameters,
        dataset_id=v.dataset_id,
        dataset_sha256=v.dataset_sha256,
        job_id=v.job_id,
        parameter_count=v.parameter_count,
        artifact_sha256=v.artifact_sha256,
        created_at=int(v.created_at),
    )


def model_out(m: RegisteredModel, caller: Principal, *, with_versions: bool) -> ModelOut:
    latest = m.latest
    return ModelOut(
        id=reference_for(caller, m),
        created=int(m.created_at),
        owned_by=m.owner,
        foundation=m.tenant_id == SYSTEM_TENANT,
        public=m.public,
        task=latest.task if latest else None,
        latest_version=latest.version if latest else None,
        aliases=m.aliases,
        versions=[version_out(v) for v in m.versions] if with_versions else None,
    )


@router.get("/v1/models", response_model=ListOf[ModelOut], response_model_exclude_none=True)
def list_models(caller: Reader, svc: Svc) -> ListOf[ModelOut]:
    return ListOf[ModelOut](data=[model_out(m, caller, with_versions=False) for m in svc.registry.list(caller)])


@router.post("/v1/models/import", status_code=201, response_model=VersionOut, responses=error_responses(422))
def import_model(body: ModelImport, caller: Admin, svc: Svc) -> VersionOut:
    return version_out(svc.registry.import_directory(caller, body.path, body.name, body.runtime))


@router.get(
    "/v1/models/{ref:model_ref}/artifact",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}, "application/zip": {}}},
        **error_responses(404, 503),
    },
)
async def download_artifact(
    ref: Ref, caller: Reader, svc: Svc, format: Literal["safetensors", "onnx", "archive"] = "safetensors"
) -> FileResponse:
    """`archive`: a classifier as a zip that predicts without OpenMaaS (weights, tokenizer or vocabulary,
    labels, preprocessing, a model card and `predict.py`)."""
    if format == "archive":
        version, path = await svc.exports.archive(caller, ref)
        return FileResponse(path, filename=f"{version.model}-{version.version}.zip", media_type="application/zip")
    version, path = await svc.artifacts.export(caller, ref, format)
    return FileResponse(
        path, filename=f"{version.model}-{version.version}.{format}", media_type="application/octet-stream"
    )


@router.post("/v1/models/{ref:model_ref}/load", response_model=LoadedOut, responses=error_responses(404, 422, 503))
async def load_model(ref: Ref, caller: Admin, svc: Svc, body: LoadRequest | None = None) -> LoadedOut:
    """On a cluster, `replicas` or `autoscaling` deploy the version so, or re-scale it in place when it is served
    already; the embedded server answers 422 to more than one replica."""
    settings, scaling = None, None
    if body is not None:
        scaling = scaling_of(body)
        if scaling is None or body.model_fields_set & BATCH_FIELDS:  # replicas alone keep the batch settings
            batch_size = body.max_batch_size or svc.settings.max_batch_size
            settings = BatchSettings(batch_size, body.max_wait_ms, max(body.max_queue_size, batch_size))
    served = await svc.inference.load(caller, ref, settings, scaling)
    return loaded_out(served)


BATCH_FIELDS = {"max_batch_size", "max_wait_ms", "max_queue_size"}


def scaling_of(body: LoadRequest) -> Scaling | None:
    if body.autoscaling is not None:
        config = body.autoscaling
        return Scaling(
            autoscaling=Autoscaling(config.min_replicas, config.max_replicas, config.target_ongoing_requests)
        )
    return Scaling(body.replicas) if body.replicas is not None else None


@router.post("/v1/models/{ref:model_ref}/unload", response_model=Deleted, responses=error_responses(404))
def unload_model(ref: Ref, caller: Admin, svc: Svc) -> Deleted:
    version = svc.inference.unload(caller, ref)
    return Deleted(id=f"{version.model}:{version.version}", object="model.loaded")


def loaded_out(loaded: LoadedModel) -> LoadedOut:
    autoscaling = loaded.scaling.autoscaling
    return LoadedOut(
        model=loaded.version.model,
        version=loaded.version.version,
        memory_bytes=loaded.memory_bytes,
        load_seconds=loaded.load_seconds,
        max_batch_size=loaded.settings.max_batch_size,
        max_wait_ms=loaded.settings.max_wait_ms,
        max_queue_size=loaded.settings.max_queue_size,
        replicas=loaded.scaling.replicas if autoscaling is None else None,
        autoscaling=AutoscalingConfig(**asdict(autoscaling)) if autoscaling is not None else None,
    )


@router.get("/v1/models/{name:model_ref}", response_model=ModelOut, responses=error_responses(404))
def get_model(name: Ref, caller: Reader, svc: Svc) -> ModelOut:
    return model_out(svc.registry.get(caller, name), caller, with_versions=True)


@router.patch("/v1/models/{name:model_ref}", response_model=ModelOut, responses=error_responses(404))
def update_model(name: Ref, body: ModelUpdate, caller: Trainer, svc: Svc) -> ModelOut:
    """Only the owner's own model (a bare name): another tenant's, public or not, answers 404."""
    return model_out(svc.registry.set_public(caller, name, body.public), caller, with_versions=True)


@router.put("/v1/models/{name:model_ref}/aliases/{alias}", response_model=ModelOut, responses=error_responses(404))
def set_alias(name: Ref, alias: Alias, body: AliasSet, caller: Trainer, svc: Svc) -> ModelOut:
    return model_out(svc.registry.set_alias(caller, name, alias, body.version), caller, with_versions=True)


@router.delete("/v1/models/{name:model_ref}/aliases/{alias}", response_model=ModelOut, responses=error_responses(404))
def delete_alias(name: Ref, alias: str, caller: Trainer, svc: Svc) -> ModelOut:
    return model_out(svc.registry.delete_alias(caller, name, alias), caller, with_versions=True)


@router.delete("/v1/models/{name:model_ref}/versions/{version}", response_model=Deleted, responses=error_responses(404))
def delete_version(name: Ref, version: VersionNumber, caller: Trainer, svc: Svc) -> Deleted:
    svc.registry.delete_version(caller, name, version)
    return Deleted(id=f"{name}:{version}", object="model.version")


@router.delete("/v1/models/{name:model_ref}", response_model=Deleted, responses=error_responses(404))
def delete_model(name: Ref, caller: Trainer, svc: Svc) -> Deleted:
    svc.registry.delete_model(caller, name)
    return Deleted(id=name, object="model")
