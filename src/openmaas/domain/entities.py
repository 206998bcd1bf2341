"""The entities every layer passes around: datasets, jobs, model versions, API keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openmaas.domain.jobs import JobStatus

SYSTEM_TENANT = "openmaas"  # owns the foundation models, which every tenant may read


SCOPES = ("admin", "train", "infer", "read")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, the key, what the key may do and the limits that apply to it."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str] = frozenset(SCOPES)
    key_limits: dict[str, int] = field(default_factory=dict)
    tenant_limits: dict[str, int] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    limits: dict[str, int]
    disabled: bool
    created_at: float


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    revoked: bool = False
    expires_at: float | None = None
    limits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageRecord:
    tenant_id: str
    key_id: str | None
    kind: str  # "inference" or "training"
    model: str | None
    version: int | None
    items: int
    tokens: int  # input tokens (prompt tokens of a generation), or items for models without a tokenizer
    seconds: float
    created_at: float
    completion_tokens: int = 0  # tokens a generative model produced
    protocol: str | None = None  # the surface an inference call came through: native, openai, kserve_v2[_grpc]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    tenant_id: str
    key_id: str | None
    action: str
    target: str
    details: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class Dataset:
    id: str
    tenant_id: str
    name: str
    format: str
    sha256: str
    bytes: int
    rows: int
    labels: dict[str, int]
    report: dict[str, Any]
    created_at: float
    kind: str = "classification"  # or "text": documents for language-model recipes, no labels


@dataclass(frozen=True)
class Job:
    id: str
    tenant_id: str
    model: str
    dataset_id: str
    recipe: str
    hyperparameters: dict[str, Any]
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    model_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    attempts: int = 0
    priority: int = 0


@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: str
    type: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    tenant_id: str
    task: str
    recipe: str
    runtime: str
    labels: tuple[str, ...]
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]
    dataset_id: str | None
    dataset_sha256: str | None
    job_id: str | None
    parameter_count: int
    artifact_sha256: str
    files: dict[str, str]
    created_at: float
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    tenant_id: str
    created_at: float
    aliases: dict[str, int]
    versions: tuple[ModelVersion, ...] = ()
    public: bool = False  # readable and servable by every tenant; only the owner can change it
    owner: str = ""  # the owning tenant's name: others write `owner/name` to reach a public model

    @property
    def latest(self) -> ModelVersion | None:
        return max(self.versions, key=lambda v: v.version) if self.versions else None


@dataclass(frozen=True)
class File:
    """Bytes a tenant uploaded as they were sent (OpenAI's files), or one of ours written for them (a batch's
    output, a fine-tune's results). Parsed only when a job or a batch uses it."""

    id: str
    tenant_id: str
    filename: str
    purpose: str  # "fine-tune" | "batch" (uploaded); "batch_output" | "fine-tune-results" (ours)
    sha256: str
    bytes: int
    created_at: float


@dataclass(frozen=True)
class FineTune:
    """What an OpenAI fine-tuning job adds to the training job it is a face of (same id)."""

    job_id: str
    tenant_id: str
    base_model: str  # as the client named it
    training_file: str
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    hyperparameters: dict[str, Any]  # n_epochs, batch_size, learning_rate_multiplier as resolved
    result_file: str | None = None  # the step metrics' CSV, written once the job has finished
    created_at: float | None = None
    # `validating_files` until the files are checked, `failed` if they were unusable (with `error`: code,
    # message, param); None once the training job exists, whose status is then the fine-tune's.
    status: str | None = None
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None  # the pre-flight data report
    validation_file: str | None = None


@dataclass(frozen=True)
class Batch:
    """A file of requests answered in the background (OpenAI's batches). Status: validating, failed,
    in_progress, finalizing, completed, cancelling, cancelled, expired (its completion window passed first)."""

    id: str
    tenant_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: float
    metadata: dict[str, str] | None = None
    times: dict[str, float] = field(default_factory=dict)  # in_progress_at, finalizing_at, completed_at, ...
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None  # the input's bad lines: code, line, message, param


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch and, once answered, its answer (a status and body) or its error."""

    batch_id: str
    line: int  # 1-based, as the input file numbers them
    custom_id: str
    url: str
    body: dict[str, Any]
    status_code: int | None = None
    response: dict[str, Any] | None = None
