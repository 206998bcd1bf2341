"""Settings: every OPENMAAS_* knob, read once at start-up and passed down."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_KEY_LENGTH = 32  # a key chosen by hand: refuse one too short to be a secret


def user_cache_dir() -> Path:
    """Where a user's caches go, as Hugging Face finds it: $XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openmaas"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENMAAS_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to a SQLite file under data_dir."
    )
    admin_key: str | None = Field(
        default=None,
        description="The bootstrap admin key, at least 32 characters (a shorter one is refused at start); "
        "generated if unset.",
    )
    rate_limit_window_s: int = Field(default=60, ge=1, description="The limits' window; per minute unless testing.")
    redis_url: str | None = Field(default=None, description="Share rate-limit counters through Redis.")
    artifacts_url: str | None = Field(
        default=None,
        description="Where datasets, model files and checkpoints are kept: unset for data_dir/artifacts, or "
        "s3://bucket/prefix (credentials from the standard AWS_* variables, AWS_ENDPOINT_URL for S3-compatible "
        "stores); the S3 store keeps a read cache in data_dir/cache/artifacts.",
    )
    cluster: str | None = Field(
        default=None,
        description="Run jobs and models on a Ray cluster: `auto` (this host is a node of it), `ray://host:10001` "
        "(Ray Client) or `host:6379` (the head's address). Unset: embedded, no Ray. Needs a Postgres database_url.",
    )
    ray_cpus_per_worker: float = Field(
        default=0.5, gt=0, description="CPUs each Ray Train worker asks for (a fraction lets Serve share the node)."
    )
    ray_gpus_per_worker: float = Field(
        default=0.0, ge=0, description="GPUs each Ray Train worker asks for (0: train on CPUs, gloo all-reduce)."
    )
    ray_cpus_per_replica: float = Field(
        default=0.5, gt=0, description="CPUs each Ray Serve replica of a model asks for."
    )
    ray_replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Ray Serve replicas of each loaded model when its load does not say (each asks for "
        "ray_cpus_per_replica).",
    )
    ray_placement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a job's workers, or a model's replica, may wait to be placed: then the job is queued "
        "again, and the request answered 503 with Retry-After.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve KServe v2's GRPCInferenceService on this port (on `host`); off when unset.",
    )

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="A dataset upload's largest file.")
    image_max_pixels: int = Field(
        default=25_000_000, ge=1, description="One image's width x height; larger is refused (a decompression bomb)."
    )
    image_max_total_pixels: int = Field(
        default=400_000_000, ge=1, description="An image dataset's images together, decoded (3 bytes a pixel)."
    )
    archive_max_files: int = Field(default=100_000, ge=1, description="Files in one uploaded zip archive.")
    archive_max_uncompressed_bytes: int = Field(
        default=1 << 30, ge=1, description="What one uploaded zip archive may inflate to, all files together."
    )
    archive_max_ratio: float = Field(
        default=200.0, gt=1, description="How much one member of an uploaded zip may inflate (a zip bomb beyond)."
    )
    max_json_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="The largest body of every other route: a larger Content-Length is a 413 before it is read.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="A request's request line and headers together; larger is a 431."
    )
    max_headers: int = Field(default=100, ge=8, description="Headers in one request; more is a 431.")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A request's head must arrive within this long of its first byte: else 408."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="The longest a request's body may pause between two reads: else 408."
    )
    keep_alive_timeout_s: int = Field(default=5, ge=1, description="An idle kept-alive connection is closed after.")
    max_connections: int = Field(
        default=1000,
        ge=2,
        description="Open connections and requests in flight (uvicorn's limit_concurrency): past it, 503.",
    )
    max_concurrent_jobs: int = 1
    job_poll_seconds: float = 0.2
    job_max_attempts: int = 3
    job_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease (and a fine-tune's while its files are validated): its process renews "
        "it every third of this; another process sharing the database takes the work over once it expired.",
    )
    node_name: str | None = Field(
        default=None,
        max_length=120,
        description="This machine's name in job leases (unique per host or container): a server restarted on the "
        "same node takes back its dead predecessor's jobs at once. The host name (and its pid namespace) if unset.",
    )
    checkpoints_kept: int = 3
    batch_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A running batch's lease: its server renews it every third of this; another server sharing "
        "the database takes the batch over once it expired.",
    )
    batch_completion_window_s: float = Field(
        default=86_400.0,
        gt=0,
        description="What a batch's completion_window '24h' lasts: a batch not done by then ends `expired`.",
    )
    progress_every_s: float = Field(
        default=5.0,
        gt=0,
        description="A training job's `step` event comes at least this often (at a step's end), "
        "as well as every `log_every_steps` steps.",
    )

    max_predict_inputs: int = 2048
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_queue_size: int = 4096
    request_timeout_s: float = 60.0
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans and metrics, for a provider set up in the environment. "
        "Off by default: /metrics serves Prometheus, and the hooks cost each request a look at the providers.",
    )
    usage_drain_s: float = Field(
        default=0.2, gt=0, description="How often usage records move from the local journal to the database."
    )
    model_memory_mb: int = 4096
    device: str = "auto"
    torch_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Intra-op threads of the PyTorch models this process serves (0: PyTorch's default, one per "
        "core). One by default: threads that wait for each other at every operator run several times slower "
        "than one while other processes hold a core (bench/torch_threads.py).",
    )
    max_queued_generations: int = Field(default=64, ge=1, description="Generations waiting per model.")
    generation_batch_size: int = Field(default=8, ge=1, description="Generations decoded together per model.")
    foundation_models: list[str] = Field(
        default=["all-minilm-l6-v2", "smollm2-135m-instruct", "efficientnet-lite0"],
        description="The shipped models to offer (a JSON list); GGUF ones are served as they are, the image "
        "model's weights are converted once on the first start.",
    )
    foundation_cache_dir: Path | None = Field(
        default=None,
        description="Where converted foundation models were kept (none is converted since the OpenVINO engine "
        "serves GGUF files; kept so that configurations that set it still start); cache_dir/foundation if unset.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: user_cache_dir(),
        description="The machine's cache, shared by every data directory (converted foundation models), like "
        "Hugging Face's: $XDG_CACHE_HOME/openmaas, else ~/.cache/openmaas.",
    )
    preload_models: list[str] = Field(
        default=["all-minilm-l6-v2"],
        description="Models loaded in the background after start (a JSON list; [] for none): foundation models "
        "or the default tenant's. /readyz answers 503 until they are loaded.",
    )

    @field_validator("admin_key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value and len(value) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"OPENMAAS_ADMIN_KEY has {len(value)} characters; use at least {MIN_ADMIN_KEY_LENGTH} "
                "(for instance `python -c 'import secrets; print(\"om-\" + secrets.token_urlsafe(32))'`), "
                "or leave it unset to have one generated"
            )
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if not value:  # set but empty: as unset
            return None
        if not value.startswith("s3://") or not value.removeprefix("s3://").strip("/"):
            raise ValueError(
                f"OPENMAAS_ARTIFACTS_URL {value!r} is not s3://bucket[/prefix]; leave it unset for local files"
            )
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _cluster_needs_a_shared_database(self) -> Settings:
        if self.cluster and not (self.database_url or "").startswith("postgresql"):
            raise ValueError(
                f"OPENMAAS_CLUSTER={self.cluster} needs a database every node and API process shares: set "
                "OPENMAAS_DATABASE_URL=postgresql+psycopg://... (SQLite is a file of one machine)"
            )
        return self

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openmaas.db'}"

    @field_validator("cache_dir", "foundation_cache_dir")
    @classmethod
    def _expanded(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def resolved_foundation_cache_dir(self) -> Path:
        return self.foundation_cache_dir or self.cache_dir / "foundation"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def artifacts_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "artifacts"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin.key"
