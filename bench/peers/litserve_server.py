"""Peer: a trained OpenMaaS version behind LitServe with dynamic batching.

    python bench/peers/litserve_server.py --model-dir DIR --recipe bow-mlp --runtime torch --port 8002 \
        [--max-batch-size 32] [--batch-timeout 0.005]

POST /predict {"inputs": ["text", ...]} → {"predictions": [{"label", "score", "scores"}]}; GET /health.
LitServe 0.2.x: batching is configured on the LitAPI (`max_batch_size`, `batch_timeout`; the LitServer
arguments of the same name are deprecated). Its architecture: one uvicorn API process (forked) passes
requests through multiprocessing queues to one inference worker process (spawned) that loads the model in
`setup` and runs whole batches; predict receives a list of decoded requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import litserve as ls
from peer_common import arguments, load_classifier, predictions


class ClassifierAPI(ls.LitAPI):
    def __init__(self, directory: Path, recipe: str, runtime: str, max_batch_size: int, batch_timeout: float) -> None:
        if max_batch_size < 2:
            raise ValueError("this API expects batched calls: max_batch_size must be at least 2")
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.directory = directory
        self.recipe = recipe
        self.runtime = runtime

    def setup(self, device: str) -> None:
        self.model = load_classifier(self.directory, self.recipe, self.runtime)
        self.labels = list(self.model.labels)

    # decode_request and encode_response stay unannotated on purpose: LitServe builds the route from these
    # annotations, and none means the fast path (the raw request's JSON in, a plain response out).
    def decode_request(self, request, **kwargs):
        return list(request["inputs"])

    def predict(self, batch: list[list[str]], **kwargs: Any) -> list[list[dict[str, Any]]]:
        """One forward pass over every text of every request in the batch, split back per request."""
        flat = predictions(self.labels, self.model.predict_proba([text for inputs in batch for text in inputs]))
        out, start = [], 0
        for inputs in batch:
            out.append(flat[start : start + len(inputs)])
            start += len(inputs)
        return out

    def encode_response(self, output, **kwargs):
        return {"predictions": output}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], batching=True)
    api = ClassifierAPI(args.model_dir, args.recipe, args.runtime, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()
