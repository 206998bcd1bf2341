"""Wire schemas of the KServe Open Inference Protocol v2 (REST), named as the spec names them.

Quotes are from the protocol's REST definition (kserve/open-inference-protocol, `specification/protocol/
inference_rest.md`) and Triton's extensions (`binary_tensor_data.md`, `model_repository.md`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]
DATATYPES: tuple[str, ...] = Datatype.__args__  # type: ignore[attr-defined]

# Triton's binary tensor extension: "the JSON part of the body is followed by the binary tensor data; the
# `Inference-Header-Content-Length` header gives the length of the JSON part".
HEADER_LENGTH = "inference-header-content-length"

Parameters = dict[str, Any]


class ServerMetadataResponse(BaseModel):
    """`GET v2`: "name: a descriptive name for the server; version: the server version; extensions: the
    extensions supported by the server"."""

    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    """"name: the name of the tensor; datatype: the data-type of the tensor elements; shape: the shape of the
    tensor. Variable-size dimensions are specified as -1." Our `parameters` name a classifier's labels."""

    name: str
    datatype: Datatype
    shape: list[int]
    parameters: Parameters | None = None


class ModelMetadataResponse(BaseModel):
    """`GET v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]`: "name: the name of the model; versions: the
    model versions that may be explicitly requested via the appropriate endpoint; platform: the framework/backend
    for the model; inputs, outputs: the inputs and outputs required by the model"."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class ModelReadyResponse(BaseModel):
    """`GET v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]/ready`: "the model ready endpoint returns the
    readiness probe response for the server along with the name of the model"."""

    name: str
    ready: bool


class RequestInput(BaseModel):
    """"name: the name of the input tensor; shape: the shape of the input tensor; datatype; parameters: optional
    inference input parameters; data: the contents of the tensor" (row-major; absent when the binary extension
    carries it, with `parameters.binary_data_size`)."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str  # checked by the handler, which names the expected type in its error
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """"name: the name of the output tensor; parameters: optional" (`binary_data`: true for a binary output)."""

    model_config = ConfigDict(extra="allow")

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """`POST v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]/infer`: "id: an identifier for this request,
    echoed in the response; parameters; inputs: the input tensors; outputs: the output tensors requested — if
    not specified, all outputs produced by the model will be returned"."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """"name, shape, datatype, parameters, data" of an output tensor; `parameters.binary_data_size` instead of
    `data` when the tensor follows the JSON in binary."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """"model_name, model_version: the model and version used; id: the identifier given in the request;
    parameters; outputs: the output tensors"."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(BaseModel):
    """"A failed request is indicated by an HTTP error status along with an error object: error: the descriptive
    message for the error"."""

    error: str


class RepositoryIndexRequest(BaseModel):
    """Triton's `POST v2/repository/index`: "ready: optional, return only models ready for inferencing"."""

    model_config = ConfigDict(strict=True)  # `"ready": 0` is no boolean

    ready: bool | None = None


class RepositoryIndexEntry(BaseModel):
    """"name, version, state (READY, UNAVAILABLE, LOADING, UNLOADING), reason: why not READY"."""

    name: str
    version: str | None = None
    state: Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]
    reason: str = ""
