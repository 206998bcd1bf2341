"""OpenAI-compatible embeddings from the shipped all-MiniLM-L6-v2, checked with the official `openai` client."""

from __future__ import annotations

import base64
import csv

import httpx
import numpy as np
import openai
import pytest

from openmaas.recipes.foundation import foundation_directory
from tests.conftest import ADMIN_KEY, DATASETS, Server

MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    with (DATASETS / "sib200_zh" / "sib200_zho_Hans_dev.csv").open(encoding="utf-8") as handle:
        chinese = [row["text"] for row in csv.DictReader(handle)][:4]
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as handle:
        english = [row["text"] for row in csv.DictReader(handle)][:12]
    return english + chinese


def test_foundation_model_is_listed_for_every_key(oai: openai.OpenAI, http: httpx.Client) -> None:
    assert MODEL in [m.id for m in oai.models.list()]
    entry = next(m for m in http.get("/v1/models").json()["data"] if m["id"] == MODEL)
    assert entry["foundation"] is True and entry["task"] == "embeddings" and entry["owned_by"] == "openmaas"
    model = oai.models.retrieve(MODEL)
    assert model.id == MODEL


def test_embeddings_match_sentence_transformers(oai: openai.OpenAI, sentences: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(foundation_directory(MODEL)), device="cpu").encode(
        sentences, normalize_embeddings=True
    )
    response = oai.embeddings.create(model=MODEL, input=sentences)  # the client asks for base64 by default
    ours = np.array([item.embedding for item in response.data])
    assert ours.shape == (len(sentences), 384)
    assert [item.index for item in response.data] == list(range(len(sentences)))
    assert np.abs(ours - reference).max() < 1e-5


def test_usage_counts_the_tokenizers_real_tokens(oai: openai.OpenAI, sentences: list[str]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(foundation_directory(MODEL)))
    expected = sum(len(tokenizer(s, truncation=True, max_length=256)["input_ids"]) for s in sentences)
    usage = oai.embeddings.create(model=MODEL, input=sentences).usage
    assert usage.prompt_tokens == usage.total_tokens == expected


def test_float_and_base64_encodings_agree(http: httpx.Client) -> None:
    as_float = http.post("/v1/embeddings", json={"model": MODEL, "input": "hello", "encoding_format": "float"})
    as_b64 = http.post("/v1/embeddings", json={"model": MODEL, "input": "hello", "encoding_format": "base64"})
    vector = np.array(as_float.json()["data"][0]["embedding"], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(as_b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert as_float.json()["object"] == "list" and as_float.json()["model"] == MODEL
    np.testing.assert_array_equal(vector, decoded)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5


def test_dimensions_shortens_and_renormalises(oai: openai.OpenAI) -> None:
    full = np.array(oai.embeddings.create(model=MODEL, input="hello world").data[0].embedding)
    short = np.array(oai.embeddings.create(model=MODEL, input="hello world", dimensions=64).data[0].embedding)
    assert short.shape == (64,) and abs(np.linalg.norm(short) - 1) < 1e-5
    np.testing.assert_allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_long_inputs_are_truncated_unless_refused(http: httpx.Client) -> None:
    long_text = "word " * 600
    ok = http.post("/v1/embeddings", json={"model": MODEL, "input": long_text})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 256
    refused = http.post("/v1/embeddings", json={"model": MODEL, "input": ["short", long_text], "truncate": False})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "input_too_long" and error["param"] == "input.1" and "256" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": MODEL, "input": ""}, "input.0", "empty string"),
        ({"model": MODEL, "input": []}, "input", "non-empty list"),
        ({"model": MODEL, "input": ["ok", 7]}, "input.1", "must be a string"),
        ({"model": MODEL, "input": [[101, 102]]}, "input.0", "must be a string"),
        ({"model": MODEL, "input": {"text": "x"}}, "input", "a string or a non-empty list"),
        ({"model": MODEL, "input": ["x"] * 5000}, "input", "too many inputs"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, "dimensions", "between 1 and 384"),
        ({"model": MODEL, "input": "x", "dimensions": 999}, "dimensions", "between 1 and 384"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", "float"),
        ({"model": MODEL, "input": "x", "logprobs": True}, "logprobs", "Extra inputs"),
        ({"input": "x"}, "model", "Field required"),
    ],
)
def test_bad_embedding_requests(http: httpx.Client, body: dict, param: str, needle: str) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error


def test_unknown_model_is_404_through_the_client(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.embeddings.create(model="no-such-model", input="x")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_embedding_model_refuses_predict_and_foundation_names_are_reserved(http: httpx.Client) -> None:
    response = http.post(f"/v1/models/{MODEL}/predict", json={"inputs": ["x"]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "wrong_task"
    job = http.post("/v1/jobs", json={"dataset": "ds_x", "model": MODEL})
    assert job.status_code == 409 and job.json()["error"]["code"] == "reserved_model_name"
    assert http.delete(f"/v1/models/{MODEL}").status_code == 404  # not the tenant's to delete
