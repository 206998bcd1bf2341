"""Recipe `image-cnn`: a small convolutional network trained from scratch on an image dataset, and its inference.

Images are resized to `image_size` squares once, normalised by the training split's per-channel mean and
standard deviation (saved with the version, so serving applies exactly the same preprocessing), and augmented
per batch by a random crop (after padding) and an optional horizontal flip. Served by PyTorch, or with
`runtime: onnx` by ONNX Runtime on a graph exported and checked when the job ends (recipes/image_onnx.py).
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

from openmaas.data.images import square
from openmaas.recipes.base import CommonHyperparameters, ExportInfo, ImageExamples, StepResult
from openmaas.recipes.bow_mlp import parameter_count
from openmaas.recipes.image_onnx import (
    ONNX_FILE,
    PARITY_IMAGES,
    Probabilities,
    export_checked,
    load_served_graph,
)


class Hyperparameters(CommonHyperparameters):
    image_size: int = Field(32, ge=8, le=512, description="Images are resized to this many pixels square.")
    channels: int = Field(16, ge=1, le=512, description="Filters of the first block; each later block doubles.")
    crop_padding: int = Field(
        2, ge=0, le=64, description="Augmentation: pad by this many pixels and crop back at a random offset."
    )
    horizontal_flip: bool = Field(False, description="Augmentation: mirror half the training images.")
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="How the version is served on a CPU: PyTorch, or ONNX Runtime on a graph exported when the "
        "job ends and checked against PyTorch on real training images (the job fails if they differ).",
    )


def _block(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


class SmallCnn(nn.Module):
    """Three stages of 3x3 convolutions (c, 2c, 4c filters), max-pooled between, averaged, then a linear layer."""

    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            *_block(3, c),
            *_block(c, c),
            nn.MaxPool2d(2),
            *_block(c, 2 * c),
            *_block(2 * c, 2 * c),
            nn.MaxPool2d(2),
            *_block(2 * c, 4 * c),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.output = nn.Linear(4 * c, outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(images))


class Preprocessing:
    """Resize to a square and normalise per channel: the same at training and at serving."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor, size: int) -> Preprocessing:
        """From uint8 (N, 3, S, S) training images: their per-channel mean and standard deviation."""
        pixels = images.float().div(255).transpose(0, 1).reshape(3, -1)
        return cls(size, pixels.mean(dim=1).tolist(), pixels.std(dim=1).clamp_min(1e-3).tolist())

    def stack(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) arrays of any sizes → uint8 (N, 3, size, size)."""
        squares = np.stack([square(image, self.size) for image in images])
        return torch.from_numpy(squares).permute(0, 3, 1, 2).contiguous()

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch.float().div(255) - self.mean.to(batch.device)) / self.std.to(batch.device)

    def to_json(self) -> dict[str, Any]:
        return {"image_size": self.size, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


def augment(batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the padded batch (one offset per image) and, with `flip`, mirrors of half of them."""
    n, _, size, _ = batch.shape
    if padding:
        padded = nn.functional.pad(batch, (padding,) * 4)
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
        batch = torch.stack([padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets.tolist())])
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        batch = torch.where(mirrored.view(n, 1, 1, 1), batch.flip(3), batch)
    return batch


class ImageCnnPlan:
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
        probe = Preprocessing(hp.image_size, [0.0] * 3, [1.0] * 3)
        self.train_images = probe.stack(train.images)
        self.preprocessing = Preprocessing.fit(self.train_images, hp.image_size)
        self.validation_images = (
            self.preprocessing.stack(validation.images)
            if len(validation.images)
            else torch.zeros(0, 3, hp.image_size, hp.image_size, dtype=torch.uint8)
        )
        self.train_targets = torch.tensor(train.targets, dtype=torch.long)
        self.validation_targets = torch.tensor(validation.targets, dtype=torch.long)
        self.model = SmallCnn(hp.channels, len(labels)).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.learning_rate, foreach=True)
        self.loss_fn = nn.CrossEntropyLoss()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def train_batches(self, generator: torch.Generator, skip: int = 0) -> Iterator[Any]:
        order = torch.randperm(len(self.train_targets), generator=generator)
        # Each batch's augmentation has its own seed drawn here, so a resume that skips batches augments the
        # rest exactly as an uninterrupted epoch would.
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        size = self.hp.batch_size
        for number, start in enumerate(range(0, len(order), size)):
            if number < skip:
                continue
            rows = order[start : start + size]
            images = self.train_images[rows]
            if self.hp.crop_padding or self.hp.horizontal_flip:
                batch_generator = torch.Generator().manual_seed(epoch_seed + number)
                images = augment(images, self.hp.crop_padding, self.hp.horizontal_flip, batch_generator)
            yield images, self.train_targets[rows]

    def eval_batches(self) -> Iterator[Any]:
        for start in range(0, len(self.validation_targets), 256):
            yield (
                self.validation_images[start : start + 256],
                self.validation_targets[start : start + 256],
            )

    def step(self, batch: Any) -> StepResult:
        images, targets = batch
        targets = targets.to(self.device)
        logits = self.model(self.preprocessing.normalise(images.to(self.device)))
        loss = self.loss_fn(logits, targets)
        correct = (logits.argmax(dim=1) == targets).sum()
        return StepResult(loss=loss, correct=correct, count=len(targets))

    def export(self, directory: Path) -> ExportInfo:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        config = {
            "recipe": "image-cnn",
            "labels": self.labels,
            "channels": self.hp.channels,
            "preprocessing": self.preprocessing.to_json(),
        }
        metrics: dict[str, Any] = {}
        if self.hp.runtime == "onnx":
            pixels = self.preprocessing.normalise(self.train_images[:PARITY_IMAGES])
            cpu_model = SmallCnn(self.hp.channels, len(self.labels))
            cpu_model.load_state_dict(state)
            metrics["onnx_parity_max_abs_diff"] = export_checked(
                Probabilities(cpu_model), pixels, directory / ONNX_FILE
            )
        (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False))
        return ExportInfo(
            task="image-classification",
            runtime=self.hp.runtime,
            parameter_count=parameter_count(self.model),
            metrics=metrics,
        )


class ImageCnnInference:
    """Class probabilities for decoded RGB images: resized, normalised and stacked into one forward pass."""

    preferred_batch_size = 64
    warm_up_input = np.zeros((8, 8, 3), dtype=np.uint8)

    def __init__(self, directory: Path, device: str, runtime: str = "torch") -> None:
        config = json.loads((directory / "config.json").read_text())
        self.labels = tuple(config["labels"])
        pre = config["preprocessing"]
        self.preprocessing = Preprocessing(pre["image_size"], pre["mean"], pre["std"])
        self.onnx = load_served_graph(directory, runtime, device)
        self.onnx_path = self.onnx.path if self.onnx is not None else None
        if self.onnx is not None:
            self.device = "cpu"
            self.memory_bytes = self.onnx.memory_bytes
            return
        self.device = device
        self.model = SmallCnn(config["channels"], len(self.labels))
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))
        self.model.to(device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = self.preprocessing.normalise(self.preprocessing.stack(images).to(self.device))
        if self.onnx is not None:
            return self.onnx(batch.numpy())
        return torch.softmax(self.model(batch), dim=1).cpu().numpy()


class ImageCnnRecipe:
    name = "image-cnn"
    dataset_kind: Literal["image"] = "image"
    base_task: str | None = None
    shipped_bases: tuple[str, ...] = ()
    hyperparameters = Hyperparameters

    def plan(
        self,
        train: ImageExamples,
        validation: ImageExamples,
        labels: Sequence[str],
        hp: Any,
        device: str,
        base: Path | None = None,
    ) -> ImageCnnPlan:
        return ImageCnnPlan(train, validation, labels, hp, device)

    def load(self, directory: Path, device: str, runtime: str = "torch") -> ImageCnnInference:
        return ImageCnnInference(directory, device, runtime)


RECIPE = ImageCnnRecipe()
