"""Export archives predict elsewhere: the archive's own predict.py, run in a fresh process from the unpacked
files with only numpy and safetensors (bow-mlp) or onnxruntime and tokenizers (transformer classifier), gives
the server's labels and scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from tests.conftest import DATASETS
from tests.e2e.test_train_and_predict import read_csv, write_csv

TEXTS = [
    "WINNER! Claim your free prize now, text WIN to 80086",
    "Are we still on for lunch tomorrow?",
    "URGENT: your mobile number has won £2000, call 09061701461 to claim",
    "ok see you at home",
    "qqqq zzzz",  # no known term at all: the hidden layer's bias alone
    "足球比赛 the match 今天 was great!!",
    "x" * 3000,  # over the encoder's 256 tokens: truncated, as the server does
]
ISOLATED = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def train(client: Client, path: Path, model: str, recipe: str, **hyperparameters: Any) -> None:
    dataset = client.upload_dataset(path, name=model)
    job = client.create_job(dataset["id"], model, recipe=recipe, hyperparameters=hyperparameters)
    final = client.wait_for_job(job["id"], timeout=600)
    assert final["status"] == "succeeded", final


def unpack(http: httpx.Client, model: str, target: Path) -> Path:
    response = http.get(f"/v1/models/{model}/artifact", params={"format": "archive"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f'filename="{model}-1.zip"' in response.headers["content-disposition"]
    archive = target / "export.zip"
    archive.write_bytes(response.content)
    with zipfile.ZipFile(archive) as opened:
        assert not any(name.endswith((".pkl", ".pt", ".bin", ".pickle")) for name in opened.namelist())
        opened.extractall(target)
    return target / f"{model}-1"


def predict_elsewhere(directory: Path, texts: list[str]) -> list[dict[str, Any]]:
    script = (directory / "predict.py").read_text()
    assert "openmaas" not in script.replace("OpenMaaS", "")  # imports nothing of ours
    result = subprocess.run(
        [sys.executable, "-I", "predict.py"],  # -I: without our sources' PYTHONPATH or the user's site
        cwd=directory,
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
        env=ISOLATED,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_predictions(client: Client, model: str, directory: Path) -> None:
    served = client.predict(model, TEXTS)["predictions"]
    exported = predict_elsewhere(directory, TEXTS)
    assert len(exported) == len(served)
    for mine, theirs in zip(exported, served, strict=True):
        assert mine["label"] == theirs["label"]
        assert mine["scores"].keys() == theirs["scores"].keys()
        for label, score in theirs["scores"].items():
            assert abs(mine["scores"][label] - score) < 1e-4, (label, mine, theirs)


def test_bow_mlp_archive_reproduces_the_servers_predictions(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    rows = read_csv(DATASETS / "sms_spam" / "sms_spam.csv")[:800]
    # A few Chinese rows: the featurizer's CJK characters and bigrams must be reproduced too.
    chinese = [(text, "ham") for text, _ in read_csv(DATASETS / "sib200_zh" / "sib200_zho_Hans_dev.csv")[:40]]
    train(client, write_csv(tmp_path / "spam.csv", rows + chinese), "export-bow", "bow-mlp", epochs=3)
    directory = unpack(http, "export-bow", tmp_path)
    assert {path.name for path in directory.iterdir()} == {
        "README.md",
        "labels.json",
        "model.safetensors",
        "predict.py",
        "preprocessing.json",
        "requirements.txt",
        "vocabulary.json",
    }
    assert json.loads((directory / "labels.json").read_text()) == ["ham", "spam"]
    card = (directory / "README.md").read_text()
    assert "# export-bow, version 1" in card and "bow-mlp" in card and "python predict.py" in card
    assert_same_predictions(client, "export-bow", directory)


def test_multiclass_bow_mlp_archive_uses_softmax(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    rows = read_csv(DATASETS / "sib200_zh" / "sib200_zho_Hans_train.csv")[:300]
    train(client, write_csv(tmp_path / "zh.csv", rows), "export-zh", "bow-mlp", epochs=3)
    directory = unpack(http, "export-zh", tmp_path)
    assert len(json.loads((directory / "labels.json").read_text())) > 2
    with zipfile.ZipFile(client.download_artifact("export-zh:1", tmp_path / "sdk.zip", format="archive")) as sdk:
        assert "export-zh-1/predict.py" in sdk.namelist()
    assert_same_predictions(client, "export-zh", directory)


@pytest.mark.slow
def test_transformer_classifier_archive_reproduces_the_servers_predictions(
    client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    rows = read_csv(DATASETS / "sms_spam" / "sms_spam.csv")[:300]
    train(client, write_csv(tmp_path / "spam.csv", rows), "export-minilm", "transformer-classifier", epochs=5)
    directory = unpack(http, "export-minilm", tmp_path)
    assert {"model.onnx", "tokenizer.json", "labels.json", "preprocessing.json", "predict.py"} <= {
        path.name for path in directory.iterdir()
    }
    assert "onnxruntime" in (directory / "requirements.txt").read_text()
    assert_same_predictions(client, "export-minilm", directory)


def test_archive_of_a_model_that_is_no_classifier_is_a_400(http: httpx.Client) -> None:
    response = http.get("/v1/models/all-minilm-l6-v2/artifact", params={"format": "archive"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "format" and error["code"] == "archive_unavailable"
    assert "format=safetensors" in error["message"]
