"""Recipe `bow-mlp`: bag-of-words counts → Dense(16, ReLU) → sigmoid (2 classes) or softmax, Adam."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from openmaas.recipes.base import CommonHyperparameters, Examples, ExportInfo, StepResult
from openmaas.recipes.featurizers import BagOfWords, SparseBatch


class Hyperparameters(CommonHyperparameters):
    max_features: int = Field(20_000, ge=1, le=1_000_000, description="Vocabulary size of the featurizer.")
    hidden_units: int = Field(16, ge=1, le=4096)


class BowMlp(nn.Module):
    """The Dense layer on counts is an EmbeddingBag(sum) weighted by counts: the same function, sparse."""

    def __init__(self, vocab_size: int, hidden_units: int, outputs: int) -> None:
        super().__init__()
        self.hidden = nn.EmbeddingBag(vocab_size, hidden_units, mode="sum")
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_units))
        self.output = nn.Linear(hidden_units, outputs)
        # Glorot-uniform, as a Keras Dense layer starts.
        for weight, fan_in, fan_out in (
            (self.hidden.weight, vocab_size, hidden_units),
            (self.output.weight, hidden_units, outputs),
        ):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(weight, -bound, bound)
        nn.init.zeros_(self.output.bias)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(indices, offsets, per_sample_weights=counts) + self.hidden_bias
        return self.output(torch.relu(hidden))


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """One sigmoid unit for two classes (P(second label)), softmax otherwise."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def _tensors(batch: SparseBatch, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(batch.indices).to(device),
        torch.from_numpy(batch.offsets).to(device),
        torch.from_numpy(batch.counts).to(device),
    )


@dataclass
class _Encoded:
    """Featurized rows in CSR form so that a batch is cut out without featurizing again."""

    indices: np.ndarray
    counts: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    targets: torch.Tensor

    @classmethod
    def of(cls, featurizer: BagOfWords, examples: Examples, binary: bool) -> _Encoded:
        sparse = featurizer.transform(examples.texts)
        ends = np.append(sparse.offsets[1:], len(sparse.indices)).astype(np.int64)
        dtype = torch.float32 if binary else torch.long
        return cls(sparse.indices, sparse.counts, sparse.offsets, ends, torch.tensor(examples.targets, dtype=dtype))

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, rows: np.ndarray) -> tuple[SparseBatch, torch.Tensor]:
        lengths = self.ends[rows] - self.starts[rows]
        offsets = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        # Positions of every row's terms, gathered without a Python loop: each row's start, shifted to
        # where that row begins in the batch, plus a running index.
        take = np.repeat(self.starts[rows] - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return SparseBatch(self.indices[take], offsets, self.counts[take]), self.targets[torch.from_numpy(rows)]


class BowMlpPlan:
    def __init__(
        self, train: Examples, validation: Examples, labels: Sequence[str], hp: Hyperparameters, device: str
    ) -> None:
        self.labels = list(labels)
        self.hp = hp
        self.device = device
        self.binary = len(labels) == 2
        self.featurizer = BagOfWords.fit(train.texts, hp.max_features)
        self.train = _Encoded.of(self.featurizer, train, self.binary)
        self.validation = _Encoded.of(self.featurizer, validation, self.binary)
        outputs = 1 if self.binary else len(labels)
        self.model = BowMlp(max(len(self.featurizer.vocabulary), 1), hp.hidden_units, outputs).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.learning_rate, foreach=True)
        self.loss_fn: nn.Module = nn.BCEWithLogitsLoss() if self.binary else nn.CrossEntropyLoss()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def train_batches(self, generator: torch.Generator, skip: int = 0) -> Iterator[Any]:
        order = torch.randperm(len(self.train), generator=generator).numpy()
        for start in range(skip * self.hp.batch_size, len(order), self.hp.batch_size):
            yield self.train.batch(order[start : start + self.hp.batch_size])

    def eval_batches(self) -> Iterator[Any]:
        rows = np.arange(len(self.validation))
        for start in range(0, len(rows), 1024):
            yield self.validation.batch(rows[start : start + 1024])

    def step(self, batch: Any) -> StepResult:
        sparse, targets = batch
        targets = targets.to(self.device)
        logits = self.model(*_tensors(sparse, self.device))
        if self.binary:
            loss = self.loss_fn(logits[:, 0], targets)
            predicted = (logits[:, 0] > 0).long()
        else:
            loss = self.loss_fn(logits, targets)
            predicted = logits.argmax(dim=1)
        correct = (predicted == targets.long()).sum()
        return StepResult(loss=loss, correct=correct, count=len(targets))

    def export(self, directory: Path) -> ExportInfo:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        (directory / "featurizer.json").write_text(json.dumps(self.featurizer.to_json(), ensure_ascii=False))
        config = {
            "recipe": "bow-mlp",
            "labels": self.labels,
            "vocab_size": self.model.hidden.num_embeddings,
            "hidden_units": self.hp.hidden_units,
            "outputs": self.model.output.out_features,
        }
        (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False))
        return ExportInfo(task="text-classification", runtime="torch", parameter_count=parameter_count(self.model))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class BowMlpInference:
    preferred_batch_size = 128

    def __init__(self, directory: Path, device: str) -> None:
        config = json.loads((directory / "config.json").read_text())
        self.labels = tuple(config["labels"])
        self.featurizer = BagOfWords.from_json(json.loads((directory / "featurizer.json").read_text()))
        self.device = device
        self.model = BowMlp(config["vocab_size"], config["hidden_units"], config["outputs"])
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))
        self.model.to(device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.memory_bytes += sum(len(term) * 4 + 64 for term in self.featurizer.vocabulary)

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.model(*_tensors(self.featurizer.transform(texts), self.device))
        return probabilities(logits).cpu().numpy()


class BowMlpRecipe:
    name = "bow-mlp"
    dataset_kind: Literal["classification"] = "classification"
    base_task: str | None = None
    hyperparameters = Hyperparameters

    def plan(self, train: Examples, validation: Examples, labels: Sequence[str], hp: Any, device: str) -> BowMlpPlan:
        return BowMlpPlan(train, validation, labels, hp, device)

    def load(self, directory: Path, device: str, runtime: str = "torch") -> BowMlpInference:
        return BowMlpInference(directory, device)


RECIPE = BowMlpRecipe()
