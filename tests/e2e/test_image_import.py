"""Importing a Hugging Face image classifier (a tiny random ViT built here with save_pretrained): it serves with
its own preprocessing, exactly as transformers computes it, and `image-classifier` fine-tunes it, head only or
whole. Pickled or missing weights are refused before anything is stored."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from openmaas import APIError, Client
from tests.image_archives import digits_zip, encode

LABELS = ["cat", "dog", "bird"]


def tiny_vit(directory: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    ViTForImageClassification(config).save_pretrained(str(directory), safe_serialization=True)
    # Not the model's square: the resize to 32 x 32 (bicubic) and the normalisation come from this file.
    ViTImageProcessor(
        size={"height": 32, "width": 32}, resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]
    ).save_pretrained(str(directory))
    return directory


def photos(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (20 + 3 * i, 28, 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture(scope="module")
def vit(client: Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-vit")
    version = client.import_model(directory, "tiny-vit")
    assert version["task"] == "image-classification" and version["recipe"] == "pretrained-image-classifier"
    assert version["labels"] == LABELS and version["runtime"] == "torch"
    return directory


def test_an_imported_vit_predicts_as_transformers_does(http: httpx.Client, vit: Path) -> None:
    from transformers import ViTForImageClassification, ViTImageProcessor

    images = photos(3)
    inputs = [{"image": base64.b64encode(encode(image)).decode()} for image in images]
    response = http.post("/v1/models/tiny-vit/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]

    model = ViTForImageClassification.from_pretrained(str(vit)).eval()
    pixels = ViTImageProcessor.from_pretrained(str(vit))(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = torch.softmax(model(pixel_values=pixels).logits, dim=1).numpy()
    for row, prediction in zip(expected, served, strict=True):
        assert prediction["label"] == LABELS[int(row.argmax())]
        np.testing.assert_allclose([prediction["scores"][label] for label in LABELS], row, atol=1e-5)

    files = [("image", (f"{i}.png", encode(image), "image/png")) for i, image in enumerate(images)]
    multipart = http.post("/v1/models/tiny-vit/predict", files=files)
    assert multipart.status_code == 200 and multipart.json()["predictions"] == served


@pytest.mark.parametrize("weights", ["pytorch_model.bin", None])
def test_an_image_directory_without_safetensors_is_refused(
    client: Client, http: httpx.Client, tmp_path: Path, weights: str | None
) -> None:
    directory = tiny_vit(tmp_path / "vit")
    (directory / "model.safetensors").unlink()
    if weights is not None:
        # Never unpickled: refused by its name, so its bytes need not even be a pickle.
        (directory / weights).write_bytes(b"\x80\x04 not read")
    name = f"refused-{'pickle' if weights else 'empty'}"
    response = http.post("/v1/models/import", json={"path": str(directory), "name": name})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == ("pickled_weights" if weights else "invalid_model_directory"), error
    with pytest.raises(APIError) as missing:
        client.get_model(name)
    assert missing.value.status_code == 404


def test_an_image_directory_without_its_preprocessor_config_is_refused(http: httpx.Client, tmp_path: Path) -> None:
    directory = tiny_vit(tmp_path / "vit")
    (directory / "preprocessor_config.json").unlink()
    response = http.post("/v1/models/import", json={"path": str(directory), "name": "no-preprocessing"})
    assert response.status_code == 422 and "preprocessor_config.json" in response.json()["error"]["message"]


def weights(client: Client, ref: str, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(client.download_artifact(ref, path)))


@pytest.fixture(scope="module")
def digits_dataset(client: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("digits") / "digits.zip"
    path.write_bytes(digits_zip(limit=60)[0])
    return str(client.upload_dataset(path, name="digits-vit", kind="image")["id"])


@pytest.mark.parametrize("train_base", [False, True])
def test_image_classifier_fine_tunes_an_imported_vit(
    client: Client, http: httpx.Client, vit: Path, digits_dataset: str, tmp_path: Path, train_base: bool
) -> None:
    name = f"digits-vit-{'whole' if train_base else 'head'}"
    hyperparameters = {
        "base_model": "tiny-vit",
        "train_base": train_base,
        "epochs": 2,
        "batch_size": 8,
        "validation_split": 0.2,
        # The whole network also goes to ONNX, through the export's parity check on the digits.
        "runtime": "onnx" if train_base else "torch",
    }
    job = client.create_job(digits_dataset, name, recipe="image-classifier", hyperparameters=hyperparameters)
    assert job["hyperparameters"]["pinned_base"]["model"] == "tiny-vit"
    final = client.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "succeeded", final
    version = client.get_model(name)["versions"][0]
    assert version["labels"] == [str(d) for d in range(10)] and version["runtime"] == hyperparameters["runtime"]

    digits = digits_zip(limit=60)[1]
    inputs = [{"image": base64.b64encode(encode(digits[i])).decode()} for i in range(5)]
    response = http.post(f"/v1/models/{name}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(set(p["scores"]) == {str(d) for d in range(10)} for p in predictions)

    base = weights(client, "tiny-vit", tmp_path / "base.safetensors")
    tuned = weights(client, name, tmp_path / "tuned.safetensors")
    backbone = [key for key in base if not key.startswith("classifier.")]
    changed = [key for key in backbone if not torch.equal(base[key], tuned[key])]
    assert tuned["classifier.weight"].shape == (10, 32)
    # Head only: the ViT's own weights are the imported ones to the bit; whole: every layer moved.
    assert (changed == backbone) if train_base else (changed == [])


def test_image_classifier_refuses_a_base_that_is_not_an_image_classifier(
    http: httpx.Client, digits_dataset: str
) -> None:
    for base_model, status in (("no-such-model", 404), ("all-minilm-l6-v2", 422)):
        body = {
            "dataset": digits_dataset,
            "model": "wrong-base",
            "recipe": "image-classifier",
            "hyperparameters": {"base_model": base_model},
        }
        response = http.post("/v1/jobs", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == "hyperparameters.base_model"
