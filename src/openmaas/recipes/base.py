"""The Recipe interfaces: hyperparameters, a training plan the loop drives, and loading for inference.

A `Recipe` trains on labelled texts (a classification dataset); a `TextRecipe` trains a language model on
documents (a text dataset), from scratch or from a base model in the registry; an `ImageRecipe` trains on
labelled images (an image dataset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from openmaas.domain.ids import DB_INT_MAX


class CommonHyperparameters(BaseModel):
    """Hyperparameters every recipe accepts. Unknown names are refused, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, le=100_000, description="Maximum number of passes over the training split.")
    batch_size: int = Field(32, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    loss_threshold: float | None = Field(
        None, ge=0, description="Stop as soon as an epoch's training loss is at or under this value."
    )
    validation_split: float = Field(0.1, ge=0, lt=1)
    validation_dataset_id: str | None = Field(
        None,
        max_length=64,
        description="A dataset of the same kind to validate on: then every training row trains, and "
        "validation_split is not used.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_steps: int | None = Field(None, ge=1, le=DB_INT_MAX, description="Stop after this many optimizer steps.")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=DB_INT_MAX, description="Stop when validation loss has not improved for this many epochs."
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, le=DB_INT_MAX, description="Also checkpoint every N steps (always at the end of each epoch)."
    )
    log_every_steps: int = Field(
        50, ge=0, le=DB_INT_MAX, description="A `step` progress event every N steps (0: none)."
    )
    num_workers: int = Field(
        1, ge=1, le=256, description="Ray Train workers for the job (cluster mode); the embedded server runs one."
    )


class InputTooLong(ValueError):
    """An input has more tokens than the model takes, and the caller asked not to truncate."""

    def __init__(self, index: int, tokens: int, max_length: int) -> None:
        super().__init__(f"input {index} has {tokens} tokens, over the model's limit of {max_length}")
        self.index = index
        self.tokens = tokens
        self.max_length = max_length


@dataclass(frozen=True)
class Examples:
    texts: Sequence[str]
    targets: Sequence[int]


@dataclass(frozen=True)
class ImageExamples:
    images: Sequence[Any]  # RGB uint8 numpy arrays (H, W, 3), decoded and cleaned when the dataset was uploaded
    targets: Sequence[int]


Chat = list[dict[str, str]]  # [{"role": ..., "content": ...}, ...], validated when the dataset was uploaded
Document = str | Chat  # one row of a text dataset: a plain text, or a chat's messages


class PinnedBase(BaseModel):
    """The exact registry version a fine-tuning job starts from, fixed when the job is created, so that an alias
    moved later does not change what a queued or resumed job trains on."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(
        description="The name of the tenant that owns the base model (for a foundation model, openmaas)."
    )
    model: str
    version: int = Field(ge=1)
    artifact_sha256: str = Field(description="The version's artifact hash: a deleted and re-made version is refused.")


@dataclass(frozen=True)
class StepResult:
    loss: Any  # a scalar torch tensor with a graph (training) or without (evaluation)
    correct: Any  # a scalar tensor (or int): summed by the loop, read once per epoch
    count: int


@dataclass(frozen=True)
class ExportInfo:
    task: str
    runtime: str
    parameter_count: int
    metrics: dict[str, Any] = field(default_factory=dict)  # what the export measured (an ONNX parity check)


class TrainingPlan(Protocol):
    """What the training loop drives: a model, its optimizer, batches and a loss."""

    model: Any
    optimizer: Any

    def train_batches(self, generator: Any, skip: int = 0) -> Iterator[Any]:
        """One epoch in the order drawn from `generator`, without its first `skip` batches (a resume)."""
        ...

    def trainable_state(self) -> dict[str, Any]:
        """The tensors training changes (what a checkpoint must keep)."""
        ...

    def load_trainable_state(self, state: dict[str, Any]) -> None: ...

    def eval_batches(self) -> Iterator[Any]: ...

    def step(self, batch: Any) -> StepResult: ...

    def export(self, directory: Path) -> ExportInfo: ...


class InferenceModel(Protocol):
    """A loaded model version. Classifiers have `predict_proba(texts)`, embedding models `embed(texts)`."""

    labels: tuple[str, ...]
    memory_bytes: int


class Loader(Protocol):
    name: str

    def load(self, directory: Path, device: str, runtime: str = ...) -> Any: ...


class Recipe(Loader, Protocol):
    name: str
    dataset_kind: Literal["classification"]
    hyperparameters: type[CommonHyperparameters]
    # The task of the registry version the `base_model` hyperparameter names (checked when the job is created);
    # None when the recipe has no base model.
    base_task: str | None

    def plan(
        self,
        train: Examples,
        validation: Examples,
        labels: Sequence[str],
        hp: Any,
        device: str,
    ) -> TrainingPlan: ...


class ImageRecipe(Loader, Protocol):
    name: str
    dataset_kind: Literal["image"]
    hyperparameters: type[CommonHyperparameters]
    # With a `base_task`, a `base_model` not in `shipped_bases` is a registry version of that task, which the job
    # service pins as `pinned_base` and the worker lays out as a directory for `plan(base=…)`.
    base_task: str | None
    shipped_bases: tuple[str, ...]

    def plan(
        self,
        train: ImageExamples,
        validation: ImageExamples,
        labels: Sequence[str],
        hp: Any,
        device: str,
        base: Path | None = None,
    ) -> TrainingPlan: ...


class TextRecipe(Loader, Protocol):
    name: str
    dataset_kind: Literal["text"]
    hyperparameters: type[CommonHyperparameters]
    # The task the `base_model` hyperparameter must serve when the recipe fine-tunes a registry version (the job
    # service resolves and pins it as `pinned_base`); None when the recipe trains from scratch.
    base_task: str | None

    def plan(
        self,
        train: Sequence[Document],
        validation: Sequence[Document],
        hp: Any,
        device: str,
        base: Path | None,
    ) -> TrainingPlan:
        """`base`: the pinned base version's files laid out as a directory (None without a base)."""
        ...


def resolve_device(requested: str) -> str:
    """`auto` picks CUDA when a GPU is present; asking for `cuda` without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return requested
