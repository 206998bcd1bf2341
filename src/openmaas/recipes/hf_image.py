"""Hugging Face image classifiers (a ViT, a ConvNeXt, …): the preprocessing read from preprocessor_config.json,
loading from safetensors, pooled features, writing a fine-tuned directory, and serving (loader
`pretrained-image-classifier`, the recipe of an imported directory).

The preprocessing is applied here from the JSON (resize with the named resample filter, an optional centre
crop, rescale, normalise) rather than through transformers' image processors, whose default backend needs
torchvision (not installable beside our torch build); the values are the ones those processors use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from openmaas.recipes.image_onnx import ONNX_FILE, load_served_graph

PREPROCESSOR_FILE = "preprocessor_config.json"
MAX_SIDE = 1024


class UnsupportedImageModel(ValueError):
    """The directory is not an image classifier this server can load, with the reason."""


def _side(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: {what} must be a whole number of pixels, 1 to {MAX_SIDE}")
    return value


def _triple(value: Any, what: str, positive: bool = False) -> tuple[float, float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value] * 3
    if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
        raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: {what} must be three numbers (one per RGB channel)")
    if positive and min(value) <= 0:
        raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: {what} must be positive")
    return float(value[0]), float(value[1]), float(value[2])


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize to `size` (height, width), or the shorter side to `shortest_edge` then a centre crop to `crop`;
    then (pixels x rescale - mean) / std per channel."""

    size: tuple[int, int] | None
    shortest_edge: int | None
    crop: tuple[int, int] | None
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, path: Path) -> ImagePreprocessing:
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise UnsupportedImageModel(f"{PREPROCESSOR_FILE} cannot be read as JSON: {error}") from None
        if not isinstance(config, dict):
            raise UnsupportedImageModel(f"{PREPROCESSOR_FILE} is not a JSON object")
        return cls.from_json(config)

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> ImagePreprocessing:
        size = config.get("size")
        fixed: tuple[int, int] | None = None
        shortest: int | None = None
        if config.get("do_resize", True) is False:
            raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: do_resize false is not supported (a batch has one size)")
        if isinstance(size, int) and not isinstance(size, bool):
            fixed = (_side(size, "size"), size)
        elif isinstance(size, dict) and "height" in size and "width" in size:
            fixed = (_side(size["height"], "size.height"), _side(size["width"], "size.width"))
        elif isinstance(size, dict) and "shortest_edge" in size:
            shortest = _side(size["shortest_edge"], "size.shortest_edge")
        else:
            raise UnsupportedImageModel(
                f"{PREPROCESSOR_FILE}: size must be {{'height', 'width'}}, {{'shortest_edge'}} or a number"
            )
        crop: tuple[int, int] | None = None
        if config.get("do_center_crop"):
            crop_size = config.get("crop_size")
            if isinstance(crop_size, int) and not isinstance(crop_size, bool):
                crop_size = {"height": crop_size, "width": crop_size}
            if not (isinstance(crop_size, dict) and "height" in crop_size and "width" in crop_size):
                raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: do_center_crop needs crop_size height and width")
            crop = (_side(crop_size["height"], "crop_size.height"), _side(crop_size["width"], "crop_size.width"))
        if shortest is not None and crop is None:
            raise UnsupportedImageModel(
                f"{PREPROCESSOR_FILE}: a shortest_edge resize needs a centre crop (batches need one size)"
            )
        resample = config.get("resample", 2)
        if resample not in (0, 1, 2, 3, 4, 5):
            raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: resample must be a Pillow filter number, 0 to 5")
        rescale = config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
        if isinstance(rescale, bool) or not isinstance(rescale, int | float) or rescale <= 0:
            raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: rescale_factor must be a positive number")
        if config.get("do_normalize", True):
            if "image_mean" not in config or "image_std" not in config:
                raise UnsupportedImageModel(f"{PREPROCESSOR_FILE}: do_normalize needs image_mean and image_std")
            mean = _triple(config["image_mean"], "image_mean")
            std = _triple(config["image_std"], "image_std", positive=True)
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(fixed, shortest, crop, int(resample), float(rescale), mean, std)

    @property
    def output_size(self) -> tuple[int, int]:
        size = self.crop or self.size
        assert size is not None  # from_json requires one of them
        return size

    def _one(self, image: np.ndarray) -> np.ndarray:
        picture = Image.fromarray(image)
        if self.size is not None:
            picture = picture.resize((self.size[1], self.size[0]), self.resample)
        else:
            assert self.shortest_edge is not None
            # As transformers sizes it: the shorter side to `shortest_edge`, the longer truncated to keep the ratio.
            width, height = picture.size
            short, long = sorted((width, height))
            longer = int(self.shortest_edge * long / short)
            size = (self.shortest_edge, longer) if width <= height else (longer, self.shortest_edge)
            picture = picture.resize(size, self.resample)
        if self.crop is not None:
            width, height = picture.size
            top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
            picture = picture.crop((left, top, left + self.crop[1], top + self.crop[0]))
        return np.asarray(picture.convert("RGB"))

    def stack(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) arrays of any sizes → uint8 (N, 3, height, width)."""
        height, width = self.output_size
        if not len(images):
            return torch.zeros(0, 3, height, width, dtype=torch.uint8)
        return torch.from_numpy(np.stack([self._one(image) for image in images])).permute(0, 3, 1, 2).contiguous()

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch.float() * self.rescale - mean) / std


def load_image_classifier(directory: Path) -> Any:
    """The `*ForImageClassification` model of a Hugging Face directory, from its safetensors weights only (the
    `classifier` must be one linear layer: it is what fine-tuning replaces)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(str(directory))
    architectures = [str(a) for a in getattr(config, "architectures", None) or []]
    if not any(a.endswith("ForImageClassification") for a in architectures):
        raise UnsupportedImageModel(f"architectures {architectures} has no *ForImageClassification model")
    model: Any = AutoModelForImageClassification.from_pretrained(str(directory), use_safetensors=True)
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        raise UnsupportedImageModel(
            f"{type(model).__name__} has no linear `classifier` layer; supported: models whose classification "
            "head is one linear layer (ViT, DeiT, BEiT, ConvNeXt, Swin, …)"
        )
    return model.eval()


def labels_of(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


class Logits(nn.Module):
    """The Hugging Face model as a plain module: pixels → logits (what ONNX export and the head's step see)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=pixels).logits
        return logits


@torch.inference_mode()
def pooled_features(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """What the model's `classifier` reads: its pooled features."""
    head = model.classifier
    model.classifier = nn.Identity()
    try:
        features: torch.Tensor = model(pixel_values=pixels).logits
    finally:
        model.classifier = head
    return features.flatten(1)


def save_with_labels(model: Any, labels: Sequence[str], source: Path, directory: Path) -> None:
    """`model` (its classifier already sized for `labels`) as a Hugging Face directory named with those labels,
    beside the preprocessor_config.json of `source`."""
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.config.num_labels = len(labels)
    model.save_pretrained(str(directory), safe_serialization=True)
    (directory / PREPROCESSOR_FILE).write_bytes((source / PREPROCESSOR_FILE).read_bytes())


class HuggingFaceImageInference:
    """Class probabilities for decoded RGB images through a Hugging Face image classifier, with the directory's
    own preprocessing; ONNX Runtime serves a version that carries a checked `model.onnx` and runtime `onnx`."""

    preferred_batch_size = 32
    warm_up_input = np.zeros((32, 32, 3), dtype=np.uint8)

    def __init__(self, directory: Path, device: str, runtime: str = "torch") -> None:
        self.preprocessing = ImagePreprocessing.read(directory / PREPROCESSOR_FILE)
        has_graph = (directory / ONNX_FILE).is_file()  # one imported as it is has none: PyTorch serves it
        self.onnx = load_served_graph(directory, runtime, device) if has_graph else None
        self.onnx_path = self.onnx.path if self.onnx is not None else None
        if self.onnx is not None:
            self.labels = tuple(labels_of_config(directory))
            self.device = "cpu"
            self.memory_bytes = self.onnx.memory_bytes
            return
        model = load_image_classifier(directory)
        self.labels = tuple(labels_of(model))
        self.device = device
        self.model = Logits(model).to(device).eval()
        self.dimensions = model.classifier.in_features
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = self.preprocessing.normalise(self.preprocessing.stack(images).to(self.device))
        if self.onnx is not None:
            return self.onnx(batch.numpy())
        return torch.softmax(self.model(batch), dim=1).cpu().numpy()


def labels_of_config(directory: Path) -> list[str]:
    id2label = json.loads((directory / "config.json").read_text())["id2label"]
    return [str(id2label[str(i)]) for i in range(len(id2label))]


class PretrainedImageClassifierLoader:
    """Serves an imported Hugging Face image-classification directory as it is."""

    name = "pretrained-image-classifier"

    def load(self, directory: Path, device: str, runtime: str = "torch") -> HuggingFaceImageInference:
        return HuggingFaceImageInference(directory, device, runtime)


RECIPE = PretrainedImageClassifierLoader()
