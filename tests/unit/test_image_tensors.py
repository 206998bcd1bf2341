"""The stored form of an image dataset: written one image at a time, read back by safetensors' own readers, whole
or a few rows; a refused archive leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from openmaas.data.image_tensors import ImageTensorWriter, load_image_dataset, thumbnails
from openmaas.data.images import ImageLimits, read_image_zip
from openmaas.data.uploads import DatasetFileError
from tests.image_archives import solid, two_classes, zip_of


def test_written_images_read_back_identically_by_safetensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(3, 5), (7, 2), (1, 1), (9, 9)]]
    target = tmp_path / "images.safetensors"
    with ImageTensorWriter(target) as writer:
        for image in images:
            writer.append(image)
        writer.finish(["a", "b", "a", "b"], ["a/0.png", "b/1.png", "a/2.png", "b/3.png"])
    tensors = load_file(str(target))  # the library's own reader checks the header and the offsets
    assert [tensors[f"image.{i:06d}"].tolist() for i in range(4)] == [image.tolist() for image in images]
    stored = load_image_dataset(target)
    assert stored.labels == ["a", "b", "a", "b"] and stored.files[1] == "b/1.png"
    assert all(np.array_equal(a, b) for a, b in zip(stored.images, images, strict=True))
    picked = thumbnails(target, per_class=1)
    assert [(t.label, t.file, t.width, t.height) for t in picked] == [("a", "a/0.png", 5, 3), ("b", "b/1.png", 2, 7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.safetensors"]  # the body file is gone


def test_a_zip_is_stored_with_its_labels_and_a_refused_one_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ok.safetensors"
    dataset = read_image_zip(zip_of(two_classes(3)), ImageLimits(), target)
    assert dataset.label_counts == {"a": 3, "b": 3} and load_image_dataset(target).images[0].shape == (10, 12, 3)
    refused = tmp_path / "refused.safetensors"
    with pytest.raises(DatasetFileError, match="b/x.png"):
        read_image_zip(zip_of([*two_classes(3), ("b/x.png", solid(4, 4, 99)[:30])]), ImageLimits(), refused)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.safetensors"]
