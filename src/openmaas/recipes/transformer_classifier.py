"""Recipe `transformer-classifier`: a linear head on a pre-trained sentence encoder, optionally fine-tuned whole.

`train_base: false` embeds every text once with the frozen encoder and trains only the head (fast on a
CPU); `train_base: true` back-propagates through the encoder too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from openmaas.recipes.base import CommonHyperparameters, Examples, ExportInfo, StepResult
from openmaas.recipes.encoders import (
    ClassifierHead,
    EncoderClassifier,
    OnPart,
    SentenceEncoder,
    ServedGraph,
    TextTokenizer,
    accepts_token_types,
    chunk_size,
    concurrent_batches,
    in_length_buckets,
    in_token_groups,
    load_encoder,
    parameter_count,
    read_max_length,
)
from openmaas.recipes.foundation import FOUNDATION_MODELS, foundation_directory
from openmaas.recipes.sentence_embedding import EmbeddingInference

ENCODER_DIR = "encoder"
ONNX_FILE = "openmaas-classifier.onnx"


class Hyperparameters(CommonHyperparameters):
    base_model: str = Field("all-minilm-l6-v2", description="A foundation model to start from.")
    train_base: bool = Field(False, description="Fine-tune the encoder too (slow on a CPU).")
    max_length: int | None = Field(None, ge=8, le=4096, description="Token limit; default: the model's own.")
    learning_rate: float | None = Field(  # type: ignore[assignment]  # None only until _defaults picks by train_base
        None, gt=0, le=10, description="Default: 1e-2 (head) or 2e-5 (whole)."
    )
    runtime: Literal["onnx", "onnx-int8"] = Field(
        "onnx",
        description="How the version is served on a CPU: float weights, or the linear layers' weights in int8 "
        "(about twice the throughput; answers move slightly). On a CPU a frozen encoder's training features "
        "come from the same int8 graph, so the validation metrics are close to the served model's (an int8 "
        "pass quantizes its activations per pass); with train_base they are measured in float.",
    )

    @field_validator("base_model")
    @classmethod
    def _known_base(cls, value: str) -> str:
        if value not in FOUNDATION_MODELS:
            raise ValueError(f"unknown base model {value!r}; available: {', '.join(FOUNDATION_MODELS)}")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Hyperparameters:
        if self.learning_rate is None:
            # A head alone learns fast; a whole pre-trained encoder needs small steps.
            self.learning_rate = 2e-5 if self.train_base else 1e-2
        return self


class TransformerClassifierPlan:
    def __init__(
        self, train: Examples, validation: Examples, labels: Sequence[str], hp: Hyperparameters, device: str
    ) -> None:
        self.hp = hp
        self.labels = list(labels)
        self.device = device
        self.base_directory = foundation_directory(hp.base_model)
        encoder = load_encoder(self.base_directory)
        uses_token_types = accepts_token_types(encoder)
        self.max_length = hp.max_length or read_max_length(self.base_directory)
        self.tokenizer = TextTokenizer(self.base_directory, self.max_length, uses_token_types)
        self.sentence = SentenceEncoder(encoder, uses_token_types).to(device)
        self.head = ClassifierHead(self.sentence.dimensions, len(labels)).to(device)
        self.model = EncoderClassifier(self.sentence, self.head).to(device)
        self.loss_fn = nn.CrossEntropyLoss()
        lr = hp.learning_rate
        assert lr is not None  # set by Hyperparameters._defaults
        self.optimizer: torch.optim.Optimizer
        if hp.train_base:
            self.train_data: Any = list(train.texts)
            self.validation_data: Any = list(validation.texts)
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        else:
            self._embedder: EmbeddingInference | None = None
            self.sentence.requires_grad_(False)
            self.train_data = self._embed(train.texts)
            self.validation_data = self._embed(validation.texts)
            self.optimizer = torch.optim.Adam(self.head.parameters(), lr=lr)
        self.train_targets = torch.tensor(list(train.targets), dtype=torch.long)
        self.validation_targets = torch.tensor(list(validation.targets), dtype=torch.long)

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Frozen features, computed once. On a CPU through ONNX Runtime with the version's runtime: the numbers
        it will serve (float: the same as PyTorch's), several times faster."""
        if not texts:
            return torch.zeros(0, self.sentence.dimensions)
        if self._embedder is None:
            runtime = self.hp.runtime if self.device == "cpu" else "torch"
            self._scratch = tempfile.TemporaryDirectory()
            onnx_path = Path(self._scratch.name) / "encoder.onnx"
            self._embedder = EmbeddingInference(self.base_directory, self.device, runtime, onnx_path=onnx_path)
            self._embedder.tokenizer = self.tokenizer
        return torch.from_numpy(self._embedder.embed_sorted(list(texts), self._embedder.chunk))

    def _batches(self, data: Any, targets: torch.Tensor, order: np.ndarray) -> Iterator[Any]:
        for start in range(0, len(order), self.hp.batch_size):
            rows = order[start : start + self.hp.batch_size]
            if self.hp.train_base:
                yield self.tokenizer([data[i] for i in rows]), targets[torch.from_numpy(rows)]
            else:
                yield data[torch.from_numpy(rows)], targets[torch.from_numpy(rows)]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict((self.model if self.hp.train_base else self.head).state_dict())

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        (self.model if self.hp.train_base else self.head).load_state_dict(state)

    def train_batches(self, generator: torch.Generator, skip: int = 0) -> Iterator[Any]:
        if not self.hp.train_base:
            self.sentence.eval()  # frozen: no dropout in the features
        order = torch.randperm(len(self.train_targets), generator=generator).numpy()
        return self._batches(self.train_data, self.train_targets, order[skip * self.hp.batch_size :])

    def eval_batches(self) -> Iterator[Any]:
        return self._batches(self.validation_data, self.validation_targets, np.arange(len(self.validation_targets)))

    def step(self, batch: Any) -> StepResult:
        inputs, targets = batch
        targets = targets.to(self.device)
        if self.hp.train_base:
            logits = self.model(**inputs.tensors(self.device))
        else:
            logits = self.head(inputs.to(self.device))
        loss = self.loss_fn(logits, targets)
        return StepResult(loss=loss, correct=(logits.argmax(dim=1) == targets).sum(), count=len(targets))

    def export(self, directory: Path) -> ExportInfo:
        encoder_dir = directory / ENCODER_DIR
        if self.hp.train_base:
            self.sentence.encoder.save_pretrained(str(encoder_dir), safe_serialization=True)
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
                if (self.base_directory / name).is_file():
                    (encoder_dir / name).write_bytes((self.base_directory / name).read_bytes())
        else:
            # Unchanged base: the same bytes, so the artifact store keeps a single copy of them.
            for path in sorted(self.base_directory.rglob("*")):
                if path.is_file() and not path.name.startswith(".") and path.suffix != ".md":
                    target = encoder_dir / path.relative_to(self.base_directory)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(path.read_bytes())
        head = {name: t.detach().cpu().contiguous() for name, t in self.head.state_dict().items()}
        save_file(head, str(directory / "head.safetensors"))
        config = {
            "recipe": "transformer-classifier",
            "labels": self.labels,
            "base_model": self.hp.base_model,
            "max_length": self.max_length,
            "dimensions": self.sentence.dimensions,
        }
        (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False))
        return ExportInfo(
            task="text-classification", runtime=self.hp.runtime, parameter_count=parameter_count(self.model)
        )


class TransformerClassifierInference:
    preferred_batch_size = 32

    def __init__(self, directory: Path, device: str, runtime: str) -> None:
        config = json.loads((directory / "config.json").read_text())
        self.labels = tuple(config["labels"])
        encoder_dir = directory / ENCODER_DIR
        encoder = load_encoder(encoder_dir)
        uses_token_types = accepts_token_types(encoder)
        self.tokenizer = TextTokenizer(encoder_dir, int(config["max_length"]), uses_token_types)
        head = ClassifierHead(int(config["dimensions"]), len(self.labels))
        head.load_state_dict(load_file(str(directory / "head.safetensors")))
        model = EncoderClassifier(SentenceEncoder(encoder, uses_token_types), head, probabilities=True).eval()
        self.graph = ServedGraph(model, uses_token_types, "probabilities", runtime, device, directory / ONNX_FILE)
        self.memory_bytes = self.graph.memory_bytes
        self.onnx_path = self.graph.onnx_path
        self.chunk = chunk_size(device)
        self.preferred_concurrency = concurrent_batches(device)

    def predict_proba(self, texts: Sequence[str], on_part: OnPart | None = None) -> np.ndarray:
        """Class probabilities per text; `on_part(positions, rows)` as each forward pass ends, when given."""
        if self.chunk == 1:  # a CPU: no padding, inputs of close token counts together
            return in_token_groups(self.tokenizer(list(texts)), self.graph, alone=self.graph.alone, on_part=on_part)
        result = in_length_buckets(list(texts), self._probabilities, self.chunk)
        if on_part is not None:
            on_part(range(len(texts)), result)
        return result

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        return self.graph(self.tokenizer(texts))


class TransformerClassifierRecipe:
    name = "transformer-classifier"
    dataset_kind: Literal["classification"] = "classification"
    base_task: str | None = "embeddings"  # a sentence encoder: the `base_model` hyperparameter must be one
    hyperparameters = Hyperparameters

    def plan(
        self, train: Examples, validation: Examples, labels: Sequence[str], hp: Any, device: str
    ) -> TransformerClassifierPlan:
        return TransformerClassifierPlan(train, validation, labels, hp, device)

    def load(self, directory: Path, device: str, runtime: str = "onnx") -> TransformerClassifierInference:
        return TransformerClassifierInference(directory, device, runtime)


RECIPE = TransformerClassifierRecipe()
