"""Image models served by ONNX Runtime: an image-cnn trained with `runtime: onnx` on real digits carries a graph
checked against PyTorch when the job ends, and answers through the same predict route as its PyTorch twin."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np

from openmaas import Client
from tests.image_archives import digits_zip, encode

HYPERPARAMETERS = {
    "epochs": 3,
    "image_size": 16,
    "channels": 8,
    "learning_rate": 0.005,
    "validation_split": 0.2,
    "seed": 5,
}


def test_an_onnx_image_cnn_answers_as_its_pytorch_twin(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    archive, images, targets = digits_zip(limit=300)
    path = tmp_path / "digits.zip"
    path.write_bytes(archive)
    dataset = client.upload_dataset(path, name="digits-onnx", kind="image")["id"]
    jobs = {
        runtime: client.create_job(
            dataset, f"digits-{runtime}", recipe="image-cnn", hyperparameters={**HYPERPARAMETERS, "runtime": runtime}
        )
        for runtime in ("onnx", "torch")
    }
    finals = {runtime: client.wait_for_job(job["id"], timeout=300) for runtime, job in jobs.items()}
    assert all(final["status"] == "succeeded" for final in finals.values()), finals
    # The export's parity check ran on real training images and is recorded with the version.
    assert 0 <= finals["onnx"]["metrics"]["onnx_parity_max_abs_diff"] <= 1e-4
    onnx_version = client.get_model("digits-onnx")["versions"][0]
    assert onnx_version["runtime"] == "onnx" and onnx_version["metrics"]["onnx_parity_max_abs_diff"] <= 1e-4
    assert client.get_model("digits-torch")["versions"][0]["runtime"] == "torch"

    picked = list(range(0, 300, 7))
    inputs = [{"image": base64.b64encode(encode(images[i])).decode()} for i in picked]
    answers = {}
    for runtime in ("onnx", "torch"):
        response = http.post(f"/v1/models/digits-{runtime}/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        answers[runtime] = response.json()["predictions"]
    # The same training (same seed) gives the same weights; only the engine that runs them differs.
    assert [p["label"] for p in answers["onnx"]] == [p["label"] for p in answers["torch"]]
    for served, twin in zip(answers["onnx"], answers["torch"], strict=True):
        assert set(served["scores"]) == {str(d) for d in range(10)}
        assert max(abs(served["scores"][k] - twin["scores"][k]) for k in twin["scores"]) <= 1e-4
    correct = np.mean([p["label"] == str(targets[i]) for p, i in zip(answers["onnx"], picked, strict=True)])
    assert correct >= 0.5  # three short epochs on 240 digits: learnt, if not well

    files = [("image", (f"{i}.png", encode(images[i]), "image/png")) for i in picked[:4]]
    multipart = http.post("/v1/models/digits-onnx/predict", files=files)
    assert multipart.status_code == 200 and multipart.json()["predictions"] == answers["onnx"][:4]

    # The served graph is downloadable and runs anywhere ONNX Runtime does, on any batch size.
    import onnxruntime

    graph = client.download_artifact("digits-onnx", tmp_path / "digits.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()
    assert pixels.name == "pixels" and pixels.shape[1:] == [3, 16, 16] and not isinstance(pixels.shape[0], int)
    assert session.get_outputs()[0].name == "probabilities"
