"""OpenAI's fine-tuning jobs: the create request, and `FineTuningJob`, `FineTuningJobEvent` and
`FineTuningJobCheckpoint` as the spec names them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.protocol.openai.common import JSONInt

Auto = Literal["auto"]
Count = Annotated[JSONInt, Field(ge=1, le=100_000)]
Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class Hyperparameters(BaseModel):
    """Each a number or "auto" (the recipe's default) in a request; the numbers used in an answer."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | Count = "auto"
    batch_size: Auto | Count = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = "auto"


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="Picks the recipe: a causal LM → lora, the shipped encoder → "
        "transformer-classifier, `bow-mlp` → bow-mlp (README: the OpenAI platform API)."
    )
    training_file: str
    validation_file: str | None = Field(
        default=None, description="Validate on this file's rows instead of a split held out of the training file."
    )
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    seed: JSONInt | None = Field(default=None, ge=0, le=2**32 - 1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    integrations: None = Field(default=None, description="Not supported.")


class FineTuningError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    estimated_finish: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str
    status: Status
    hyperparameters: Hyperparameters
    training_file: str
    validation_file: str | None = None
    result_files: list[str]
    trained_tokens: int | None = None
    error: FineTuningError | None = None
    seed: int
    metadata: dict[str, str] | None = None
    method: Method | None = None
    user_provided_suffix: str | None = None


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: CheckpointMetrics
