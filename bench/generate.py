"""Generation speed of SmolLM2-135M-Instruct served over OpenAI's chat API vs. plain `transformers` generate in
one process (the limit), in one run.

    .venv/bin/python bench/generate.py [--max-tokens 64] [--requests 8] [--concurrency 1,4]

1. Converts the shipped GGUF file once (cached in ~/.cache/openmaas-bench, reused by later runs) and starts a
   real OpenMaaS server on loopback that offers it as the foundation model `smollm2-135m-instruct`.
2. Offline limit: the same converted directory loaded here with `AutoModelForCausalLM`, float32, every core.
   Concurrency 1: `generate` greedy, one prompt at a time. Concurrency 4: `generate` on 4 prompts at once
   (left-padded batch), which is what a server with continuous batching could approach. Time to first token
   offline is `generate(max_new_tokens=1)`: the prompt's forward pass and one token.
3. Served: a closed loop of C clients (httpx, asyncio), each sending streamed chat requests
   (`temperature: 0`, `stream_options.include_usage`), with the same chat-rendered prompts. Time to first token
   is from the request to the first content chunk; tokens/s is the sum of `usage.completion_tokens` over the
   wall time of the whole run. Twice: with continuous batching (the default) and with
   OPENMAAS_GENERATION_BATCH_SIZE=1 (one generation at a time: the "before" of continuous batching).

Prints tokens/s and time to first token (p50, p95) for each at each concurrency, and served / offline.
The load generator shares the machine's cores with the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import HOST, KEY, Service, free_port  # noqa: E402 (a sibling script)

from openmaas.recipes.foundation import convert_gguf, foundation_gguf  # noqa: E402

MODEL = "smollm2-135m-instruct"
CACHE = Path(os.environ.get("OPENMAAS_BENCH_CACHE", Path.home() / ".cache" / "openmaas-bench"))
PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works to a ten-year-old.",
    "Describe a walk through a forest in autumn.",
    "Give me some advice for learning a new language.",
    "Tell me about the history of the printing press.",
    "What makes a good cup of tea? Explain in detail.",
    "Describe the life cycle of a butterfly.",
    "Write a letter to a friend about a trip to the sea.",
]


@dataclass
class Result:
    tokens_per_second: float
    ttft: list[float]

    def row(self) -> str:
        p50 = statistics.median(self.ttft) * 1000
        p95 = sorted(self.ttft)[max(0, round(0.95 * len(self.ttft)) - 1)] * 1000
        return f"{self.tokens_per_second:8.1f} tok/s   TTFT p50 {p50:6.0f} ms  p95 {p95:6.0f} ms"


def converted_directory() -> Path:
    directory = CACHE / MODEL
    if not (directory / "config.json").is_file():
        print(f"converting {MODEL} from GGUF into {directory} (once) ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            convert_gguf(foundation_gguf(MODEL), Path(scratch) / "model")
            os.replace(Path(scratch) / "model", directory)
    return directory


def load_offline(directory: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True).eval()
    return tokenizer, model


def offline(loaded: tuple[Any, Any], requests: int, max_tokens: int, concurrency: int) -> Result:
    tokenizer, model = loaded
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS
    ]
    prompts = [texts[i % len(texts)] for i in range(requests)]

    def run(batch: list[str], new_tokens: int) -> int:
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        generated = output[:, inputs["input_ids"].shape[1] :]
        eos = tokenizer.eos_token_id
        # tokens up to and including the first EOS of each row (padding after it is not generated text)
        return sum(int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else len(row) for row in generated)

    # Warm-up at full length and batch size: generate's first calls are several times slower (measured).
    run(prompts[:concurrency], max_tokens)
    ttft = []
    for text in prompts[: min(4, len(prompts))]:
        started = time.perf_counter()
        run([text], 1)
        ttft.append(time.perf_counter() - started)
    started, tokens = time.perf_counter(), 0
    for at in range(0, len(prompts), concurrency):
        tokens += run(prompts[at : at + concurrency], max_tokens)
    return Result(tokens / (time.perf_counter() - started), ttft)


async def served(url: str, requests: int, max_tokens: int, concurrency: int) -> Result:
    ttft: list[float] = []
    tokens = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(PROMPTS[i % len(PROMPTS)])

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            prompt = queue.get_nowait()
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            started, first = time.perf_counter(), None
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - started
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
            ttft.append(first if first is not None else time.perf_counter() - started)

    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as http:
        await client_once(http)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(tokens / elapsed, ttft)


async def client_once(http: httpx.AsyncClient) -> None:
    """Warm-up: loads the model into the server's pool."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    (await http.post("/v1/chat/completions", json=body)).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    directory = converted_directory()
    print(
        f"{os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.requests} requests of up to {args.max_tokens} tokens, greedy. "
        "The load generator shares the cores with the server.\n",
        flush=True,
    )

    served_rows: dict[str, list[Result]] = {}
    for label, batch_size in (("served, continuous batching", None), ("served, one at a time", "1")):
        served_rows[label] = serve_and_measure(args, levels, batch_size)
    width = max(map(len, served_rows)) + 8
    print(f"{'':{width}}{'':50}served / offline")
    loaded = load_offline(directory)
    for index, level in enumerate(levels):
        limit = offline(loaded, args.requests, args.max_tokens, level)
        print(f"{f'c={level} offline':{width}}{limit.row()}")
        for label, results in served_rows.items():
            ours = results[index]
            ratio = ours.tokens_per_second / limit.tokens_per_second
            print(f"{f'c={level} {label}':{width}}{ours.row()}  {ratio:.2f}", flush=True)


def serve_and_measure(args: argparse.Namespace, levels: list[int], batch_size: str | None) -> list[Result]:
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        env = {
            **os.environ,
            "OPENMAAS_ADMIN_KEY": KEY,
            "OPENMAAS_FOUNDATION_MODELS": f'["{MODEL}"]',
            "OPENMAAS_FOUNDATION_CACHE_DIR": str(CACHE),
        }
        if batch_size is not None:
            env["OPENMAAS_GENERATION_BATCH_SIZE"] = batch_size
        command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", data_dir]
        service = Service("OpenMaaS", [*command, "--log-level", "warning"], Path(data_dir) / "server.log", env)
        try:
            url = f"http://{HOST}:{port}"
            service.wait_ready(f"{url}/healthz")
            deadline = time.monotonic() + 300
            headers = {"Authorization": f"Bearer {KEY}"}
            while httpx.get(f"{url}/v1/models/{MODEL}", headers=headers).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{MODEL} not registered:\n{service.log_tail()}")
                time.sleep(1)
            return [asyncio.run(served(url, args.requests, args.max_tokens, level)) for level in levels]
        finally:
            service.stop()


if __name__ == "__main__":
    main()
