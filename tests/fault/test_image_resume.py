"""Image recipes survive kill -9 like every recipe: the job resumes to weights identical to an uninterrupted run,
image-cnn's random crops and flips included, and image-classifier's whole EfficientNet (its batch-norm
statistics too) when it fine-tunes the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.fault.test_resume import assert_store_is_sound, wait_for_event
from tests.image_archives import digits_zip

HYPERPARAMETERS = {
    "epochs": 4,
    "batch_size": 2,
    "image_size": 16,
    "channels": 8,
    "crop_padding": 2,
    "horizontal_flip": True,
    "seed": 11,
    "checkpoint_every_steps": 100,
    "log_every_steps": 100,
}
# Small for two cores: 24 digits at 32 pixels, 8 steps through the whole network, a checkpoint every 2.
CLASSIFIER_HYPERPARAMETERS = {
    "train_base": True,
    "epochs": 2,
    "batch_size": 6,
    "image_size": 32,
    "validation_split": 0,
    "seed": 4,
    "checkpoint_every_steps": 2,
    "log_every_steps": 2,
}
CASES: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "image-cnn": (HYPERPARAMETERS, {"limit": 800}),
    "image-classifier": (CLASSIFIER_HYPERPARAMETERS, {"limit": 24, "scale": 4}),
}


@pytest.mark.parametrize("recipe", list(CASES))
def test_a_killed_image_job_resumes_to_identical_weights(
    start_server: type[Server], tmp_path: Path, recipe: str
) -> None:
    hyperparameters, digits = CASES[recipe]
    path = tmp_path / "digits.zip"
    path.write_bytes(digits_zip(**digits)[0])
    server = start_server()
    with server.client() as client:
        dataset = client.upload_dataset(path, name="digits", kind="image")["id"]
        job = client.create_job(dataset, "resumed", recipe=recipe, hyperparameters=hyperparameters)
        checkpoint = wait_for_event(client, job["id"], "checkpoint", timeout=300)
    server.kill()
    server.start()
    with server.client() as client:
        final = client.wait_for_job(job["id"], timeout=600)
        assert final["status"] == "succeeded", final
        events = client.job_events(job["id"])
        resumed = next(e for e in events if e["type"] == "resumed")
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]

        straight = client.create_job(dataset, "straight", recipe=recipe, hyperparameters=hyperparameters)
        assert client.wait_for_job(straight["id"], timeout=600)["status"] == "succeeded"
        resumed_version = client.get_model("resumed")["versions"][0]
        straight_version = client.get_model("straight")["versions"][0]
        assert resumed_version["artifact_sha256"] == straight_version["artifact_sha256"]
    assert_store_is_sound(server)
