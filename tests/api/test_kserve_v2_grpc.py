"""KServe v2 over gRPC against a real server (OPENMAAS_GRPC_PORT), with Triton's official gRPC client unchanged;
and the golden files of both transports (tests/fixtures/kserve_v2/: one REST and one gRPC request with its
response, as bytes), replayed against the shipped MiniLM embeddings. `UPDATE_GOLDEN=1` rewrites them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.api.test_kserve_v2 import CHINESE, CLASSIFIER, EMBEDDER, TEXTS, train
from tests.conftest import ADMIN_KEY, Server, free_port

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "kserve_v2"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def text_input(texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))
    return tensor


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("kserve-grpc"), {"OPENMAAS_GRPC_PORT": str(free_port())}).start()
    train(instance, CLASSIFIER, 600, tmp_path_factory.mktemp("kserve-grpc-data"))
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def address(server: Server) -> str:
    return f"127.0.0.1:{server.env['OPENMAAS_GRPC_PORT']}"


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[triton.InferenceServerClient]:
    instance = triton.InferenceServerClient(address)
    yield instance
    instance.close()


def refusal(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return refused.value


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "openmaas" and "binary_tensor_data" in metadata["extensions"]
    assert client.is_model_ready(CLASSIFIER, headers=auth())
    classifier = client.get_model_metadata(CLASSIFIER, headers=auth())
    assert classifier.versions == ["1"] and classifier.platform == "openmaas_torch"
    assert [(t.name, t.datatype, list(t.shape)) for t in classifier.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in classifier.outputs] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    embedder = client.get_model_metadata(EMBEDDER, "1", headers=auth())
    assert [(t.name, t.datatype, list(t.shape)) for t in embedder.outputs] == [("embedding", "FP32", [-1, 384])]


def test_classifier_over_grpc_answers_as_the_native_route_does(
    client: triton.InferenceServerClient, server: Server
) -> None:
    texts = TEXTS + CHINESE
    result = client.infer(CLASSIFIER, [text_input(texts)], headers=auth(), request_id="g-1")
    response = result.get_response()
    assert response.id == "g-1" and response.model_name == CLASSIFIER and response.model_version == "1"
    with server.http() as http:
        expected = http.post(f"/v1/models/{CLASSIFIER}/predict", json={"inputs": texts}).json()["predictions"]
    assert [label.decode() for label in result.as_numpy("label")] == [p["label"] for p in expected]
    scores = np.array([[p["scores"]["ham"], p["scores"]["spam"]] for p in expected])
    np.testing.assert_allclose(result.as_numpy("probabilities"), scores, rtol=1e-5)
    wanted = [triton.InferRequestedOutput("probabilities")]
    only = client.infer(CLASSIFIER, [text_input(CHINESE)], outputs=wanted, headers=auth())
    assert only.as_numpy("label") is None and only.as_numpy("probabilities").shape == (2, 2)


def test_embeddings_over_grpc(client: triton.InferenceServerClient, server: Server) -> None:
    result = client.infer(EMBEDDER, [text_input(CHINESE)], headers=auth())
    vectors = result.as_numpy("embedding")
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    with server.http() as http:
        expected = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": CHINESE}).json()["data"]
    np.testing.assert_allclose(vectors, [item["embedding"] for item in expected], atol=1e-5)


def test_grpc_refusals(client: triton.InferenceServerClient, server: Server) -> None:
    assert refusal(lambda: client.infer("no-such-model", [text_input(TEXTS)], headers=auth())).status() == (
        "StatusCode.NOT_FOUND"
    )
    no_key = refusal(lambda: client.infer(CLASSIFIER, [text_input(TEXTS)]))
    assert no_key.status() == "StatusCode.UNAUTHENTICATED" and "API key" in no_key.message()
    assert refusal(lambda: client.get_model_metadata(CLASSIFIER, headers=auth("om-wrong"))).status() == (
        "StatusCode.UNAUTHENTICATED"
    )
    floats = triton.InferInput("text", [2], "FP32")
    floats.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    bad_type = refusal(lambda: client.infer(CLASSIFIER, [floats], headers=auth()))
    assert bad_type.status() == "StatusCode.INVALID_ARGUMENT" and "expects BYTES" in bad_type.message()
    with server.http() as http:
        tenant = http.post("/v1/tenants", json={"name": "grpc-other"}).json()
        key = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read", "infer"]}).json()["key"]
    for ref in (CLASSIFIER, f"default/{CLASSIFIER}"):
        hidden = refusal(lambda ref=ref: client.infer(ref, [text_input(TEXTS)], headers=auth(key)))
        assert hidden.status() == "StatusCode.NOT_FOUND"
    assert refusal(lambda: client.get_model_repository_index(headers=auth(key))).status() == (
        "StatusCode.PERMISSION_DENIED"
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\x05\x00\x00\x00abc", "past the end"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x00", "left over"),
        (b"\x01\x00\x00\x00\xff", "not UTF-8"),
    ],
)
def test_raw_contents_that_do_not_add_up(address: str, raw: bytes, says: str) -> None:
    request = pb.ModelInferRequest(model_name=EMBEDDER, raw_input_contents=[raw])
    request.inputs.add(name="text", datatype="BYTES", shape=[1] if says != "left over" else [2])
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, metadata=list(auth().items()))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in (refused.value.details() or "")


def test_repository_load_and_unload_over_grpc(client: triton.InferenceServerClient) -> None:
    def state() -> str:
        index = client.get_model_repository_index(headers=auth()).models
        return str(next(model.state for model in index if model.name == CLASSIFIER))

    client.unload_model(CLASSIFIER, headers=auth())
    assert state() == "UNAVAILABLE"
    client.load_model(CLASSIFIER, headers=auth())
    assert state() == "READY"


def test_grpc_calls_appear_in_usage_and_metrics(client: triton.InferenceServerClient, server: Server) -> None:
    with server.http() as http:

        def items() -> int:
            rows = http.get("/v1/usage", params={"group_by": "model"}).json()["data"]
            return sum(int(r["items"]) for r in rows if r.get("model") == CLASSIFIER and r["kind"] == "inference")

        before = items()
        client.infer(CLASSIFIER, [text_input(TEXTS + CHINESE)], headers=auth())
        assert items() == before + 4
        by_protocol = http.get("/v1/usage", params={"group_by": "protocol"}).json()["data"]
        grpc_rows = [row for row in by_protocol if row.get("protocol") == "kserve_v2_grpc"]
        assert grpc_rows and grpc_rows[0]["items"] >= 4
    metrics = httpx.get(f"{server.url}/metrics").text
    assert any(
        line.startswith("openmaas_requests_total{")
        and 'route="/inference.GRPCInferenceService/ModelInfer"' in line
        and f'model="{CLASSIFIER}"' in line
        and 'status="200"' in line
        for line in metrics.splitlines()
    )


def _golden(name: str, content: bytes) -> bytes:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return path.read_bytes()


def _rest_golden_request() -> tuple[bytes, dict[str, str]]:
    texts = [CHINESE[0], TEXTS[1]]
    raw = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)
    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    outputs = [{"name": "embedding", "parameters": {"binary_data": False}}]
    header = json.dumps({"id": "golden-rest", "inputs": [tensor], "outputs": outputs}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def test_rest_golden_request_and_response(server: Server) -> None:
    """A binary BYTES request (Chinese and English) for MiniLM, its embedding asked for as JSON."""
    if UPDATE:
        body, headers = _rest_golden_request()
        _golden("rest_infer_request.bin", body)
        _golden("rest_infer_request_headers.json", json.dumps(headers, indent=1).encode() + b"\n")
    request = (GOLDEN / "rest_infer_request.bin").read_bytes()
    headers = json.loads((GOLDEN / "rest_infer_request_headers.json").read_text())
    response = httpx.post(
        f"{server.url}/v2/models/{EMBEDDER}/infer",
        content=request,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", **headers},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    expected = json.loads(_golden("rest_infer_response.json", response.content))
    got = response.json()
    # The same answer to float rounding: the vectors' last bits may differ with the machine's ONNX kernels.
    got_data, expected_data = got["outputs"][0].pop("data"), expected["outputs"][0].pop("data")
    assert got == expected and got["id"] == "golden-rest"
    np.testing.assert_allclose(got_data, expected_data, atol=1e-5)


def test_grpc_golden_request_and_response(address: str) -> None:
    """The same texts as a ModelInferRequest, in `contents.bytes_contents` (the REST one is raw)."""
    if UPDATE:
        request = pb.ModelInferRequest(model_name=EMBEDDER, model_version="1", id="golden-grpc")
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend([CHINESE[0].encode(), TEXTS[1].encode()])
        _golden("grpc_infer_request.bin", request.SerializeToString(deterministic=True))
    request = pb.ModelInferRequest.FromString((GOLDEN / "grpc_infer_request.bin").read_bytes())
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=list(auth().items()))
    expected = pb.ModelInferResponse.FromString(
        _golden("grpc_infer_response.bin", response.SerializeToString(deterministic=True))
    )
    got_raw, expected_raw = list(response.raw_output_contents), list(expected.raw_output_contents)
    del response.raw_output_contents[:], expected.raw_output_contents[:]
    assert response == expected and response.id == "golden-grpc"
    got_vectors = np.frombuffer(got_raw[0], dtype="<f4")
    np.testing.assert_allclose(got_vectors, np.frombuffer(expected_raw[0], dtype="<f4"), atol=1e-5)
    assert got_vectors.shape == (2 * 384,)
