"""Generation speed of SmolLM2-135M-Instruct on each engine, offline and served, against llama.cpp's own OpenAI
server on the same GGUF file, in one run.

    .venv/bin/python bench/generate.py [--max-tokens 64] [--requests 8] [--concurrency 1,4]

1. Offline, in this process, greedy, on the same chat-rendered prompts: the OpenVINO engine's pipeline
   (OpenVINO GenAI's ContinuousBatchingPipeline on the GGUF file: 1 sequence, then 4 added at once and stepped
   together); torch (`AutoModelForCausalLM.generate` on the float32 conversion, cached in
   ~/.cache/openmaas-bench: one prompt, then 4 left-padded); llama.cpp (`llama_cpp.Llama` on the GGUF file:
   its high-level API decodes one sequence at a time, so "4" is four in a row). Time to first token offline is
   the prompt's pass and one token, alone.
2. Served: a closed loop of C clients (httpx, asyncio) sending streamed chat requests (`temperature: 0`,
   `stream_options.include_usage`). Time to first token is from the request to the first content chunk;
   tokens/s is the completion tokens over the wall time of the run. Three servers, one after the other:
   OpenMaaS serving the shipped foundation model (the OpenVINO engine, from the GGUF), OpenMaaS serving the
   float32 conversion imported as a directory (the torch engine, as before this engine existed), and
   `python -m llama_cpp.server` on the same GGUF file. Each server's RSS is read with the model loaded, after
   the warm-up request.

Prints tokens/s and TTFT p50 for each, and OpenMaaS (OpenVINO) / llama.cpp server. The load generator shares
the machine's cores with the server it measures. llama.cpp rows are skipped when llama-cpp-python is not
installed (`pip install .[llamacpp]`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import HOST, KEY, Service, free_port  # noqa: E402 (a sibling script)

from openmaas.recipes.foundation import convert_gguf, foundation_gguf  # noqa: E402

MODEL = "smollm2-135m-instruct"
TORCH_MODEL = "smollm2-torch"
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
    rss_mb: float | None = None

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.ttft) * 1000

    def row(self) -> str:
        rss = f"   RSS {self.rss_mb:5.0f} MB" if self.rss_mb is not None else ""
        return f"{self.tokens_per_second:7.1f} tok/s   TTFT p50 {self.p50_ms:6.0f} ms{rss}"


def converted_directory() -> Path:
    directory = CACHE / MODEL
    if not (directory / "config.json").is_file():
        print(f"converting {MODEL} from GGUF into {directory} (once) ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            convert_gguf(foundation_gguf(MODEL), Path(scratch) / "model")
            os.replace(Path(scratch) / "model", directory)
    return directory


def rendered(render: Any, count: int) -> list[str]:
    return [render([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]) for i in range(count)]


def offline_openvino(requests: int, max_tokens: int, levels: list[int]) -> list[Result]:
    import numpy as np
    import openvino
    import openvino_genai

    scheduler = openvino_genai.SchedulerConfig()
    scheduler.cache_size = 1
    pipeline = openvino_genai.ContinuousBatchingPipeline(str(foundation_gguf(MODEL)), scheduler, "CPU")
    tokenizer = pipeline.get_tokenizer()
    texts = rendered(lambda m: tokenizer.apply_chat_template(m, add_generation_prompt=True), requests)
    ids = [tokenizer.encode(t, add_special_tokens=False).input_ids.data[0].tolist() for t in texts]
    request_ids = iter(range(1_000_000))

    def run(prompts: list[list[int]], new_tokens: int) -> int:
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.do_sample = new_tokens, False
        handles = [
            pipeline.add_request(next(request_ids), openvino.Tensor(np.array([p], dtype=np.int64)), config)
            for p in prompts
        ]
        while pipeline.has_non_finished_requests():
            pipeline.step()
        return sum(len(output.generated_ids) for handle in handles for output in handle.read_all())

    run(ids[: max(levels)], max_tokens)  # warm-up at full length and width
    return [timed(run, ids, max_tokens, width) for width in levels]


def offline_torch(directory: Path, requests: int, max_tokens: int, levels: list[int]) -> list[Result]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True).eval()
    texts = rendered(lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True), requests)

    def run(batch: list[str], new_tokens: int) -> int:
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        generated = output[:, inputs["input_ids"].shape[1] :]
        eos = tokenizer.eos_token_id
        return sum(int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else len(row) for row in generated)

    run(texts[: max(levels)], max_tokens)  # generate's first calls are several times slower (measured)
    return [timed(run, texts, max_tokens, width) for width in levels]


def offline_llama(requests: int, max_tokens: int, levels: list[int], threads: int | None) -> list[Result]:
    from llama_cpp import Llama

    llm = Llama(str(foundation_gguf(MODEL)), n_ctx=2048, n_threads=threads, verbose=False)
    texts = rendered(lambda m: m, requests)

    def run(batch: list[Any], new_tokens: int) -> int:
        tokens = 0
        for messages in batch:  # one sequence at a time: what its high-level API does
            answer: Any = llm.create_chat_completion(messages=messages, max_tokens=new_tokens, temperature=0)
            tokens += answer["usage"]["completion_tokens"]
        return tokens

    run(texts[:1], max_tokens)
    return [timed(run, texts, max_tokens, width) for width in levels]


def timed(run: Any, prompts: list[Any], max_tokens: int, width: int) -> Result:
    ttft = []
    for prompt in prompts[:4]:
        started = time.perf_counter()
        run([prompt], 1)
        ttft.append(time.perf_counter() - started)
    started, tokens = time.perf_counter(), 0
    for at in range(0, len(prompts), width):
        tokens += run(prompts[at : at + width], max_tokens)
    return Result(tokens / (time.perf_counter() - started), ttft)


async def served(url: str, model: str, requests: int, max_tokens: int, concurrency: int, key: str) -> Result:
    ttft: list[float] = []
    tokens = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(PROMPTS[i % len(PROMPTS)])

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            body = {
                "model": model,
                "messages": [{"role": "user", "content": queue.get_nowait()}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            started, first, chunks, usage = time.perf_counter(), None, 0, None
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter() - started
                    if chunk.get("usage"):
                        usage = chunk["usage"]["completion_tokens"]
            # llama.cpp's server sends one chunk per token and may send no usage chunk
            tokens += usage if usage is not None else chunks
            ttft.append(first if first is not None else time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(tokens / elapsed, ttft)


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(service: Service, url: str, model: str, args: argparse.Namespace, levels: list[int]) -> list[Result]:
    warm = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{url}/v1/chat/completions", json=warm, headers=headers, timeout=600).raise_for_status()
    rss = resident_mb(service.pid)
    results = [asyncio.run(served(url, model, args.requests, args.max_tokens, c, KEY)) for c in levels]
    for result in results:
        result.rss_mb = rss
    return results


def serve_openmaas(args: argparse.Namespace, levels: list[int], torch_directory: Path | None) -> list[Result]:
    """The OpenVINO engine on the shipped GGUF, or (torch_directory) the torch engine on the conversion."""
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        shipped = "[]" if torch_directory else f'["{MODEL}"]'
        env = {**os.environ, "OPENMAAS_ADMIN_KEY": KEY, "OPENMAAS_FOUNDATION_MODELS": shipped}
        command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", data_dir]
        service = Service("OpenMaaS", [*command, "--log-level", "warning"], Path(data_dir) / "server.log", env)
        try:
            url = f"http://{HOST}:{port}"
            service.wait_ready(f"{url}/healthz")
            headers = {"Authorization": f"Bearer {KEY}"}
            model = MODEL
            if torch_directory is not None:
                model = TORCH_MODEL
                imported = httpx.post(
                    f"{url}/v1/models/import",
                    json={"path": str(torch_directory), "name": model},
                    headers=headers,
                    timeout=600,
                )
                imported.raise_for_status()
            deadline = time.monotonic() + 300
            while httpx.get(f"{url}/v1/models/{model}", headers=headers).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{model} not registered:\n{service.log_tail()}")
                time.sleep(0.5)
            return measure(service, url, model, args, levels)
        finally:
            service.stop()


def serve_llama(args: argparse.Namespace, levels: list[int]) -> list[Result]:
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(foundation_gguf(MODEL))]
        command += ["--host", HOST, "--port", str(port), "--n_ctx", "2048", "--model_alias", MODEL]
        # Its default lets a new request interrupt the stream being generated: the other clients would be cut off.
        command += ["--interrupt_requests", "False"]
        if args.llama_threads:
            command += ["--n_threads", str(args.llama_threads)]
        service = Service("llama.cpp server", command, Path(work) / "server.log", dict(os.environ))
        try:
            url = f"http://{HOST}:{port}"
            service.wait_ready(f"{url}/v1/models")
            return measure(service, url, MODEL, args, levels)
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--llama-threads", type=int, default=None, help="llama.cpp's n_threads (its default)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    llama = importlib.util.find_spec("llama_cpp") is not None
    directory = converted_directory()
    print(
        f"{os.cpu_count()} cores; {args.requests} chat requests of up to {args.max_tokens} tokens, greedy; "
        f"llama.cpp {'installed' if llama else 'not installed: its rows are skipped'}. "
        "The load generator shares the cores with the server.\n",
        flush=True,
    )
    phases: dict[str, Any] = {
        "served OpenMaaS, openvino engine (GGUF)": lambda: serve_openmaas(args, levels, None),
        "served OpenMaaS, torch engine (float32)": lambda: serve_openmaas(args, levels, directory),
        "served llama-cpp-python server (GGUF)": lambda: serve_llama(args, levels),
        "offline openvino pipeline": lambda: offline_openvino(args.requests, args.max_tokens, levels),
        "offline torch generate": lambda: offline_torch(directory, args.requests, args.max_tokens, levels),
        "offline llama.cpp (one sequence at a time)": lambda: offline_llama(
            args.requests, args.max_tokens, levels, args.llama_threads
        ),
    }
    rows: dict[str, list[Result]] = {}
    for label, phase in phases.items():
        if "llama" in label and not llama:
            continue
        started = time.perf_counter()
        try:
            rows[label] = phase()
        except Exception as error:  # one engine's failure is a line of the report, not the end of the run
            print(f"{label}: FAILED: {type(error).__name__}: {error}", flush=True)
            continue
        print(f"{label}: measured in {time.perf_counter() - started:.0f} s", flush=True)
    width = max(map(len, rows), default=0) + 8
    for index, level in enumerate(levels):
        print(f"\nconcurrency / sequences {level}")
        for label, results in rows.items():
            print(f"  {label:{width}}{results[index].row()}")
        reference = rows.get("served llama-cpp-python server (GGUF)")
        if reference:
            ours = rows["served OpenMaaS, openvino engine (GGUF)"][index]
            theirs = reference[index]
            speed = ours.tokens_per_second / theirs.tokens_per_second
            latency = ours.p50_ms / theirs.p50_ms
            print(f"  OpenMaaS (openvino) / llama.cpp server: tokens/s {speed:.2f}x, TTFT p50 {latency:.2f}x")


if __name__ == "__main__":
    main()
