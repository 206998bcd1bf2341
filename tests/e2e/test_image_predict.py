"""Image predictions over real HTTP: JSON (base64 and data: URLs) and multipart, the version's own preprocessing,
and a bad image refused with its index without touching anyone else's batch."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Server
from tests.e2e.test_image_cnn import HYPERPARAMETERS
from tests.image_archives import digits_zip, encode, solid


@pytest.fixture(scope="module")
def digits(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """A digits model, `digits-cnn-predict`, and the digits' pixels and targets."""
    archive, images, targets = digits_zip()
    path = tmp_path_factory.mktemp("digits") / "digits.zip"
    path.write_bytes(archive)
    with server.client() as client:
        dataset = client.upload_dataset(path, name="digits", kind="image")
        job = client.create_job(
            dataset["id"], "digits-cnn-predict", recipe="image-cnn", hyperparameters=HYPERPARAMETERS
        )
        assert client.wait_for_job(job["id"], timeout=300)["status"] == "succeeded"
    return images, targets


def b64(image: np.ndarray) -> str:
    return base64.b64encode(encode(image)).decode()


def test_json_and_multipart_images_are_classified_alike(http: httpx.Client, digits: tuple) -> None:
    images, targets = digits
    picked = range(0, 1797, 18)  # 100 digits of every class
    inputs = [{"image": b64(images[i])} for i in picked]
    inputs[0] = {"image": "data:image/png;base64," + b64(images[0])}
    response = http.post("/v1/models/digits-cnn-predict/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    accuracy = np.mean([p["label"] == str(targets[i]) for p, i in zip(predictions, picked, strict=True)])
    assert accuracy >= 0.9
    assert set(predictions[0]["scores"]) == {str(d) for d in range(10)}

    files = [("image", (f"{i}.png", encode(images[i]), "image/png")) for i in picked[:5]]
    multipart = http.post("/v1/models/digits-cnn-predict/predict", files=files)
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["predictions"] == predictions[:5]


def test_a_bad_image_is_a_400_naming_its_index_and_others_are_served(http: httpx.Client, digits: tuple) -> None:
    images, _ = digits
    good = {"image": b64(images[5])}
    truncated = base64.b64encode(solid(40, 40, 1, "JPEG")[:300]).decode()
    bad_bodies = [
        ([good, {"image": truncated}], "inputs.1", "corrupt_image"),
        ([good, good, {"image": base64.b64encode(b"not an image").decode()}], "inputs.2", "not_an_image"),
        ([{"image": "%%% not base64"}], "inputs.0.image", None),
        ([good, {"picture": "x"}], "inputs.1", None),
    ]

    def call(body: list) -> httpx.Response:
        return http.post("/v1/models/digits-cnn-predict/predict", json={"inputs": body})

    # Bad and good requests at once: the bad ones never reach (or fail) a batch the good ones share.
    with ThreadPoolExecutor(8) as pool:
        bad = list(pool.map(call, [body for body, _, _ in bad_bodies]))
        fine = list(pool.map(call, [[good] * 3] * 8))
    for response, (_, param, code) in zip(bad, bad_bodies, strict=True):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and (code is None or error["code"] == code), error
        assert param.split(".")[1] in error["message"]
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 3 for r in fine)


def test_a_cnn_gives_no_image_embeddings_and_says_which_models_do(http: httpx.Client, digits: tuple) -> None:
    images, _ = digits
    response = http.post("/v1/models/digits-cnn-predict/embed", json={"inputs": [{"image": b64(images[0])}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "no_image_embeddings" and "efficientnet-lite0" in error["message"]


def test_texts_to_an_image_model_are_refused(http: httpx.Client, digits: tuple) -> None:
    response = http.post("/v1/models/digits-cnn-predict/predict", json={"inputs": ["a text"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_task" and "with images" in response.json()["error"]["message"]


def test_the_walkthrough_works_with_a_file_on_disk(
    server: Server, http: httpx.Client, digits: tuple, tmp_path: Path
) -> None:
    images, targets = digits
    path = tmp_path / "seven.png"
    index = int(np.flatnonzero(targets == 7)[3])
    path.write_bytes(encode(images[index]))
    with path.open("rb") as handle:
        response = http.post("/v1/models/digits-cnn-predict/predict", files={"image": (path.name, handle)})
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "7"
    with server.client() as client:
        assert client.predict_images("digits-cnn-predict", [path.read_bytes()])["predictions"][0]["label"] == "7"


def test_kserve_v2_serves_images_as_the_native_route_does(server: Server, http: httpx.Client, digits: tuple) -> None:
    import tritonclient.http as triton

    images, _ = digits
    encoded = [encode(images[i]) for i in (3, 500, 1200)]
    native = http.post(
        "/v1/models/digits-cnn-predict/predict", json={"inputs": [{"image": b64(images[i])} for i in (3, 500, 1200)]}
    ).json()["predictions"]
    metadata = http.get("/v2/models/digits-cnn-predict").json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton.InferInput("image", [len(encoded)], "BYTES")
    tensor.set_data_from_numpy(np.array(encoded, dtype=object), binary_data=True)
    headers = {"Authorization": f"Bearer {http.headers['Authorization'].removeprefix('Bearer ')}"}
    result = client.infer("digits-cnn-predict", [tensor], headers=headers)
    labels = [value.decode() for value in result.as_numpy("label").tolist()]
    assert labels == [p["label"] for p in native]
    probabilities = result.as_numpy("probabilities")
    assert np.allclose(probabilities.max(axis=1), [p["score"] for p in native], atol=1e-6)

    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(images[3])]}]}
    answer = http.post("/v2/models/digits-cnn-predict/infer", json=body).json()
    assert answer["outputs"][0]["data"] == [native[0]["label"]]
    broken = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(images[3]), "bm90"]}]}
    refused = http.post("/v2/models/digits-cnn-predict/infer", json=broken)
    assert refused.status_code == 400 and "inputs[1]" in refused.json()["error"]
    wrong = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a text"]}]}
    assert "'image'" in http.post("/v2/models/digits-cnn-predict/infer", json=wrong).json()["error"]
