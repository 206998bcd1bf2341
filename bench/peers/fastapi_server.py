"""Peer: a trained OpenMaaS version behind plain FastAPI + uvicorn, one forward pass per request.

    python bench/peers/fastapi_server.py --model-dir DIR --recipe bow-mlp --runtime torch --port 8001

POST /predict {"inputs": ["text", ...]} → {"predictions": [{"label", "score", "scores"}]}; GET /healthz.
By default the endpoint is a plain sync function, which FastAPI runs in its thread pool (what most deployments
write); with `--async-endpoint` it is an `async def` that runs the forward pass on the event loop itself (no
thread hop: the fastest plain server for a model as small as bow-mlp, and one forward at a time for any model).
uvicorn runs with uvloop, httptools and no access log, like `openmaas serve`.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI
from peer_common import arguments, load_classifier, predictions
from pydantic import BaseModel


class PredictRequest(BaseModel):
    inputs: list[str]


def create_app(model: Any, on_loop: bool = False) -> FastAPI:
    app = FastAPI()
    labels = list(model.labels)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if on_loop:

        @app.post("/predict")
        async def predict_on_loop(body: PredictRequest) -> dict[str, Any]:
            return {"predictions": predictions(labels, model.predict_proba(body.inputs))}

    else:

        @app.post("/predict")
        def predict(body: PredictRequest) -> dict[str, Any]:
            return {"predictions": predictions(labels, model.predict_proba(body.inputs))}

    return app


def main() -> None:
    args = arguments(__doc__.splitlines()[0], async_endpoint=True)
    app = create_app(load_classifier(args.model_dir, args.recipe, args.runtime), on_loop=args.async_endpoint)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
