"""Wire schemas of the native API: datasets, jobs, models and predictions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.config import JsonDict

from openmaas.protocol.openai import JSONInt, Model

# Requests take JSON's own types (strict): `"public": 0` or `"max_wait_ms": false` is a 400, as the schema says.
REQUEST = ConfigDict(extra="forbid", strict=True)
# Documented only: the services check these and name the rule broken (domain/refs.py has the same patterns).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ALIAS_PATTERN = r"^(?!latest$)[A-Za-z][A-Za-z0-9_-]{0,63}$"
REF_PATTERN = (
    r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
    r"(:([0-9]*[1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]{0,63}))?$"
)
SCOPE_NAMES: list[JsonValue] = ["read", "train", "infer", "admin"]


def _limits(*names: JsonValue) -> JsonDict:
    """A limits object's schema: the names the tenancy service knows, each a non-negative integer."""
    return {"propertyNames": {"enum": list(names)}, "additionalProperties": {"type": "integer", "minimum": 0}}


TENANT_LIMITS = _limits("requests_per_minute", "tokens_per_minute", "concurrent_jobs", "storage_bytes")
KEY_LIMITS = _limits("requests_per_minute", "tokens_per_minute")


class DatasetOut(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    kind: str = Field("classification", description="'classification' (labelled texts), 'text' (documents) or 'image'.")
    format: str
    sha256: str
    bytes: int
    rows: int
    labels: dict[str, int]
    report: dict[str, Any]
    created_at: int


class DatasetSample(BaseModel):
    object: Literal["dataset.sample"] = "dataset.sample"
    label: str
    file: str = Field(description="The image's path in the uploaded archive.")
    width: int = Field(description="Of the stored image, in pixels.")
    height: int
    image: str = Field(description="A thumbnail (64 pixels at most on its longer side) as a PNG data: URL.")


class DatasetSamples(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetSample]


class JobCreate(BaseModel):
    model_config = REQUEST

    dataset: str = Field(description="Dataset id to train on.")
    model: str = Field(description="Registry name the trained version is registered under.")
    recipe: str = "bow-mlp"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    priority: JSONInt = Field(0, ge=-100, le=100, description="Orders this tenant's own queued jobs; higher first.")


class JobOut(BaseModel):
    id: str
    object: Literal["training.job"] = "training.job"
    model: str
    dataset: str
    recipe: str
    hyperparameters: dict[str, Any]
    status: str
    reason: str | None
    priority: int
    attempts: int
    model_version: int | None
    metrics: dict[str, Any]
    created_at: int
    started_at: int | None
    finished_at: int | None


class CheckpointOut(BaseModel):
    object: Literal["training.job.checkpoint"] = "training.job.checkpoint"
    name: str
    step: int
    epoch: int
    metrics: dict[str, Any]
    created_at: float


class JobEventOut(BaseModel):
    id: int
    object: Literal["training.job.event"] = "training.job.event"
    type: str
    data: dict[str, Any]
    created_at: float


class VersionOut(BaseModel):
    version: int
    task: str
    recipe: str
    runtime: str
    labels: list[str]
    aliases: list[str]
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]
    dataset_id: str | None
    dataset_sha256: str | None
    job_id: str | None
    parameter_count: int
    artifact_sha256: str
    created_at: int


class ModelOut(Model):
    """OpenAI's model object (`id`, `object`, `created`, `owned_by`) plus the registry's own fields. `owned_by` is
    the owner's tenant name: `id` is `owned_by/name` for another tenant's public model."""

    foundation: bool = False
    public: bool = False
    task: str | None = None
    latest_version: int | None
    aliases: dict[str, int]
    versions: list[VersionOut] | None = None


class ModelImport(BaseModel):
    model_config = REQUEST

    path: str = Field(
        description="Absolute path, on the server, of a Hugging Face model directory or of a .gguf file (served "
        "by the OpenVINO engine)."
    )
    name: str = Field(description="Registry name for the imported version.")
    runtime: Literal["onnx", "onnx-int8"] | None = Field(
        None,
        description="For an encoder: float weights (the default) or the linear layers' weights in int8 (about "
        "twice the throughput on a CPU; embeddings move slightly). A causal LM directory and an image classifier "
        "are served with PyTorch, a GGUF file by the OpenVINO engine.",
    )


class AutoscalingConfig(BaseModel):
    """Ray Serve's autoscaling of a model's replicas, as its `autoscaling_config` names the fields (and with its
    defaults)."""

    model_config = REQUEST

    min_replicas: JSONInt = Field(1, ge=0, le=64, description="Replicas kept when idle (0: scale to zero)")
    max_replicas: JSONInt = Field(1, ge=1, le=64)
    target_ongoing_requests: float = Field(
        2.0, gt=0, le=1_000_000, description="Requests each replica should have in flight; more add replicas"
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be at most max_replicas")
        return self


class LoadRequest(BaseModel):
    """Batch settings for this model while it stays loaded (defaults: the server's, or the model's own), and on a
    cluster its Ray Serve replicas: `replicas` or `autoscaling` (defaults: OPENMAAS_RAY_REPLICAS, or what a
    loaded version runs with). A body that names only replicas keeps the batch settings a loaded version has."""

    model_config = REQUEST

    max_batch_size: JSONInt | None = Field(None, ge=1, le=4096)
    max_wait_ms: float = Field(0.0, ge=0, le=1000)
    max_queue_size: JSONInt = Field(4096, ge=1, le=1_000_000)
    replicas: JSONInt | None = Field(
        None, ge=1, le=64, description="Ray Serve replicas (cluster mode; the embedded server runs one)"
    )
    autoscaling: AutoscalingConfig | None = Field(None, description="Instead of `replicas` (cluster mode)")

    @model_validator(mode="after")
    def _room_for_a_batch(self) -> LoadRequest:
        if self.max_batch_size is not None and self.max_queue_size < self.max_batch_size:
            raise ValueError("max_queue_size must be at least max_batch_size")
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("replicas and autoscaling exclude each other: a fixed count, or bounds")
        return self


class LoadedOut(BaseModel):
    model: str
    version: int
    object: Literal["model.loaded"] = "model.loaded"
    memory_bytes: int
    load_seconds: float
    max_batch_size: int
    max_wait_ms: float
    max_queue_size: int
    replicas: int | None = Field(
        description="The replicas serving it (1 on the embedded server); null under autoscaling"
    )
    autoscaling: AutoscalingConfig | None = None


class ModelUpdate(BaseModel):
    model_config = REQUEST

    public: bool


class AliasSet(BaseModel):
    model_config = REQUEST

    version: JSONInt = Field(ge=1, le=2**53 - 1)  # domain.ids.DB_INT_MAX: exact in every JSON reader


# `top_k` of a prediction: at most the largest label set shipped (ImageNet's). Without it, `scores` holds every
# label of a model with up to MAX_DEFAULT_SCORES of them (as it always did), and the DEFAULT_TOP_K best of a
# larger one: 1,000 ImageNet scores per image would be most of the answer.
MAX_TOP_K = 1000
DEFAULT_TOP_K = 5
MAX_DEFAULT_SCORES = 100


Item = TypeVar("Item")
# At most the server's max_predict_inputs (2048 unless set otherwise): the served document states it.
Inputs = Annotated[list[Item], Field(min_length=1, max_length=2048)]


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="A PNG, JPEG, WebP or GIF file in base64, or as a `data:` URL (base64).")


class PredictRequest(BaseModel):
    """Documents the predict route's body, which the route reads itself (api/direct.py); the service checks it.
    A multipart body instead carries the images as files (any field name) and `top_k` as a form field."""

    inputs: Inputs[str] | Inputs[ImageInput] = Field(description="Texts, or images for an image-classification model.")
    top_k: int | None = Field(
        None,
        ge=1,
        le=MAX_TOP_K,
        description=f"How many labels `scores` holds, best first (all of them when the model has fewer). Default: "
        f"every label of a model with at most {MAX_DEFAULT_SCORES}, else the {DEFAULT_TOP_K} best. Out of "
        "bounds: 422.",
    )


class PredictionOut(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="The `top_k` most likely labels' probabilities, best first.")


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[PredictionOut]


class ImageEmbedRequest(BaseModel):
    """Documents the embed route's JSON body; a multipart body carries the images as files instead."""

    inputs: Inputs[ImageInput] = Field(description="The images to embed.")


class ImageEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] = Field(description="The image's pooled features, L2-normalised (1280 for EfficientNet).")


class ImageEmbeddingUsage(BaseModel):
    images: int


class ImageEmbeddingsResponse(BaseModel):
    """OpenAI's embeddings list (`data` of `{"object": "embedding", "index", "embedding"}`), for images."""

    object: Literal["list"] = "list"
    data: list[ImageEmbedding]
    model: str
    version: int
    usage: ImageEmbeddingUsage


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class TenantCreate(BaseModel):
    model_config = REQUEST

    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    limits: dict[str, Any] = Field(default_factory=dict, json_schema_extra=TENANT_LIMITS)


class TenantUpdate(BaseModel):
    model_config = REQUEST

    limits: dict[str, Any] | None = Field(None, json_schema_extra=TENANT_LIMITS)
    disabled: bool | None = None


class TenantOut(BaseModel):
    id: str
    object: Literal["tenant"] = "tenant"
    name: str
    limits: dict[str, int]
    disabled: bool
    created_at: int


class KeyCreate(BaseModel):
    model_config = REQUEST

    scopes: list[str] = Field(
        default_factory=lambda: ["read", "train", "infer"],
        json_schema_extra={"minItems": 1, "items": {"enum": SCOPE_NAMES}},
    )
    expires_at: float | None = Field(None, description="Unix seconds, in the future.")
    limits: dict[str, Any] = Field(default_factory=dict, json_schema_extra=KEY_LIMITS)


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    tenant_id: str
    prefix: str
    scopes: list[str]
    limits: dict[str, int]
    created_at: int
    expires_at: float | None
    revoked: bool
    key: str | None = Field(None, description="The secret: shown once, at creation.")


class AuditOut(BaseModel):
    id: int
    object: Literal["audit.entry"] = "audit.entry"
    tenant_id: str
    key_id: str | None
    action: str
    target: str
    details: dict[str, Any]
    created_at: float


class UsageRow(BaseModel):
    kind: str
    records: int
    items: int
    tokens: int = Field(description="Input tokens (a generation's prompt tokens), or items without a tokenizer.")
    completion_tokens: int = Field(0, description="Tokens generated by generative models.")
    seconds: float
    model: str | None = None
    key: str | None = None
    day: str | None = None
    tenant: str | None = None
    protocol: str | None = Field(None, description="native, openai, batch, kserve_v2 or kserve_v2_grpc (inference)")


class ClusterNodeInfo(BaseModel):
    node_id: str
    address: str
    alive: bool
    head: bool
    resources: dict[str, float] = Field(description="What the node offers: CPU, GPU, memory (bytes), ...")


class ClusterDeploymentInfo(BaseModel):
    name: str = Field(description="Ray Serve's application/deployment")
    status: str
    replicas: dict[str, int] = Field(description="Replicas by state (RUNNING, STARTING, ...)")
    target_replicas: int | None = Field(None, description="The replicas Serve is bringing it to")
    autoscaling: dict[str, JsonValue] | None = Field(
        None, description="Its autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...)"
    )


class ClusterInfo(BaseModel):
    """GET /v1/cluster: where jobs and models run."""

    mode: Literal["embedded", "ray"] = Field(description="embedded: this server alone, no Ray; ray: a Ray cluster")
    address: str | None = Field(None, description="The cluster's address (OPENMAAS_CLUSTER)")
    nodes: list[ClusterNodeInfo]
    total: dict[str, float] = Field(description="The cluster's resources")
    available: dict[str, float] = Field(description="Its resources not held by tasks, actors or replicas")
    deployments: list[ClusterDeploymentInfo]
