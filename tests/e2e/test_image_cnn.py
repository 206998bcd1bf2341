"""Recipe image-cnn end to end over real HTTP, on scikit-learn's real handwritten digits written out as PNGs."""

from __future__ import annotations

from pathlib import Path

import httpx

from openmaas import Client
from tests.image_archives import digits_zip

# Small and quick on two cores: 8x8 digits upscaled to 16 pixels, 8 filters in the first block.
HYPERPARAMETERS = {
    "epochs": 8,
    "image_size": 16,
    "channels": 8,
    "learning_rate": 0.005,
    "crop_padding": 1,
    "validation_split": 0.2,
    "seed": 3,
}


def test_image_cnn_learns_the_digits(client: Client, tmp_path: Path) -> None:
    archive, _, targets = digits_zip()
    path = tmp_path / "digits.zip"
    path.write_bytes(archive)
    dataset = client.upload_dataset(path, name="digits", kind="image")
    assert dataset["kind"] == "image" and sum(dataset["labels"].values()) == dataset["rows"]
    assert dataset["report"]["width"] == {"min": 8, "max": 8} and len(dataset["labels"]) == 10
    job = client.create_job(dataset["id"], "digits-cnn", recipe="image-cnn", hyperparameters=HYPERPARAMETERS)
    final = client.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "succeeded", final
    metrics = final["metrics"]
    # The validation split is a stratified 20 % of the digits, never trained on.
    assert abs(metrics["validation_rows"] - 0.2 * dataset["rows"]) < 10
    assert metrics["val_accuracy"] >= 0.95, metrics["history"]
    version = client.get_model("digits-cnn")["versions"][0]
    assert version["task"] == "image-classification" and version["recipe"] == "image-cnn"
    assert len(targets) == 1797


def test_a_text_recipe_refuses_an_image_dataset(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    archive, _, _ = digits_zip(limit=60)
    path = tmp_path / "few.zip"
    path.write_bytes(archive)
    dataset = client.upload_dataset(path, name="few", kind="image")
    response = http.post("/v1/jobs", json={"dataset": dataset["id"], "model": "wrong", "recipe": "bow-mlp"})
    assert response.status_code == 422, response.text
    assert "image-cnn" in response.json()["error"]["message"]
