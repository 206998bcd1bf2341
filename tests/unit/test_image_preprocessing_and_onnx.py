"""A Hugging Face directory's preprocessing, applied by our code, gives the pixels transformers' own image
processors give; a file we cannot apply exactly is refused. The ONNX export's parity check catches a graph that
does not answer as PyTorch does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from openmaas.recipes.hf_image import ImagePreprocessing, UnsupportedImageModel
from openmaas.recipes.image_onnx import ParityFailed, Probabilities, export_checked


def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (23 + 5 * i, 41 - 7 * i, 3), dtype=np.uint8) for i in range(5)]


def processors() -> list[object]:
    from transformers import CLIPImageProcessor, ViTImageProcessor

    return [
        ViTImageProcessor(
            size={"height": 32, "width": 24}, resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2] * 3
        ),
        CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 20}),
    ]


@pytest.mark.parametrize("processor", processors(), ids=["vit-size", "clip-shortest-edge-and-crop"])
def test_preprocessing_read_from_json_matches_transformers(processor: object) -> None:
    config = json.loads(processor.to_json_string())  # type: ignore[attr-defined]
    ours = ImagePreprocessing.from_json(config)
    expected = processor(images=photos(), return_tensors="np")["pixel_values"]  # type: ignore[operator]
    got = ours.normalise(ours.stack(photos())).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"do_resize": False}, "do_resize"),
        ({"size": {"longest_edge": 30}}, "size"),
        ({"size": {"shortest_edge": 24}, "do_center_crop": False}, "centre crop"),
        ({"resample": 9}, "resample"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
        ({"image_mean": "imagenet"}, "image_mean"),
        ({"size": {"height": 10**6, "width": 10}}, "size.height"),
    ],
)
def test_preprocessing_that_cannot_be_applied_exactly_is_refused(change: dict, reason: str) -> None:
    config = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, **change}
    with pytest.raises(UnsupportedImageModel, match=reason):
        ImagePreprocessing.from_json(config)


class BakedBatch(nn.Module):
    """Answers differently for a batch of two, the size the export traces with: a graph with a shape baked in."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = pixels.mean(dim=(2, 3))
        return logits * 3 if pixels.shape[0] == 2 else logits


def test_an_export_that_differs_from_pytorch_is_refused_and_leaves_no_graph(tmp_path: Path) -> None:
    pixels = torch.randn(6, 3, 8, 8)
    with pytest.raises(ParityFailed, match="differs from PyTorch"):
        export_checked(Probabilities(BakedBatch()), pixels, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_faithful_export_answers_every_batch_size(tmp_path: Path) -> None:
    import onnxruntime

    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    difference = export_checked(Probabilities(network), torch.randn(6, 3, 8, 8), tmp_path / "model.onnx")
    assert 0 <= difference <= 1e-6
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        pixels = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            expected = torch.softmax(network(pixels), dim=1).numpy()
        np.testing.assert_allclose(session.run(None, {"pixels": pixels.numpy()})[0], expected, atol=1e-6)
