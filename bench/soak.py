"""A bounded soak: minutes of mixed traffic against one OpenMaaS server while it trains, as a pass/fail check.

    .venv/bin/python bench/soak.py [--duration 600] [--concurrency 64] [--warmup 20] [--no-chat]

1. Starts a real OpenMaaS server on loopback (admin key, temporary data directory) offering the shipped MiniLM
   `all-minilm-l6-v2` and, unless --no-chat, SmolLM2 `smollm2-135m-instruct` (converted from its GGUF file on
   the first start into ~/.cache/openmaas-bench, about a minute; later runs reuse it, as bench/generate.py does).
2. Creates a tenant and a key for it (scopes read, train, infer); all traffic below uses that key. Uploads
   sms_spam and trains a `bow-mlp` classifier on it (3 epochs) through the API.
3. Closed-loop httpx async clients, one connection each (an httpx pool bounded to the concurrency, loopback,
   no proxies from the environment): about one in eight chats (SmolLM2, up to 32 tokens, streamed or not),
   the others split between predictions (1-8 real SMS texts a request) and embeddings (a string or 1-4 texts,
   float or base64). First --warmup seconds of it, then the server's RSS is taken and a training job starts
   (bow-mlp on the same dataset, into a model of its own; the next starts when one ends, so one is always
   training; the one running at the end is cancelled), then --duration seconds of it.
4. After the traffic stops, the server's usage (GET /v1/usage, admin key, every tenant, grouped by model) is
   read until it counts as many inference records as the clients got 200 answers for each model, or 15 s pass
   (records reach the database a drain interval after the answer; a stream meters when it closes).

Prints requests by route and status, req/s and p50/p99 latency per route (soak phase), the 5xx and failed
answers seen (route, request, status, error body, x-request-id), the training jobs, the server's RSS after the
warm-up, along the way and at the end with the growth (aim: under 10 %), usage records against 200 answers per
model, and the server log's warnings. Exits 1 when a 5xx, an error event inside a stream or a 200 with fewer
items than asked was seen, a request got no answer, a training job failed, the server died, or usage records do
not match the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import CACHE  # noqa: E402 (sibling scripts: the converted SmolLM2 is shared with generate.py)
from serve import DATA, HOST, KEY, Service, free_port, read_texts, rss_mb  # noqa: E402

from openmaas import APIError, Client  # noqa: E402

CLASSIFIER = "soak-classifier"  # predicted all along
BACKGROUND = "soak-background"  # trained all along, never predicted
EMBEDDER = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
REQUEST_TIMEOUT = 120.0  # above the server's own 60 s request timeout: it answers (503) before the client gives up
USAGE_WAIT = 15.0
JOB_EPOCHS = 5
JOB_POLL = 0.5
RSS_SAMPLES = 10
FAILURES_SHOWN = 20
SOAK, WARMUP = "soak", "warm-up"


@dataclass
class Tally:
    """What the clients saw: statuses by phase and route, latencies, 200s per model, failures in detail."""

    statuses: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (phase, route, status)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # soak phase only
    answered: Counter[str] = field(default_factory=Counter)  # model -> 200 answers, both phases
    failures: list[str] = field(default_factory=list)
    failed: int = 0  # 5xx, server errors inside streams, requests without an answer
    phase: str = WARMUP

    def record(self, route: str, status: str, seconds: float) -> None:
        self.statuses[(self.phase, route, status)] += 1
        if self.phase == SOAK:
            self.latencies[route].append(seconds)

    def fail(self, route: str, status: str, request: str, detail: str) -> None:
        self.failed += 1
        if len(self.failures) < FAILURES_SHOWN:
            self.failures.append(f"{route} {status}: {request} -> {detail}")


@dataclass
class Call:
    """One request a client sends: its route label, the model it meters under, and a description for reports."""

    route: str
    model: str
    body: dict[str, Any]
    path: str
    described: str
    expect: int  # items a 200 answer must carry (predictions, embeddings; 1 for chat)


def predict_call(rng: random.Random, texts: list[str]) -> Call:
    count = rng.randint(1, 8)
    at = rng.randrange(len(texts) - count)
    body = {"inputs": texts[at : at + count]}
    return Call("predict", CLASSIFIER, body, f"/v1/models/{CLASSIFIER}/predict", f"{count} texts", count)


def embeddings_call(rng: random.Random, texts: list[str]) -> Call:
    count = rng.randint(1, 4)
    at = rng.randrange(len(texts) - count)
    single = count == 1 and rng.random() < 0.5
    encoding = rng.choice(("float", "base64"))
    body = {"model": EMBEDDER, "input": texts[at] if single else texts[at : at + count], "encoding_format": encoding}
    described = f"{'a string' if single else f'{count} texts'}, {encoding}"
    return Call("embeddings", EMBEDDER, body, "/v1/embeddings", described, count)


def chat_call(rng: random.Random, texts: list[str]) -> Call:
    stream = rng.random() < 0.5
    max_tokens = rng.randint(8, 32)
    body: dict[str, Any] = {
        "model": CHAT,
        "messages": [{"role": "user", "content": f"Is this message spam? {rng.choice(texts)}"}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    route = "chat stream" if stream else "chat"
    return Call(route, CHAT, body, "/v1/chat/completions", f"max_tokens {max_tokens}", 1)


def answered_items(call: Call, payload: dict[str, Any]) -> int:
    if call.route == "predict":
        return len(payload.get("predictions", []))
    if call.route == "embeddings":
        return len(payload.get("data", []))
    return len(payload.get("choices", []))


async def read_stream(response: httpx.Response) -> str | None:
    """Reads an SSE chat stream to its end; the problem with it, if any (an error event, no [DONE])."""
    done = False
    async for line in response.aiter_lines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: {"):
            event = json.loads(line[6:])
            if "error" in event:
                return f"error event {json.dumps(event['error'])}"
    return None if done else "the stream ended without [DONE]"


async def send(http: httpx.AsyncClient, tally: Tally, call: Call) -> None:
    started = time.perf_counter()
    try:
        async with http.stream("POST", call.path, json=call.body) as response:
            problem = None
            if call.route == "chat stream" and response.status_code == 200:
                problem = await read_stream(response)
            else:
                await response.aread()
        status = str(response.status_code)
    except httpx.HTTPError as error:
        tally.record(call.route, type(error).__name__, time.perf_counter() - started)
        tally.fail(call.route, type(error).__name__, call.described, str(error) or "no answer")
        return
    tally.record(call.route, status, time.perf_counter() - started)
    request_id = response.headers.get("x-request-id", "?")
    if response.status_code == 200:
        tally.answered[call.model] += 1  # the server meters every 200, a stream whatever happens inside it
        if problem is None and call.route != "chat stream" and answered_items(call, response.json()) != call.expect:
            problem = f"{answered_items(call, response.json())} items for {call.expect} asked"
        if problem is not None:  # an error event inside a stream, or an answer short of what was asked
            tally.fail(call.route, "200", call.described, f"{problem} (x-request-id {request_id})")
    elif response.status_code >= 500:
        tally.fail(call.route, status, call.described, f"{response.text[:300]} (x-request-id {request_id})")


MakeCall = Callable[[random.Random, list[str]], Call]


async def client_loop(
    http: httpx.AsyncClient, tally: Tally, make: MakeCall, texts: list[str], seed: int, stop: asyncio.Event
) -> None:
    """One closed-loop client: its next request when the last one is answered, until `stop` is set."""
    rng = random.Random(seed)
    while not stop.is_set():
        await send(http, tally, make(rng, texts))


@dataclass
class Jobs:
    """The training jobs run during the soak: one at a time, the next created when one ends."""

    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)  # seconds from creation to first seen running
    seconds: list[float] = field(default_factory=list)  # seconds from creation to success

    def describe(self) -> str:
        ended = ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items())) or "none ended"
        if self.seconds:
            ended += f"; a success took {sum(self.seconds) / len(self.seconds):.1f}s on average from creation"
        if self.queued:
            ended += f"; queued {sum(self.queued) / len(self.queued):.1f}s on average before it ran"
        return ended


async def request(http: httpx.AsyncClient, tally: Tally, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A jobs API call, tallied under the route `jobs`; raises on a 4xx or 5xx (a 5xx is a failure too)."""
    started = time.perf_counter()
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        tally.record("jobs", type(error).__name__, time.perf_counter() - started)
        tally.fail("jobs", type(error).__name__, f"{method} {path}", str(error) or "no answer")
        raise
    tally.record("jobs", str(response.status_code), time.perf_counter() - started)
    if response.status_code >= 500:
        tally.fail("jobs", str(response.status_code), f"{method} {path}", response.text[:300])
    response.raise_for_status()
    return response


async def train_all_along(http: httpx.AsyncClient, tally: Tally, jobs: Jobs, dataset: str, stop: asyncio.Event) -> None:
    """Creates a job, polls it to its end, creates the next; once `stop` is set, cancels the one running."""
    body = {"dataset": dataset, "model": BACKGROUND, "recipe": "bow-mlp", "hyperparameters": {"epochs": JOB_EPOCHS}}
    try:
        while not stop.is_set():
            job = (await request(http, tally, "POST", "/v1/jobs", json=body)).json()
            started, cancelled, running = time.perf_counter(), False, False
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                if job["status"] != "queued" and not running:
                    running = True
                    jobs.queued.append(time.perf_counter() - started)
                if stop.is_set() and not cancelled:
                    cancelled = True
                    with contextlib.suppress(httpx.HTTPStatusError):  # 409 if it ended in between
                        await request(http, tally, "POST", f"/v1/jobs/{job['id']}/cancel")
                await asyncio.sleep(JOB_POLL)
                job = (await request(http, tally, "GET", f"/v1/jobs/{job['id']}")).json()
            jobs.statuses[job["status"]] += 1
            if job["status"] == "succeeded":
                jobs.seconds.append(time.perf_counter() - started)
            elif job["status"] == "failed":
                jobs.failures.append(f"{job['id']}: {job.get('reason')}")
    except httpx.HTTPError as error:  # the jobs API refused or did not answer: reported, the soak goes on
        jobs.failures.append(f"the jobs API: {type(error).__name__}: {error}")


async def sample_rss(pid: int, every: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Samples every `every` seconds but the last (the soak's end is sampled by its caller)."""
    began = time.perf_counter()
    for at in range(1, RSS_SAMPLES):
        try:
            await asyncio.wait_for(stop.wait(), began + at * every - time.perf_counter())
            return
        except TimeoutError:
            samples.append((time.perf_counter() - began, rss_mb(pid)))


# ---------------------------------------------------------------- the run


@dataclass
class Setup:
    server: Service
    url: str
    key: str  # the soak tenant's
    dataset: str
    texts: list[str]


def start_server(root: Path, chat: bool) -> tuple[Service, str]:
    """The server and its URL, once /healthz answers."""
    models = [EMBEDDER, CHAT] if chat else [EMBEDDER]
    env = {
        **os.environ,
        "OPENMAAS_ADMIN_KEY": KEY,
        "OPENMAAS_FOUNDATION_MODELS": json.dumps(models),
        "OPENMAAS_FOUNDATION_CACHE_DIR": str(CACHE),
    }
    port = free_port()
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", str(root / "data")]
    service = Service("OpenMaaS", [*command, "--log-level", "warning"], root / "server.log", env)
    url = f"http://{HOST}:{port}"
    return service.wait_ready(f"{url}/healthz"), url


def prepare(server: Service, url: str, chat: bool) -> Setup:
    """A tenant and its key, the classifier trained, every model registered."""
    with Client(url, KEY, timeout=120.0) as admin:
        tenant = admin.create_tenant("soak")
        key = admin.create_key(tenant["id"], ["read", "train", "infer"])["key"]
    with Client(url, key, timeout=120.0) as client:
        dataset = client.upload_dataset(DATA, name="sms")["id"]
        began = time.perf_counter()
        job = client.create_job(dataset, CLASSIFIER, hyperparameters={"epochs": 3})
        final = client.wait_for_job(job["id"], timeout=900, poll=0.5)
        if final["status"] != "succeeded":
            raise RuntimeError(f"training {CLASSIFIER} {final['status']}: {final.get('reason')}")
        accuracy = final["metrics"]["val_accuracy"]
        took = time.perf_counter() - began
        print(f"trained {CLASSIFIER} (bow-mlp, 3 epochs): val accuracy {accuracy:.4f} in {took:.0f}s", flush=True)
        deadline = time.monotonic() + 600
        for name in [EMBEDDER, CHAT] if chat else [EMBEDDER]:
            while True:
                try:
                    client.get_model(name)
                    break
                except APIError:  # 404 until its conversion registers it
                    if time.monotonic() > deadline or server.process.poll() is not None:
                        raise RuntimeError(f"{name} not offered:\n{server.log_tail()}") from None
                    time.sleep(1)
        print(f"models offered {time.perf_counter() - began:.0f}s after the training began", flush=True)
    return Setup(server, url, key, dataset, read_texts())


def mix(concurrency: int, chat: bool) -> list[MakeCall]:
    """The clients' kinds: an eighth chat (at least one), the rest split between predict and embeddings."""
    chats = max(1, round(concurrency / 8)) if chat else 0
    embedders = (concurrency - chats) // 2
    counts: list[tuple[MakeCall, int]] = [
        (chat_call, chats),
        (embeddings_call, embedders),
        (predict_call, concurrency - chats - embedders),
    ]
    return [make for make, count in counts for _ in range(count)]


async def soak(setup: Setup, args: argparse.Namespace, tally: Tally, jobs: Jobs) -> list[tuple[float, float]]:
    """Warm-up, then the soak with training; returns RSS samples (seconds into the soak, MB), first and last
    being the soak's start and end."""
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {setup.key}"}
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=10.0)
    kinds = mix(args.concurrency, not args.no_chat)
    print(f"clients: {Counter(k.__name__.removesuffix('_call') for k in kinds)}", flush=True)
    async with (
        httpx.AsyncClient(base_url=setup.url, headers=headers, timeout=timeout, limits=limits, trust_env=False) as http,
        httpx.AsyncClient(base_url=setup.url, headers=headers, timeout=timeout, trust_env=False) as control,
    ):
        # First each model once, so that loading it is not part of the warm-up's latencies.
        rng = random.Random(0)
        for make in dict.fromkeys(kinds):
            await send(http, tally, make(rng, setup.texts))
        done = asyncio.Event()
        clients = [
            asyncio.create_task(client_loop(http, tally, make, setup.texts, seed, done))
            for seed, make in enumerate(kinds, start=1)
        ]
        await asyncio.sleep(args.warmup)
        tally.phase = SOAK  # the clients run on through the switch
        samples = [(0.0, rss_mb(setup.server.pid))]
        print(f"warm-up done; server RSS {samples[0][1]:.0f} MB; soaking {args.duration:g}s", flush=True)
        stop = asyncio.Event()
        trainer = asyncio.create_task(train_all_along(control, tally, jobs, setup.dataset, stop))
        sampler = asyncio.create_task(sample_rss(setup.server.pid, args.duration / RSS_SAMPLES, samples, stop))
        began = time.perf_counter()
        await asyncio.sleep(args.duration)
        done.set()  # each client finishes the request it is in, then stops
        await asyncio.gather(*clients)
        samples.append((time.perf_counter() - began, rss_mb(setup.server.pid)))
        stop.set()
        await asyncio.gather(sampler, trainer)
    return samples


def usage_by_model(url: str, expected: Counter[str]) -> tuple[dict[str, int], float]:
    """Inference records per model from GET /v1/usage (admin, every tenant), read until they equal `expected`
    or USAGE_WAIT seconds pass; and the seconds waited."""
    began = time.perf_counter()
    with Client(url, KEY, timeout=60.0) as admin:
        while True:
            rows = admin.usage(group_by="model", all_tenants=True)
            records = {row["model"]: row["records"] for row in rows if row["kind"] == "inference"}
            waited = time.perf_counter() - began
            if records == dict(expected) or waited > USAGE_WAIT:
                return records, waited
            time.sleep(0.5)


# ---------------------------------------------------------------- report


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))] * 1000


def print_requests(tally: Tally, duration: float) -> None:
    routes = sorted({route for _, route, _ in tally.statuses})
    statuses = sorted({status for _, _, status in tally.statuses})
    header = f"{'route':<13}" + "".join(f"{s:>9}" for s in statuses) + f"{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(f"\nRequests in the soak phase ({duration:g}s), by route and status:")
    print(header)
    print("-" * len(header))
    for route in routes:
        counts = [tally.statuses[(SOAK, route, s)] for s in statuses]
        latencies = tally.latencies[route]
        print(
            f"{route:<13}" + "".join(f"{c:>9}" for c in counts) + f"{sum(counts) / duration:>9.1f}"
            f"{percentile_ms(latencies, 50):>9.1f}{percentile_ms(latencies, 99):>9.1f}"
        )
    warm = Counter({(r, s): n for (phase, r, s), n in tally.statuses.items() if phase == WARMUP})
    described = ", ".join(f"{r} {s} × {n}" for (r, s), n in sorted(warm.items()))
    print(f"Warm-up (first request per model and --warmup seconds): {described}")


def print_report(
    args: argparse.Namespace,
    tally: Tally,
    jobs: Jobs,
    samples: list[tuple[float, float]],
    usage: dict[str, int],
    waited: float,
    server: Service,
) -> bool:
    """Prints everything; True when the soak passed."""
    print_requests(tally, args.duration)
    fives = sum(n for (_, _, s), n in tally.statuses.items() if s.startswith("5"))
    print(f"\n5xx answers: {fives}; failed requests in all (5xx, errors inside streams, no answer): {tally.failed}")
    for line in tally.failures:
        print(f"  {line}")
    print(f"\nTraining jobs during the soak ({BACKGROUND}, bow-mlp {JOB_EPOCHS} epochs): {jobs.describe()}")
    for line in jobs.failures:
        print(f"  failed {line}")
    start, end = samples[0][1], samples[-1][1]
    growth = (end - start) / start * 100
    print("\nServer RSS (VmRSS of the server pid; training runs in child processes, not counted):")
    print("  " + ", ".join(f"{t:.0f}s {mb:.0f} MB" for t, mb in samples))
    verdict = "under the 10 % aim" if growth < 10 else "ABOVE the 10 % aim"
    print(f"  start (after warm-up) {start:.0f} MB, end {end:.0f} MB, growth {growth:+.1f} % ({verdict})")
    print(f"\nUsage records (GET /v1/usage, inference, read {waited:.1f}s after the traffic) against 200 answers:")
    models = sorted(set(usage) | set(tally.answered))
    matches = True
    for model in models:
        same = usage.get(model, 0) == tally.answered[model]
        matches &= same
        verdict = "match" if same else "DIFFER"
        print(
            f"  {model:<24} 200 answers {tally.answered[model]:>8}   usage records {usage.get(model, 0):>8}   {verdict}"
        )
    warnings = [line for line in server.log_tail(10_000).splitlines() if line.strip()]
    print(f"\nServer log (warnings and errors): {len(warnings)} lines" + (", the last ones:" if warnings else ""))
    for line in warnings[-20:]:
        print(f"  {line}")
    alive = server.process.poll() is None
    passed = alive and tally.failed == 0 and not jobs.failures and matches
    reasons = [
        reason
        for reason, bad in (
            ("the server died", not alive),
            (f"{tally.failed} failed requests", tally.failed),
            (f"{len(jobs.failures)} failed training jobs", jobs.failures),
            ("usage records differ from answers", not matches),
        )
        if bad
    ]
    print(f"\nSOAK {'PASSED' if passed else 'FAILED: ' + '; '.join(reasons)}")
    return passed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="Seconds of soak after the warm-up.")
    parser.add_argument("--concurrency", type=int, default=64, help="Concurrent clients (connections).")
    parser.add_argument("--warmup", type=float, default=20.0, help="Seconds of the same traffic before the soak.")
    parser.add_argument("--no-chat", action="store_true", help="Leave SmolLM2 out (no conversion, no chat).")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--duration must be positive, --warmup not negative, --concurrency at least 1")
    return args


def main() -> int:
    args = parse_args()
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}; the clients share them with the server")
    tally, jobs = Tally(), Jobs()
    with tempfile.TemporaryDirectory(prefix="openmaas-soak-") as scratch:
        server, url = start_server(Path(scratch), not args.no_chat)
        try:
            setup = prepare(server, url, not args.no_chat)
            samples = asyncio.run(soak(setup, args, tally, jobs))
            usage, waited = usage_by_model(url, tally.answered)
            passed = print_report(args, tally, jobs, samples, usage, waited, server)
        except BaseException:
            print(f"OpenMaaS server {server.status()}; its log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
