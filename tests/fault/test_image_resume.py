"""image-cnn survives kill -9 like every recipe: the job resumes to weights identical to an uninterrupted run,
its random crops and flips included."""

from __future__ import annotations

from pathlib import Path

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


def test_a_killed_image_job_resumes_to_identical_weights(start_server: type[Server], tmp_path: Path) -> None:
    path = tmp_path / "digits.zip"
    path.write_bytes(digits_zip(limit=800)[0])
    server = start_server()
    with server.client() as client:
        dataset = client.upload_dataset(path, name="digits", kind="image")["id"]
        job = client.create_job(dataset, "resumed", recipe="image-cnn", hyperparameters=HYPERPARAMETERS)
        checkpoint = wait_for_event(client, job["id"], "checkpoint")
    server.kill()
    server.start()
    with server.client() as client:
        final = client.wait_for_job(job["id"], timeout=600)
        assert final["status"] == "succeeded", final
        events = client.job_events(job["id"])
        resumed = next(e for e in events if e["type"] == "resumed")
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]

        straight = client.create_job(dataset, "straight", recipe="image-cnn", hyperparameters=HYPERPARAMETERS)
        assert client.wait_for_job(straight["id"], timeout=600)["status"] == "succeeded"
        resumed_version = client.get_model("resumed")["versions"][0]
        straight_version = client.get_model("straight")["versions"][0]
        assert resumed_version["artifact_sha256"] == straight_version["artifact_sha256"]
    assert_store_is_sound(server)
