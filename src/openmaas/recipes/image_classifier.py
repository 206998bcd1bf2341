"""Recipe `image-classifier`: a new classification head on a pre-trained network, and its inference.

The network is the shipped EfficientNet-Lite0 (`base_model: efficientnet-lite0`), or a Hugging Face image
classifier in the registry (imported, or fine-tuned from one), pinned when the job is created.
With `train_base: false` the network is frozen: each image's pooled features are computed once, before the
first epoch, and only the head trains (fast, and the usual choice for small datasets). With `train_base: true`
every weight trains, image batches going through the whole network at each step.
EfficientNet's images are cropped to their central square and resized to `image_size`, then scaled as
(rgb - 127) / 128, the preprocessing the ImageNet weights were trained with; the version keeps it in its
config. A Hugging Face base keeps its own preprocessor_config.json, and the fine-tuned version is again a
Hugging Face directory (recipes/hf_image.py). With `runtime: onnx` the version also carries an ONNX graph,
checked against PyTorch on real training images when the job ends, and is served by ONNX Runtime.
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
from openmaas.recipes.base import CommonHyperparameters, ExportInfo, ImageExamples, PinnedBase, StepResult
from openmaas.recipes.bow_mlp import parameter_count
from openmaas.recipes.efficientnet_lite import (
    FEATURES,
    INPUT_MEAN,
    INPUT_SCALE,
    INPUT_SIZE,
    EfficientNetLite0,
    load_pretrained,
)
from openmaas.recipes.hf_image import (
    PREPROCESSOR_FILE,
    HuggingFaceImageInference,
    ImagePreprocessing,
    Logits,
    load_image_classifier,
    save_with_labels,
)
from openmaas.recipes.hf_image import pooled_features as hf_pooled_features
from openmaas.recipes.image_onnx import (
    ONNX_FILE,
    PARITY_IMAGES,
    Probabilities,
    export_checked,
    load_served_graph,
)

FEATURE_BATCH = 32
EFFICIENTNET = "efficientnet-lite0"


class Hyperparameters(CommonHyperparameters):
    base_model: str = Field(
        EFFICIENTNET,
        min_length=1,
        max_length=300,
        description="The pre-trained network: efficientnet-lite0 (shipped, ImageNet), or a Hugging Face image "
        "classifier in the registry (imported with POST /v1/models/import, or fine-tuned from one).",
    )
    train_base: bool = Field(False, description="Fine-tune the whole network (true) or only a new head (false).")
    image_size: int = Field(
        INPUT_SIZE,
        ge=32,
        le=512,
        description="EfficientNet: images are cropped square and resized to this. A Hugging Face base uses the "
        "size of its preprocessor_config.json.",
    )
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="How the version is served on a CPU: PyTorch, or ONNX Runtime on a graph exported when the "
        "job ends and checked against PyTorch on real training images (the job fails if they differ).",
    )
    pinned_base: PinnedBase | None = Field(
        None,
        description="Set by the server when the job is created: the exact registry version base_model named "
        "(none for efficientnet-lite0).",
    )


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


class EfficientNetBase:
    """The shipped EfficientNet-Lite0 with a new head; its preprocessing is fixed by how it was trained."""

    def __init__(self, classes: int, size: int, device: str) -> None:
        self.size = size
        self.classifier = Classifier(load_pretrained(), classes).to(device)
        self.head: nn.Module = self.classifier.head
        self.backbone: nn.Module = self.classifier.backbone
        self.dimensions = FEATURES

    def stack(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return to_batch(images, self.size)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return scaled(batch)

    def features(self, images: Sequence[np.ndarray], device: str) -> torch.Tensor:
        return pooled_features(self.classifier.backbone, images, self.size, device)

    def save(self, directory: Path, labels: Sequence[str], hp: Hyperparameters) -> None:
        state = {name: t.detach().cpu().contiguous() for name, t in self.classifier.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        config = {
            "recipe": "image-classifier",
            "labels": list(labels),
            "base_model": hp.base_model,
            "preprocessing": {"image_size": self.size, "crop": "center", "mean": INPUT_MEAN, "scale": INPUT_SCALE},
        }
        (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False))

    def cpu_logits(self) -> nn.Module:
        """A CPU copy of the network as trained (the ONNX export's source; the plan's own stays on its device)."""
        copy = Classifier(EfficientNetLite0(), self.head.out_features)  # type: ignore[arg-type]
        copy.load_state_dict({name: t.detach().cpu() for name, t in self.classifier.state_dict().items()})
        return copy


class HuggingFaceBase:
    """A Hugging Face image classifier (the pinned base laid out in `directory`) whose linear `classifier` is
    replaced by a new head for the job's labels; its preprocessing is its own preprocessor_config.json."""

    def __init__(self, directory: Path, classes: int, device: str) -> None:
        self.directory = directory
        self.preprocessing = ImagePreprocessing.read(directory / PREPROCESSOR_FILE)
        self.model = load_image_classifier(directory)
        self.dimensions = int(self.model.classifier.in_features)
        self.model.classifier = nn.Linear(self.dimensions, classes)
        self.model.to(device)
        self.classifier: nn.Module = Logits(self.model)
        self.head: nn.Module = self.model.classifier
        self.backbone: nn.Module = self.model

    def stack(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.preprocessing.stack(images)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return self.preprocessing.normalise(batch)

    def features(self, images: Sequence[np.ndarray], device: str) -> torch.Tensor:
        out = [torch.zeros(0, self.dimensions)]
        for start in range(0, len(images), FEATURE_BATCH):
            batch = self.normalise(self.stack(images[start : start + FEATURE_BATCH]).to(device))
            out.append(hf_pooled_features(self.model, batch).cpu())
        return torch.cat(out)

    def save(self, directory: Path, labels: Sequence[str], hp: Hyperparameters) -> None:
        save_with_labels(self.model, labels, self.directory, directory)

    def cpu_logits(self) -> nn.Module:
        copy = load_image_classifier(self.directory)
        copy.classifier = nn.Linear(self.dimensions, self.head.out_features)  # type: ignore[arg-type]
        copy.load_state_dict({name: t.detach().cpu() for name, t in self.model.state_dict().items()})
        return Logits(copy)


class ImageClassifierPlan:
    def __init__(
        self,
        train: ImageExamples,
        validation: ImageExamples,
        labels: Sequence[str],
        hp: Hyperparameters,
        device: str,
        base: Path | None = None,
    ) -> None:
        self.labels = list(labels)
        self.hp = hp
        self.device = device
        self.base: EfficientNetBase | HuggingFaceBase = (
            HuggingFaceBase(base, len(labels), device)
            if base is not None
            else EfficientNetBase(len(labels), hp.image_size, device)
        )
        self.classifier = self.base.classifier
        # A few real images, preprocessed as served, for the ONNX export's parity check.
        self.parity_images = self.base.stack(train.images[:PARITY_IMAGES])
        if hp.train_base:
            self.model: nn.Module = self.classifier
            self.train_inputs = self.base.stack(train.images)
            self.validation_inputs = self.base.stack(validation.images) if len(validation.images) else None
        else:
            # Frozen: the features never change, so they are computed once and only the head trains.
            self.base.backbone.eval().requires_grad_(False)
            self.base.head.requires_grad_(True)
            self.model = self.base.head
            self.train_inputs = self.base.features(train.images, device)
            self.validation_inputs = self.base.features(validation.images, device)
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
        logits = self.model(self.base.normalise(inputs) if self.hp.train_base else inputs)
        loss = self.loss_fn(logits, targets)
        return StepResult(loss=loss, correct=(logits.argmax(dim=1) == targets).sum(), count=len(targets))

    def export(self, directory: Path) -> ExportInfo:
        self.base.save(directory, self.labels, self.hp)
        metrics: dict[str, Any] = {}
        if self.hp.runtime == "onnx":
            metrics["onnx_parity_max_abs_diff"] = export_checked(
                Probabilities(self.base.cpu_logits()), self.base.normalise(self.parity_images), directory / ONNX_FILE
            )
        count = parameter_count(self.classifier)
        return ExportInfo(task="image-classification", runtime=self.hp.runtime, parameter_count=count, metrics=metrics)


class ImageClassifierInference:
    """Class probabilities for decoded RGB images, batched into one forward pass; `embed` gives the L2-normalised
    1280-d features."""

    preferred_batch_size = 32
    warm_up_input = np.zeros((32, 32, 3), dtype=np.uint8)

    def __init__(self, directory: Path, device: str, runtime: str = "torch") -> None:
        config = json.loads((directory / "config.json").read_text())
        self.labels = tuple(config["labels"])
        self.image_size = int(config["preprocessing"]["image_size"])
        self.device = device
        self.model = Classifier(EfficientNetLite0(), len(self.labels))
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))
        self.model.to(device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        # The network stays loaded for `embed`; predictions go through the checked graph where it serves.
        self.onnx = load_served_graph(directory, runtime, device)
        self.onnx_path = self.onnx.path if self.onnx is not None else None
        if self.onnx is not None:
            self.memory_bytes += self.onnx.memory_bytes

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = scaled(to_batch(images, self.image_size).to(self.device))
        if self.onnx is not None:
            return self.onnx(batch.numpy())
        return torch.softmax(self.model(batch), dim=1).cpu().numpy()

    @torch.inference_mode()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        features = self.model.backbone.features(scaled(to_batch(images, self.image_size).to(self.device)))
        return nn.functional.normalize(features, dim=1).cpu().numpy()


class ImageClassifierRecipe:
    name = "image-classifier"
    dataset_kind: Literal["image"] = "image"
    # A base_model other than the shipped ones is a registry version of this task, pinned by the job service.
    base_task: str | None = "image-classification"
    shipped_bases: tuple[str, ...] = (EFFICIENTNET,)
    hyperparameters = Hyperparameters

    def plan(
        self,
        train: ImageExamples,
        validation: ImageExamples,
        labels: Sequence[str],
        hp: Any,
        device: str,
        base: Path | None = None,
    ) -> ImageClassifierPlan:
        return ImageClassifierPlan(train, validation, labels, hp, device, base)

    def load(
        self, directory: Path, device: str, runtime: str = "torch"
    ) -> ImageClassifierInference | HuggingFaceImageInference:
        if (directory / PREPROCESSOR_FILE).is_file():  # trained on a Hugging Face base: again such a directory
            return HuggingFaceImageInference(directory, device, runtime)
        return ImageClassifierInference(directory, device, runtime)


RECIPE = ImageClassifierRecipe()
