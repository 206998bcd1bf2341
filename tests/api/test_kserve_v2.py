"""KServe v2 over REST against a real server, with Triton's official HTTP clients (sync and async) unchanged:
metadata, readiness, inference (JSON and binary tensors), the repository extension, v2 error bodies, usage and
metrics. The clients get a fresh headers dict per call: tritonclient adds its own headers to the one it is given."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.conftest import ADMIN_KEY, DATASETS, Server

CLASSIFIER = "spam"
EMBEDDER = "all-minilm-l6-v2"
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?"]
CHINESE = ["这是一篇关于人工智能的文章。", "今天天气很好，我们去公园散步吧。"]


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def text_input(texts: list[str], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return tensor


def train(server: Server, name: str, rows: int, tmp: Path) -> None:
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()
    path = tmp / f"{name}.csv"
    path.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    with server.client() as client:
        dataset = client.upload_dataset(path, name=name)
        job = client.create_job(dataset["id"], name, hyperparameters={"epochs": 2, "seed": 3})
        assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("kserve-v2"), {"OPENMAAS_MAX_JSON_BODY_BYTES": "200000"}).start()
    train(instance, CLASSIFIER, 600, tmp_path_factory.mktemp("kserve-v2-data"))
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def triton_client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


def strings(values: np.ndarray) -> list[str]:
    """BYTES elements as text: tritonclient gives bytes from binary data, str from JSON data."""
    return [value.decode() if isinstance(value, bytes) else value for value in values.tolist()]


def native(http: httpx.Client, texts: list[str]) -> list[dict[str, Any]]:
    response = http.post(f"/v1/models/{CLASSIFIER}/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_server_metadata_health_and_readiness(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "openmaas" and metadata["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])
    assert triton_client.is_model_ready(CLASSIFIER, headers=auth())
    assert triton_client.is_model_ready(CLASSIFIER, "1", headers=auth())
    assert not triton_client.is_model_ready("no-such-model", headers=auth())


def test_model_metadata_comes_from_the_registry(triton_client: triton.InferenceServerClient) -> None:
    classifier = triton_client.get_model_metadata(CLASSIFIER, headers=auth())
    assert classifier["name"] == CLASSIFIER and classifier["versions"] == ["1"]
    assert classifier["platform"] == "openmaas_torch"
    assert classifier["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert classifier["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2], "parameters": {"labels": ["ham", "spam"]}},
    ]
    assert triton_client.get_model_metadata(CLASSIFIER, "1", headers=auth()) == classifier
    embedder = triton_client.get_model_metadata(EMBEDDER, headers=auth())
    assert embedder["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert embedder["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    # A public model of another tenant by its owner-qualified name (the shipped models are the system's)
    owned = triton_client.get_model_metadata(f"openmaas/{EMBEDDER}", headers=auth())
    assert owned["name"] == f"openmaas/{EMBEDDER}" and owned["outputs"] == embedder["outputs"]
    result = triton_client.infer(f"openmaas/{EMBEDDER}", [text_input(CHINESE[:1])], headers=auth())
    assert result.as_numpy("embedding").shape == (1, 384)


@pytest.mark.parametrize("binary", [True, False])
def test_classifier_answers_as_the_native_route_does(
    triton_client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    texts = TEXTS + CHINESE
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
    result = triton_client.infer(
        CLASSIFIER, [text_input(texts, binary)], outputs=outputs, headers=auth(), request_id="req-7"
    )
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == CLASSIFIER and response["model_version"] == "1"
    assert all(("data" in output) != binary for output in response["outputs"])
    labels = strings(result.as_numpy("label"))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(texts), 2)
    expected = native(http, texts)
    assert labels == [p["label"] for p in expected]
    scores = np.array([[p["scores"]["ham"], p["scores"]["spam"]] for p in expected])
    np.testing.assert_allclose(probabilities, scores, rtol=1e-5)
    assert labels[0] == "spam"


def test_without_outputs_every_output_comes_back_binary(triton_client: triton.InferenceServerClient) -> None:
    result = triton_client.infer(CLASSIFIER, [text_input(CHINESE)], outputs=None, headers=auth())
    response = result.get_response()
    assert [output["name"] for output in response["outputs"]] == ["label", "probabilities"]
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    assert result.as_numpy("label").shape == (2,) and result.as_numpy("probabilities").shape == (2, 2)


def test_one_output_only(triton_client: triton.InferenceServerClient) -> None:
    output = triton.InferRequestedOutput("label", binary_data=False)
    result = triton_client.infer(CLASSIFIER, [text_input(TEXTS, False)], outputs=[output], headers=auth())
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert strings(result.as_numpy("label")) == ["spam", "ham"]


@pytest.mark.parametrize("binary", [True, False])
def test_embeddings_match_the_openai_route(
    triton_client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    texts = TEXTS + CHINESE
    output = triton.InferRequestedOutput("embedding", binary_data=binary)
    result = triton_client.infer(EMBEDDER, [text_input(texts, binary)], outputs=[output], headers=auth())
    vectors = result.as_numpy("embedding")
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
    expected = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": texts}).json()["data"]
    for row, item in zip(vectors, expected, strict=True):
        np.testing.assert_allclose(row, item["embedding"], atol=1e-5)


async def test_the_async_client_infers_and_reads_metadata(server: Server) -> None:
    client = triton_aio.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert await client.is_server_ready()
        assert (await client.get_model_metadata(EMBEDDER, headers=auth()))["outputs"][0]["shape"] == [-1, 384]
        tensor = triton_aio.InferInput("text", [len(CHINESE)], "BYTES")
        tensor.set_data_from_numpy(np.array(CHINESE, dtype=object))
        result = await client.infer(CLASSIFIER, [tensor], headers=auth())
        assert result.as_numpy("probabilities").shape == (2, 2)
        json_tensor = triton_aio.InferInput("text", [1], "BYTES")
        json_tensor.set_data_from_numpy(np.array(CHINESE[:1], dtype=object), binary_data=False)
        output = triton_aio.InferRequestedOutput("embedding", binary_data=False)
        result = await client.infer(EMBEDDER, [json_tensor], outputs=[output], headers=auth())
        assert result.as_numpy("embedding").shape == (1, 384)
        with pytest.raises(InferenceServerException) as refused:
            await client.infer("no-such-model", [tensor], headers=auth())
        assert refused.value.status() == "404" and "no-such-model" in refused.value.message()
    finally:
        await client.close()


def test_repository_index_load_and_unload(triton_client: triton.InferenceServerClient) -> None:
    def state() -> str:
        index = triton_client.get_model_repository_index(headers=auth())
        return str(next(entry["state"] for entry in index if entry["name"] == CLASSIFIER))

    triton_client.unload_model(CLASSIFIER, headers=auth())
    assert state() == "UNAVAILABLE"
    triton_client.load_model(CLASSIFIER, headers=auth())
    assert state() == "READY"
    ready = triton_client.get_model_repository_index(headers=auth(), query_params=None)
    assert any(entry["name"] == EMBEDDER for entry in ready)


def refusal(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return refused.value


def test_refusals_have_the_v2_error_body(triton_client: triton.InferenceServerClient, server: Server) -> None:
    floats = triton.InferInput("text", [2], "FP32")
    floats.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    bad_type = refusal(lambda: triton_client.infer(CLASSIFIER, [floats], headers=auth()))
    assert bad_type.status() == "400" and "expects BYTES" in bad_type.message()
    wrong_name = triton.InferInput("texts", [1], "BYTES")
    wrong_name.set_data_from_numpy(np.array(["x"], dtype=object))
    named = refusal(lambda: triton_client.infer(CLASSIFIER, [wrong_name], headers=auth()))
    assert named.status() == "400" and "unknown input 'texts'" in named.message()
    logits = [triton.InferRequestedOutput("logits")]
    unknown = refusal(lambda: triton_client.infer(CLASSIFIER, [text_input(TEXTS)], outputs=logits, headers=auth()))
    assert unknown.status() == "400" and "unknown output 'logits'" in unknown.message()
    missing = refusal(lambda: triton_client.infer("no-such-model", [text_input(TEXTS)], headers=auth()))
    assert missing.status() == "404"
    no_key = refusal(lambda: triton_client.infer(CLASSIFIER, [text_input(TEXTS)]))
    assert no_key.status() == "401" and "API key" in no_key.message()
    wrong_key = refusal(lambda: triton_client.get_model_metadata(CLASSIFIER, headers=auth("om-wrong-key")))
    assert wrong_key.status() == "401"
    embed_empty = refusal(lambda: triton_client.infer(EMBEDDER, [text_input(["", "x"])], headers=auth()))
    assert embed_empty.status() == "400"


def raw_infer(server: Server, body: bytes, header_length: int | None, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = auth(key) if key else {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return httpx.post(f"{server.url}/v2/models/{CLASSIFIER}/infer", content=body, headers=headers, timeout=30)


def binary_request(texts: list[str], size_delta: int = 0, count_delta: int = 0) -> tuple[bytes, int]:
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    tensor = {
        "name": "text",
        "shape": [len(texts) + count_delta],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(raw) + size_delta},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + raw, len(header)


@pytest.mark.parametrize(
    ("size_delta", "count_delta", "header_delta", "says"),
    [
        (0, 0, 0, None),
        (-3, 0, 0, "add up to"),
        (5, 0, 0, "does not fit"),
        (0, 1, 0, "ends before element 2"),
        (0, -1, 0, "left over"),
        (0, 0, 10_000, "Inference-Header-Content-Length"),
        (0, 0, -5, "not valid JSON"),
        (0, 0, None, "Inference-Header-Content-Length"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_a_400(
    server: Server, size_delta: int, count_delta: int, header_delta: int | None, says: str | None
) -> None:
    body, header_length = binary_request(CHINESE, size_delta, count_delta)
    if header_delta is None:  # a length that is no number: "²" (latin-1 0xB2) passes str.isdigit
        headers: dict[str, str | bytes] = {**auth(), "Inference-Header-Content-Length": b"\xb2"}
        response = httpx.post(f"{server.url}/v2/models/{CLASSIFIER}/infer", content=body, headers=headers, timeout=30)
    else:
        response = raw_infer(server, body, header_length + header_delta)
    if says is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert says in response.json()["error"]


def test_v2_errors_raised_before_the_route_keep_the_v2_shape(server: Server, http: httpx.Client) -> None:
    body = b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["' + b"x" * 300_000 + b'"]}]}'
    too_large = raw_infer(server, body, None)
    assert too_large.status_code == 413 and isinstance(too_large.json()["error"], str)
    no_key = raw_infer(server, *binary_request(TEXTS), key=None)
    assert no_key.status_code == 401 and isinstance(no_key.json()["error"], str)
    unknown_url = http.get("/v2/models/spam/stats")
    assert unknown_url.status_code == 404 and isinstance(unknown_url.json()["error"], str)
    bad_version = http.get("/v2/models/spam/versions/x")
    assert bad_version.status_code in (400, 404) and isinstance(bad_version.json()["error"], str)
    not_json = raw_infer(server, b"{", None)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]


def test_another_tenants_model_is_a_404_and_rate_limits_answer_in_v2(
    server: Server, http: httpx.Client, triton_client: triton.InferenceServerClient
) -> None:
    tenant = http.post("/v1/tenants", json={"name": "v2-other", "limits": {"requests_per_minute": 2}}).json()
    key = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read", "infer"]}).json()["key"]
    for ref in (CLASSIFIER, f"default/{CLASSIFIER}"):
        hidden = refusal(lambda ref=ref: triton_client.infer(ref, [text_input(TEXTS)], headers=auth(key)))
        assert hidden.status() == "404"
    limited = refusal(lambda: triton_client.get_model_metadata(EMBEDDER, headers=auth(key)))
    assert limited.status() == "429"


def test_no_compression_on_v2(server: Server) -> None:
    body, header_length = binary_request(TEXTS * 200)
    headers = {**auth(), "Accept-Encoding": "gzip", "Inference-Header-Content-Length": str(header_length)}
    response = httpx.post(f"{server.url}/v2/models/{CLASSIFIER}/infer", content=body, headers=headers, timeout=30)
    assert response.status_code == 200 and "content-encoding" not in response.headers


def test_v2_calls_appear_in_usage_and_metrics(
    server: Server, http: httpx.Client, triton_client: triton.InferenceServerClient
) -> None:
    def items() -> int:
        rows = http.get("/v1/usage", params={"group_by": "model"}).json()["data"]
        return sum(int(row["items"]) for row in rows if row.get("model") == CLASSIFIER and row["kind"] == "inference")

    before = items()
    triton_client.infer(CLASSIFIER, [text_input(TEXTS + CHINESE)], headers=auth())
    assert items() == before + 4
    by_protocol = http.get("/v1/usage", params={"group_by": "protocol"}).json()["data"]
    assert {row.get("protocol") for row in by_protocol if row["kind"] == "inference"} >= {"kserve_v2", "native"}
    metrics = httpx.get(f"{server.url}/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("openmaas_requests_total{")
        and 'route="/v2/models/{name}/infer"' in line
        and f'model="{CLASSIFIER}"' in line
        and 'status="200"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


def batch_sizes(server: Server) -> tuple[float, float]:
    """(batches, items) the classifier has run, from /metrics."""
    values = {"count": 0.0, "sum": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("openmaas_batch_size_") and sample.labels.get("model") == CLASSIFIER:
                values[sample.name.rsplit("_", 1)[1]] = sample.value
    return values["count"], values["sum"]


async def test_v2_and_native_requests_share_the_models_batches(server: Server, http: httpx.Client) -> None:
    # Held for up to 500 ms, a batch takes whatever arrives meanwhile: one native and one v2 request.
    assert http.post(f"/v1/models/{CLASSIFIER}/load", json={"max_batch_size": 8, "max_wait_ms": 500}).is_success
    try:
        batches, items = batch_sizes(server)
        body, header_length = binary_request(CHINESE[:1])
        v2_headers = {**auth(), "Inference-Header-Content-Length": str(header_length)}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            native_answer, v2_answer = await asyncio.gather(
                client.post(f"/v1/models/{CLASSIFIER}/predict", json={"inputs": TEXTS[:1]}, headers=auth()),
                client.post(f"/v2/models/{CLASSIFIER}/infer", content=body, headers=v2_headers),
            )
        assert native_answer.status_code == 200 and v2_answer.status_code == 200
        assert batch_sizes(server) == (batches + 1, items + 2)
    finally:
        http.post(f"/v1/models/{CLASSIFIER}/load", json={})
