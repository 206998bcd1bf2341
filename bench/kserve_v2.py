"""KServe v2 requests for bench/serve.py's v2 rows: one text a request to `/v2/models/{m}/infer` as JSON or with
Triton's binary tensor extension (inputs and outputs), and as a gRPC ModelInferRequest (raw contents, as
tritonclient sends them); and each transport's class probabilities for the answer check."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

V2_ROWS = ("v2 JSON", "v2 binary", "v2 gRPC")


def raw_bytes(texts: list[str]) -> bytes:
    """BYTES elements in binary: a u32-LE length and the UTF-8 bytes each."""
    return b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)


def rest_body(text: str, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A request's body and its extra headers: JSON data and outputs, or binary both ways."""
    tensor: dict[str, object] = {"name": "text", "shape": [1], "datatype": "BYTES"}
    if not binary:
        return json.dumps({"inputs": [{**tensor, "data": [text]}]}).encode(), {}
    raw = raw_bytes([text])
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def grpc_request(model: str, text: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[raw_bytes([text])])
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    return request


def rest_probabilities(url: str, text: str, key: str) -> np.ndarray:
    """One text's class probabilities through v2 REST with JSON outputs, in the model's label order."""
    body, headers = rest_body(text, binary=False)
    response = httpx.post(url, content=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=60)
    response.raise_for_status()
    output = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")
    return np.array(output["data"], dtype=np.float64)


def grpc_probabilities(address: str, model: str, text: str, key: str) -> np.ndarray:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(grpc_request(model, text), metadata=[("authorization", f"Bearer {key}")])
    index = [o.name for o in response.outputs].index("probabilities")
    return np.frombuffer(response.raw_output_contents[index], dtype="<f4").astype(np.float64)
