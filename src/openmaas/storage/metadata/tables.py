"""SQLAlchemy table definitions. Rows never leave storage/: repositories convert them to entities."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("limits", JSON, nullable=False, default=dict),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("prefix", String(32), nullable=False, index=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("limits", JSON, nullable=False, default=dict, server_default="{}"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("format", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("report", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("kind", String(16), nullable=False, default="classification", server_default="classification"),
)

# OpenAI's files: raw bytes in the artifact store by sha256, listed newest first by (created_at, id).
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_files_tenant_id_id", "tenant_id", "id"),
)

# OpenAI's face of a training job (same id): what the client asked for, and the CSV of step metrics.
fine_tunes = Table(
    "fine_tunes",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("base_model", String(256), nullable=False),
    Column("training_file", String(64), nullable=False),
    Column("suffix", String(64), nullable=True),
    Column("seed", Integer, nullable=False),
    Column("metadata", JSON, nullable=True),
    Column("hyperparameters", JSON, nullable=False),
    Column("result_file", String(64), nullable=True),
    # Set while the files are validated (`validating_files`), or `failed` when they were unusable: the training
    # job exists only after validation; null once it does (the job's status is then the fine-tune's).
    Column("created_at", Float, nullable=True),
    Column("status", String(32), nullable=True),
    Column("error", JSON, nullable=True),
    Column("report", JSON, nullable=True),
    Column("validation_file", String(64), nullable=True),
    # While `validating_files`: the process validating the files, and until when (the database's clock).
    Column("owner", String(200), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Index("ix_fine_tunes_tenant_id_job_id", "tenant_id", "job_id"),
)

# OpenAI's batches; a line's answer is written once (status_code null until then), so a restart resumes exactly.
batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("endpoint", String(512), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("metadata", JSON, nullable=True),
    Column("times", JSON, nullable=False),
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("errors", JSON, nullable=True),
    # Which process answers the batch's lines, until when (the database's clock): one at a time.
    Column("owner", String(200), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Index("ix_batches_tenant_id_id", "tenant_id", "id"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(512), nullable=False),
    Column("url", String(512), nullable=False),
    Column("body", JSON, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", JSON, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("dataset_id", String(64), nullable=False),
    Column("recipe", String(64), nullable=False),
    Column("hyperparameters", JSON, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text, nullable=True),
    Column("metrics", JSON, nullable=False, default=dict),
    Column("model_version", Integer, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("priority", Integer, nullable=False, default=0, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    # The process running the job's attempt, and until when (the database's clock) its claim holds: the owner
    # renews it while the attempt runs; another process may take over the job only once it expired.
    Column("owner", String(160), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_job_events_job_id_id", "job_id", "id"),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("last_version", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("public", Boolean, nullable=False, default=False, server_default=false()),
    UniqueConstraint("tenant_id", "name", name="uq_registered_models_tenant_name"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("task", String(32), nullable=False),
    Column("recipe", String(64), nullable=False),
    Column("runtime", String(16), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("hyperparameters", JSON, nullable=False),
    Column("dataset_id", String(64), nullable=True),
    Column("dataset_sha256", String(64), nullable=True),
    Column("job_id", String(64), nullable=True),
    Column("parameter_count", Integer, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("files", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("scope", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("model", String(128), nullable=True),
    Column("version", Integer, nullable=True),
    Column("items", Integer, nullable=False, default=0),
    Column("tokens", Integer, nullable=False, default=0),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("completion_tokens", Integer, nullable=False, default=0, server_default="0"),
    Column("protocol", String(16), nullable=True),
    Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
)

# How far each server process's usage journal reached the database: segments up to `applied` are in
# usage_records. Moved in the transaction that inserts a segment's records, so none is applied twice.
usage_journals = Table(
    "usage_journals",
    metadata,
    Column("journal", String(64), primary_key=True),
    Column("applied", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)
