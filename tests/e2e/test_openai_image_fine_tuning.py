"""Image fine-tunes through the official `openai` client: a zip of labelled images uploaded to /v1/files with
purpose fine-tune trains `image-cnn` or a head on the frozen EfficientNet-Lite0 when a job names it, and the
fine-tuned model classifies images; a zip that cannot be used fails the job while `validating_files`, naming
the file and the member."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, Server
from tests.e2e.test_openai_fine_tuning import strict, wait
from tests.image_archives import digits_zip, encode, png_claiming, two_classes, zip_of


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def test_an_image_cnn_fine_tune_of_a_digits_zip_classifies_digits(oai: openai.OpenAI, http: httpx.Client) -> None:
    archive, images, targets = digits_zip(limit=300)
    file = oai.files.create(file=("digits.zip", archive), purpose="fine-tune")
    assert file.filename == "digits.zip" and file.bytes == len(archive)
    before = len(http.get("/v1/datasets", params={"limit": 1000}).json()["data"])
    created = strict(
        oai.fine_tuning.jobs.create(
            model="image-cnn", training_file=file.id, suffix="digits", seed=0, hyperparameters={"n_epochs": 10}
        )
    )
    assert created.hyperparameters.n_epochs == 10
    job = wait(oai, created.id, timeout=900)  # two shared cores, often busy
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:image-cnn:default:digits:{job.id}"
    native = http.get(f"/v1/jobs/{job.id}").json()
    assert native["recipe"] == "image-cnn"
    assert len(http.get("/v1/datasets", params={"limit": 1000}).json()["data"]) == before + 1  # parsed by the job
    report = next(e for e in oai.fine_tuning.jobs.list_events(job.id) if e.message.startswith("Data report"))
    assert report.data is not None and report.data["rows"] == 300 and len(report.data["label_balance"]) == 10
    assert report.data["width"] == {"min": 8, "max": 8} and "300 images in 10 classes" in report.message
    assert report.data["unit"] == "images"  # an image job counts images where a text job counts tokens
    assert job.trained_tokens is not None and 0 < job.trained_tokens <= 300 * 10

    picked = range(0, 300, 6)
    files = [("image", (f"{i}.png", encode(images[i]), "image/png")) for i in picked]
    answer = http.post(f"/v1/models/{job.fine_tuned_model}/predict", files=files)
    assert answer.status_code == 200, answer.text
    labels = [p["label"] for p in answer.json()["predictions"]]
    correct = sum(label == str(targets[i]) for label, i in zip(labels, picked, strict=True))
    assert correct >= 0.6 * len(labels)  # chance is 0.1; 10 epochs of 300 digits


@pytest.mark.slow  # about a minute on two shared cores: EfficientNet-Lite0 embeds each image at 224 px
def test_an_efficientnet_fine_tune_trains_a_head_on_the_frozen_backbone(oai: openai.OpenAI, http: httpx.Client) -> None:
    archive, images, targets = digits_zip(limit=120)
    file = oai.files.create(file=("digits.zip", archive), purpose="fine-tune")
    created = oai.fine_tuning.jobs.create(model="efficientnet-lite0", training_file=file.id, suffix="d")
    job = wait(oai, created.id, timeout=900)
    assert job.status == "succeeded", job.error
    native = http.get(f"/v1/jobs/{job.id}").json()
    assert native["recipe"] == "image-classifier" and native["hyperparameters"]["train_base"] is False
    answer = http.post(
        f"/v1/models/{job.fine_tuned_model}/predict",
        files=[("image", ("0.png", encode(images[0]), "image/png"))],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in {str(t) for t in targets}


def failed_validation(oai: openai.OpenAI, model: str, file_id: str) -> openai.types.fine_tuning.FineTuningJob:
    job = strict(oai.fine_tuning.jobs.create(model=model, training_file=file_id))
    assert job.status == "failed" and job.error is not None and job.error.param == "training_file"
    assert file_id in job.error.message
    assert list(oai.fine_tuning.jobs.checkpoints.list(job.id)) == []
    return job


def test_an_unusable_image_zip_fails_validation_naming_the_file_and_member(
    oai: openai.OpenAI, http: httpx.Client
) -> None:
    before = len(http.get("/v1/datasets", params={"limit": 1000}).json()["data"])
    truncated = two_classes(3) + [("a/broken.png", two_classes(1)[0][1][:-40])]
    bad = oai.files.create(file=("bad.zip", zip_of(truncated)), purpose="fine-tune")
    job = failed_validation(oai, "image-cnn", bad.id)
    assert job.error is not None and job.error.code == "corrupt_image" and "a/broken.png" in job.error.message
    escaping = oai.files.create(file=("up.zip", zip_of(two_classes(3) + [("../x.png", b"x")])), purpose="fine-tune")
    job = failed_validation(oai, "efficientnet-lite0", escaping.id)
    assert job.error is not None and "../x.png" in job.error.message
    bomb = oai.files.create(
        file=("bomb.zip", zip_of([*two_classes(3), ("b/big.png", png_claiming(60_000, 60_000))])), purpose="fine-tune"
    )
    job = failed_validation(oai, "image-cnn", bomb.id)
    assert job.error is not None and "b/big.png" in job.error.message
    text = oai.files.create(file=("rows.jsonl", b'{"text": "a", "label": "x"}\n'), purpose="fine-tune")
    job = failed_validation(oai, "image-cnn", text.id)
    assert job.error is not None and ".zip" in job.error.message
    assert len(http.get("/v1/datasets", params={"limit": 1000}).json()["data"]) == before  # nothing stored
