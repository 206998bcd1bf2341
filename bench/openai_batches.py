"""A batch of texts to /v1/embeddings against the same texts sent online, in one run.

    .venv/bin/python bench/openai_batches.py [--texts 10000] [--seconds 8] [--concurrency 32]

`--texts` scales the run down (the SMS texts are cycled past their 5,574).

1. Offline limit: all-MiniLM-L6-v2 in this process (the server's loader), 32 texts a call: texts/s.
2. Starts a real server on loopback (tests/conftest.py's Server, temporary data dir) and warms the model.
3. Online alone: `--concurrency` clients, one text a request, for `--seconds`: requests/s and p50/p95.
4. The batch alone: `--texts` lines through /v1/batches, from create to completed: texts/s and batch / offline.
5. Online again while a second, identical batch runs: p50 / p50 alone, and how far the batch got meanwhile.

The server answers a batch a group of 32 lines at a time, each group going in only when nothing waits in the
model's queue: a group fills one forward pass (so the batch alone approaches the offline limit), and an online
request waits behind at most one group.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ADMIN_KEY, DATASETS, Server  # noqa: E402

MODEL = "all-minilm-l6-v2"


def offline_rate(texts: list[str], seconds: float) -> float:
    from openmaas.recipes.foundation import foundation_directory
    from openmaas.recipes.sentence_embedding import EmbeddingInference

    model = EmbeddingInference(foundation_directory(MODEL), "cpu", "onnx")
    model.embed(texts[:32])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.embed(texts[done % (len(texts) - 32) : done % (len(texts) - 32) + 32])
        done += 32
    return done / (time.perf_counter() - started)


async def online(url: str, texts: list[str], seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def one_client(offset: int) -> None:
            position, deadline = offset, time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                answer = await client.post(
                    "/v1/embeddings", json={"model": MODEL, "input": texts[position % len(texts)]}
                )
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
                position += concurrency

        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    return latencies


def start_batch(http: httpx.Client, texts: list[str]) -> str:
    lines = [
        {"custom_id": str(i), "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": text}}
        for i, text in enumerate(texts)
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    file_id = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("b.jsonl", data)}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    return str(http.post("/v1/batches", json=body).json()["id"])


def describe(latencies: list[float], seconds: float) -> str:
    q = statistics.quantiles(latencies, n=20)
    return f"{len(latencies) / seconds:7.1f} req/s  p50 {q[9] * 1000:6.1f} ms  p95 {q[18] * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=10_000, help="batch size (scale down for a quick run)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as handle:
        pool = [row["text"] for row in csv.DictReader(handle)]
    texts = [pool[i % len(pool)] for i in range(args.texts)]
    limit = offline_rate(texts, 5.0)
    print(f"offline limit (ONNX, 32 a call): {limit:.0f} texts/s")
    with tempfile.TemporaryDirectory() as scratch:
        server = Server(Path(scratch) / "server").start()
        try:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
            ) as http:
                http.post("/v1/embeddings", json={"model": MODEL, "input": "warm up"}).raise_for_status()
                alone = asyncio.run(online(server.url, texts, args.seconds, args.concurrency))
                print(f"online alone, {args.concurrency} clients:    {describe(alone, args.seconds)}")
                started = time.perf_counter()
                batch_id = start_batch(http, texts)
                while http.get(f"/v1/batches/{batch_id}").json()["status"] != "completed":
                    time.sleep(0.1)
                rate = len(texts) / (time.perf_counter() - started)
                print(f"batch alone: {rate:.0f} texts/s = {rate / limit:.2f} of the offline limit")
                batch_id = start_batch(http, texts)
                during = asyncio.run(online(server.url, texts, args.seconds, args.concurrency))
                counts = http.get(f"/v1/batches/{batch_id}").json()["request_counts"]
                print(f"online during a batch:         {describe(during, args.seconds)}")
                ratio = statistics.median(during) / statistics.median(alone)
                done = f"{counts['completed']} of {counts['total']}"
                print(f"p50 during / alone: {ratio:.2f}; the batch answered {done} meanwhile")
                http.post(f"/v1/batches/{batch_id}/cancel")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
