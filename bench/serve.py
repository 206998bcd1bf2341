"""HTTP serving throughput and latency of two trained models: OpenMaaS vs. plain FastAPI vs. LitServe, in one run.

    .venv/bin/python bench/serve.py [--duration 8] [--concurrency 1,8,32] [--models bow,minilm] [--skip-peers]

1. Starts a real OpenMaaS server on loopback (admin key, temporary data dir), uploads sms_spam and trains,
   through the API, `bow-mlp` (3 epochs) and the MiniLM-based `transformer-classifier` (5 epochs, head only).
2. Takes the exact files the server loaded for each version (its model cache after the first prediction,
   which includes the ONNX export it derived; the content-addressed blobs if there is no cache) and checks
   them against the version's manifest.
3. Offline limit: the same files loaded in this process with the recipe's own loader and the version's
   runtime, featurisation / tokenisation included, on every core, no HTTP or JSON: texts/s of `predict_proba`
   on consecutive real texts, 1 a call, a batch as it comes (64 for bow-mlp, 32 for MiniLM; what a server
   that batches concurrent requests runs) and 256 a call, each before and again after the servers' rows
   (the machine's speed drifts; each size keeps its better figure). The limit is the best of them: the most
   a server could deliver on this machine. And, for each concurrency N, the rate with N texts in flight and
   nothing else: two calls of N/2 texts at once on two threads (one call of 1 for N = 1), as a server with N
   clients and two batches at once has them; no server with N clients can batch more than N texts.
4. Peers serve the identical files in their own processes: plain FastAPI + uvicorn (one forward pass per
   request; a sync endpoint in FastAPI's thread pool, and an async one that runs it on the event loop) and
   LitServe with dynamic batching (bench/peers/). Their answers are checked against the
   in-process model before they are measured.
5. A closed-loop load generator (asyncio, raw HTTP/1.1 keep-alive sockets, one connection per concurrent
   client, one real SMS text per request, cycling through the dataset) drives each server at each
   concurrency for a fixed duration after a warm-up and records every request's latency; a non-200 answer,
   a 200 without predictions, a connection error or a 30 s timeout counts as an error.

Prints requests/s, p50/p95/p99 latency, errors, served / offline (against the limit, against the in-flight rate at
the row's concurrency, and for OpenMaaS rows also against the offline rate measured right before the row,
since this VM's speed drifts over minutes), OpenMaaS /
peer at the same concurrency, each server's CPU time per request (to set against the offline CPU time per
text: what the HTTP path costs), and the OpenMaaS server's resident memory (VmRSS of its pid) idle and after
each model's first prediction. The load generator shares the machine's cores with the server it measures; its
CPU use, the machine's, and the machine's just before the row with no load applied (other work that would skew
the row) are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import torch
from kserve_v2 import V2_ROWS, grpc_probabilities, grpc_request, rest_body, rest_probabilities

from openmaas import Client
from openmaas.recipes import get_loader
from openmaas.storage.artifacts import sha256_file
from openmaas.storage.artifacts.local import LocalArtifactStore

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parents[1] / "shared" / "datasets" / "sms_spam" / "sms_spam.csv"
KEY = "om-bench-key-0000000000000000-000000"  # 32 characters at least: a shorter admin key is refused
HOST = "127.0.0.1"
WARMUP_SECONDS = 1.0
REQUEST_TIMEOUT = 30.0
START_TIMEOUT = 180.0
OFFLINE_CHUNK = 256  # the largest predict_proba call of the offline limit
IN_FLIGHT_CALLS = 2  # calls at once for the in-flight rate: the batches an OpenMaaS server runs at once on a CPU
ADJACENT_OFFLINE_SECONDS = 3.0
LITSERVE_MAX_BATCH = 32
LITSERVE_BATCH_TIMEOUT = 0.005
SERVERS = ("OpenMaaS", *V2_ROWS, "FastAPI", "FastAPI async", "LitServe")  # OpenMaaS's own rows first
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSpec:
    key: str  # the --models value
    title: str
    recipe: str
    hyperparameters: dict[str, Any]
    batch: int  # texts per predict_proba call of the "batch as it comes" offline figure

    @property
    def registry_name(self) -> str:
        return f"bench-{self.key}"


MODELS = {
    "bow": ModelSpec("bow", "bow-mlp", "bow-mlp", {"epochs": 3}, 64),
    "minilm": ModelSpec("minilm", "MiniLM classifier", "transformer-classifier", {"epochs": 5}, 32),
    # Opt-in: the same recipe served with int8 linear-layer weights (`runtime: onnx-int8`); the peers load it too.
    "minilm-int8": ModelSpec(
        "minilm-int8", "MiniLM int8", "transformer-classifier", {"epochs": 5, "runtime": "onnx-int8"}, 32
    ),
}


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, all cores, from /proc/stat."""
    # user nice system idle iowait irq softirq steal (guest time is already counted in user and nice)
    values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_fraction(since: tuple[float, float]) -> float:
    """Busy fraction of all the machine's cores since an earlier `cpu_times()`."""
    busy, total = cpu_times()
    return (busy - since[0]) / max(total - since[1], 1.0)


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of one process group: a server and its
    workers (LitServe's inference processes, say). Threads are included; processes that exited are not."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ..., utime (12th), stime (13th)
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MB; NaN once it has exited (a zombie has no VmRSS)."""
    with suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


class Service:
    """A server subprocess in its own process group (so its workers stop with it), output to a log file."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(command), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT) -> Service:
        """Wait for `url` to answer 200; stop the service and raise if it exits, fails or takes too long."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                with suppress(httpx.TransportError):
                    if httpx.get(url, timeout=2.0).status_code == 200:
                        return self
                time.sleep(0.2)
            raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def status(self) -> str:
        code = self.process.poll()
        return "running" if code is None else f"exited with code {code}"

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left of it after 15 s."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


def start_openmaas(data_dir: Path, port: int, grpc_port: int, logs: Path) -> Service:
    # Default settings otherwise: a faster job poll would start training sooner, and cost CPU in every row.
    env = {**os.environ, "OPENMAAS_ADMIN_KEY": KEY, "OPENMAAS_GRPC_PORT": str(grpc_port)}
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    service = Service("OpenMaaS", [*command, "--log-level", "warning"], logs / "openmaas.log", env)
    return service.wait_ready(f"http://{HOST}:{port}/healthz")


def start_peer(server: str, trained: Trained, port: int, logs: Path) -> Service:
    script, health, extra = {
        "FastAPI": ("fastapi_server.py", "/healthz", []),
        "FastAPI async": ("fastapi_server.py", "/healthz", ["--async-endpoint"]),
        "LitServe": (
            "litserve_server.py",
            "/health",
            ["--max-batch-size", str(LITSERVE_MAX_BATCH), "--batch-timeout", str(LITSERVE_BATCH_TIMEOUT)],
        ),
    }[server]
    command = [
        sys.executable,
        str(BENCH / "peers" / script),
        *("--model-dir", str(trained.directory), "--recipe", trained.recipe, "--runtime", trained.runtime),
        *("--port", str(port), *extra),
    ]
    service = Service(server, command, logs / f"{server.lower().replace(' ', '-')}-{trained.spec.key}.log")
    return service.wait_ready(f"http://{HOST}:{port}{health}")


# ---------------------------------------------------------------- models


@dataclass
class Trained:
    """A version the server trained, its files copied out, and the same files loaded in this process."""

    spec: ModelSpec
    version: int
    recipe: str
    runtime: str
    labels: list[str]
    directory: Path
    source: str
    model: Any = None


def read_texts() -> list[str]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        return [row["text"].strip() for row in csv.DictReader(handle) if row["text"].strip()]


def train(client: Client, specs: Sequence[ModelSpec]) -> None:
    dataset = client.upload_dataset(DATA, name="sms")
    jobs = {
        spec.key: client.create_job(
            dataset["id"], spec.registry_name, recipe=spec.recipe, hyperparameters=spec.hyperparameters
        )
        for spec in specs
    }
    for spec in specs:
        began = time.perf_counter()
        final = client.wait_for_job(jobs[spec.key]["id"], timeout=1800, poll=0.5)
        if final["status"] != "succeeded":
            raise RuntimeError(f"training {spec.title} {final['status']}: {final.get('error') or final}")
        accuracy, waited = final["metrics"]["val_accuracy"], time.perf_counter() - began
        print(f"  trained {spec.title:<18} val accuracy {accuracy:.4f} (waited {waited:.0f}s)", flush=True)


def latest_version(data_dir: Path, name: str) -> dict[str, Any]:
    """The newest version of `name`, read from the server's SQLite metadata (read-only)."""
    with closing(sqlite3.connect(f"file:{data_dir / 'openmaas.db'}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT v.version, v.recipe, v.runtime, v.labels, v.files, v.artifact_sha256 FROM model_versions v "
            "JOIN registered_models m ON m.id = v.model_id WHERE m.name = ? ORDER BY v.version DESC LIMIT 1",
            (name,),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"no version of {name} in {data_dir / 'openmaas.db'}")
    return {**dict(row), "labels": json.loads(row["labels"]), "files": json.loads(row["files"])}


def copy_model_files(data_dir: Path, version: dict[str, Any], destination: Path) -> str:
    """The directory the server loaded (derived files such as an ONNX export included), else the blobs."""
    cached = data_dir / "cache" / "models" / version["artifact_sha256"]
    if cached.is_dir():
        shutil.copytree(cached, destination)
        source = "the server's model cache"
    else:
        LocalArtifactStore(data_dir / "artifacts").materialize(version["files"], destination)
        source = "the artifact blobs"
    for name, sha256 in version["files"].items():
        if sha256_file(destination / name) != sha256:
            raise RuntimeError(f"{destination / name} does not match the version's manifest")
    extra = sorted(
        str(p.relative_to(destination))
        for p in destination.rglob("*")
        if p.is_file() and str(p.relative_to(destination)) not in version["files"]
    )
    return source + (f" (manifest verified; derived: {', '.join(extra)})" if extra else " (manifest verified)")


@dataclass(frozen=True)
class OfflineRate:
    texts_per_second: float
    cpu_ms_per_text: float  # this process's CPU (every thread) per text


def offline_rate(model: Any, texts: list[str], batch: int, seconds: float) -> OfflineRate:
    """Texts/s of `predict_proba` on consecutive chunks of `batch` real texts, for `seconds`, and its CPU a text."""
    model.predict_proba(texts[:batch])  # warm-up
    done, position, started, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.predict_proba(texts[position : position + batch])
        done += batch
        position = (position + batch) % (len(texts) - batch)
    return OfflineRate(done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done)


def in_flight_rate(model: Any, texts: list[str], concurrency: int, seconds: float) -> OfflineRate:
    """Texts/s with `concurrency` texts in flight and nothing else: IN_FLIGHT_CALLS calls of concurrency / calls
    consecutive real texts at once, each on its own thread, each starting its next call when it returns."""
    calls = min(IN_FLIGHT_CALLS, concurrency)
    size = concurrency // calls
    done = [0] * calls
    stop = 0.0

    def caller(index: int) -> None:
        position = index * (len(texts) // calls)
        while time.perf_counter() < stop:
            model.predict_proba(texts[position : position + size])
            done[index] += size
            position = (position + size) % (len(texts) - size)

    model.predict_proba(texts[:size])  # warm-up
    threads = [threading.Thread(target=caller, args=(index,)) for index in range(calls)]
    started, cpu = time.perf_counter(), time.process_time()
    stop = started + seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(done)
    return OfflineRate(total / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / total)


def max_difference(url: str, trained: Trained, texts: list[str], protocol: str = "native") -> float:
    """Largest |probability difference| between a server's answers and the in-process model, one text a request
    and one a call (an int8 model's activations are quantized per pass, so its answers depend on batch-mates).
    For the v2 rows: `url` is the infer route's, or the gRPC address."""
    expected = [trained.model.predict_proba([text])[0] for text in texts]
    worst = 0.0
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60.0) as http:
        for text, row in zip(texts, expected, strict=True):
            if protocol == "v2 gRPC":
                got = grpc_probabilities(url, trained.spec.registry_name, text, KEY)
            elif protocol in V2_ROWS:
                got = rest_probabilities(url, text, KEY)
            else:
                response = http.post(url, json={"inputs": [text]})
                response.raise_for_status()
                scores = response.json()["predictions"][0]["scores"]
                got = np.array([scores[label] for label in trained.labels])
            worst = max(worst, float(np.abs(got - row).max()))
    return worst


# ---------------------------------------------------------------- load generator


def native_body(text: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"inputs": [text]}).encode(), {}


def build_requests(
    port: int, path: str, texts: Sequence[str], encode: Callable[[str], tuple[bytes, dict[str, str]]] = native_body
) -> list[bytes]:
    """One complete HTTP/1.1 request per text, built before the clock starts: `encode` gives its body and any
    headers of its own (the native shape by default)."""
    requests = []
    for text in texts:
        body, headers = encode(text)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, server closes the connection) of a response's status line and headers."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = -1, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length < 0:
        raise ValueError("a response without Content-Length")
    return status, length, close


@dataclass
class LoadResult:
    concurrency: int
    seconds: float  # the measured window, warm-up excluded
    latencies: list[float]  # seconds, of the successful requests that completed in the window
    errors: Counter[str]  # what went wrong ("HTTP 503", "ConnectionRefusedError", ...) → how often
    client_cpu: float  # this process's CPU seconds per wall second over the whole run
    machine_cpu: float  # busy fraction of all the machine's cores over the whole run
    background_cpu: float  # the same, in the half second before the run, with no load: other work on the machine
    server_cpu_ms: float = math.nan  # the server's CPU (all its processes and threads) per answered request

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else math.nan


@dataclass
class LoadGenerator:
    """Closed loop: `concurrency` keep-alive connections, each sending its next request when the last is answered.

    A request counts when it completes inside [warm-up end, stop]; clients send nothing after `stop`, and a
    request in flight then is given at most REQUEST_TIMEOUT to finish, uncounted.
    """

    port: int
    requests: list[Any]  # raw HTTP requests (ModelInferRequests for GrpcLoadGenerator)
    concurrency: int
    duration: float
    server_pgid: int
    expect: bytes = b'"predictions"'  # what every answer's body holds (v2's: '"outputs"')
    warmup: float = WARMUP_SECONDS
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    measure_from: float = 0.0
    stop_at: float = 0.0

    async def run(self) -> LoadResult:
        quiet = cpu_times()
        await asyncio.sleep(0.5)
        background_cpu = busy_fraction(quiet)
        started, cpu, machine = time.perf_counter(), time.process_time(), cpu_times()
        self.measure_from = started + self.warmup
        self.stop_at = self.measure_from + self.duration
        server_cpu = asyncio.create_task(self._server_cpu_in_window())
        await asyncio.gather(*(self._client(index) for index in range(self.concurrency)))
        client_cpu = (time.process_time() - cpu) / (time.perf_counter() - started)
        return LoadResult(
            self.concurrency,
            self.duration,
            self.latencies,
            self.errors,
            client_cpu,
            busy_fraction(machine),
            background_cpu,
            await server_cpu * 1000 / max(len(self.latencies), 1),
        )

    async def _server_cpu_in_window(self) -> float:
        """The server's CPU seconds between the start and the end of the measured window."""
        await asyncio.sleep(max(0.0, self.measure_from - time.perf_counter()))
        before = group_cpu_seconds(self.server_pgid)
        await asyncio.sleep(max(0.0, self.stop_at - time.perf_counter()))
        return group_cpu_seconds(self.server_pgid) - before

    async def _client(self, index: int) -> None:
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        position = index
        try:
            while time.perf_counter() < self.stop_at:
                payload = self.requests[position % len(self.requests)]
                position += self.concurrency
                began = time.perf_counter()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        if streams is None:
                            streams = await asyncio.open_connection(HOST, self.port)
                        failure, close = await self._exchange(*streams, payload)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                    failure, close = type(e).__name__, True
                ended = time.perf_counter()
                if self.measure_from <= ended <= self.stop_at:
                    if failure is None:
                        self.latencies.append(ended - began)
                    else:
                        self.errors[failure] += 1
                if close and streams is not None:
                    streams[1].close()
                    streams = None
                if failure is not None:
                    await asyncio.sleep(0.01)  # no hot loop against a server that refuses or fails
        finally:
            if streams is not None:
                streams[1].close()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
    ) -> tuple[str | None, bool]:
        """(None or what went wrong, whether the server closes the connection) for one request."""
        writer.write(payload)
        status, length, close = parse_head(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(length)
        if status != 200:
            return f"HTTP {status}", close
        return (None if self.expect in body else f"200 without {self.expect.decode()}"), close


class GrpcLoadGenerator(LoadGenerator):
    """The same closed loop over gRPC (grpc.aio): `concurrency` clients, each on its own channel, as each HTTP
    client has its own connection; `port` is the gRPC port."""

    async def _client(self, index: int) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        metadata = (("authorization", f"Bearer {KEY}"),)
        position = index
        async with grpc.aio.insecure_channel(f"{HOST}:{self.port}") as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while time.perf_counter() < self.stop_at:
                request = self.requests[position % len(self.requests)]
                position += self.concurrency
                began = time.perf_counter()
                failure = None
                try:
                    response = await infer(request, metadata=metadata, timeout=REQUEST_TIMEOUT)
                    if not response.raw_output_contents:
                        failure = "OK without outputs"
                except grpc.aio.AioRpcError as error:
                    failure = str(error.code())
                ended = time.perf_counter()
                if self.measure_from <= ended <= self.stop_at:
                    if failure is None:
                        self.latencies.append(ended - began)
                    else:
                        self.errors[failure] += 1
                if failure is not None:
                    await asyncio.sleep(0.01)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop when it is installed (a cheaper client), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(make())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())


def measure(
    port: int, path: str, texts: list[str], concurrency: int, duration: float, pgid: int, protocol: str = "native"
) -> LoadResult:
    """One row's load. For "v2 gRPC", `port` is the gRPC port and `path` the model's name."""
    generator: LoadGenerator
    if protocol == "v2 gRPC":
        requests = [grpc_request(path, text) for text in texts]
        generator = GrpcLoadGenerator(port, requests, concurrency, duration, pgid)
    elif protocol in V2_ROWS:
        binary = protocol == "v2 binary"
        requests = build_requests(port, path, texts, lambda text: rest_body(text, binary))
        generator = LoadGenerator(port, requests, concurrency, duration, pgid, expect=b'"outputs"')
    else:
        generator = LoadGenerator(port, build_requests(port, path, texts), concurrency, duration, pgid)
    return run_async(generator.run)


# ---------------------------------------------------------------- report


@dataclass
class Row:
    model: str
    server: str
    result: LoadResult
    offline: float
    offline_now: float = math.nan  # the offline rate (OFFLINE_CHUNK a call) measured right before this row
    in_flight: float = math.nan  # the offline rate with this row's concurrency in texts in flight


def format_row(row: Row, ours: LoadResult | None) -> str:
    r = row.result
    versus = ours.throughput / r.throughput if ours is not None and r.throughput > 0 else math.nan
    return (
        f"{row.model:<18}{row.server:<14}{r.concurrency:>5}{r.throughput:>10,.1f}"
        f"{r.percentile_ms(50):>9.1f}{r.percentile_ms(95):>9.1f}{r.percentile_ms(99):>9.1f}{r.errors.total():>8}"
        f"{r.throughput / row.offline:>10.3f}{r.throughput / row.in_flight:>12.3f}"
        f"{r.throughput / row.offline_now:>11.3f}{versus:>12.2f}"
        f"{r.server_cpu_ms:>12.2f}{r.client_cpu * 100:>10.0f}%"
        f"{r.machine_cpu * 100:>10.0f}%{r.background_cpu * 100:>9.0f}%"
    )


HEADER = (
    f"{'model':<18}{'server':<14}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    f"{'/offline':>10}{'/in flight':>12}{'/off. now':>11}{'OpenMaaS/x':>12}{'srv CPU ms':>12}{'client CPU':>11}"
    f"{'all CPUs':>11}{'bg CPU':>10}"
)


def ours_for(rows: Sequence[Row], row: Row) -> LoadResult | None:
    for other in rows:
        if (
            other.model == row.model
            and other.server == "OpenMaaS"
            and other.result.concurrency == row.result.concurrency
        ):
            return other.result
    return None


def describe_offline(rates: dict[int, OfflineRate]) -> str:
    sizes = ", ".join(
        f"{rate.texts_per_second:,.0f} at {size} a call ({rate.cpu_ms_per_text:.2f} ms of CPU a text)"
        for size, rate in rates.items()
    )
    return f"limit {max(r.texts_per_second for r in rates.values()):,.0f} texts/s: {sizes}"


def print_report(
    rows: Sequence[Row],
    offline: dict[str, dict[int, OfflineRate]],
    in_flight: dict[str, dict[int, OfflineRate]],
    memory: Sequence[tuple[str, float, str]],
    notes: Sequence[str],
    duration: float,
    load_average: float,
) -> None:
    cores = os.cpu_count()
    print()
    print(
        f"Serving sms_spam classifiers over HTTP on {cores} CPU cores: one real SMS text per request, closed loop, "
        f"{duration:g}s measured after {WARMUP_SECONDS:g}s of warm-up per row."
    )
    print(
        f"The load generator (asyncio, raw HTTP/1.1 keep-alive sockets) shares these {cores} cores with the server "
        "it measures. 'srv CPU ms': the server's CPU time (all its processes and threads) per answered request in "
        "the measured window, to compare with the offline CPU per text below; 'client CPU': the load generator's "
        "own CPU use (100% = one core); 'all CPUs': the whole machine's during the "
        "row (100% = every core busy); 'bg CPU': the machine's in the half second before the row, with no load "
        "applied (other work on the machine, or the idle server itself: LitServe's processes poll their queues)."
    )
    print(f"Load average (1 min) when the run started: {load_average:.2f}.")
    for title, rates in offline.items():
        print(f"Offline, {title}: {describe_offline(rates)}.")
    for title, rates in in_flight.items():
        described = ", ".join(
            f"{count}: {rate.texts_per_second:,.0f} texts/s ({rate.cpu_ms_per_text:.2f} ms of CPU a text)"
            for count, rate in rates.items()
        )
        print(f"In flight, {title}: {described}.")
    print(
        "/offline = req/s ÷ offline limit; /in flight = req/s ÷ the in-flight rate at the row's concurrency N (N texts "
        f"in flight and nothing else: {IN_FLIGHT_CALLS} calls of N/{IN_FLIGHT_CALLS} at once; the most a server "
        f"with N clients could batch); /off. now = req/s ÷ the offline rate at {OFFLINE_CHUNK} a call measured "
        f"for {ADJACENT_OFFLINE_SECONDS:g}s right before the row (OpenMaaS rows; the machine's speed drifts over a "
        "run); OpenMaaS/x = OpenMaaS req/s ÷ this row's req/s at the same concurrency."
    )
    print(
        "Peers: plain FastAPI, one forward pass per request, with a sync endpoint (FastAPI's thread pool) and with "
        f"an async one (the forward pass on the event loop); LitServe (max_batch_size "
        f"{LITSERVE_MAX_BATCH}, batch_timeout {LITSERVE_BATCH_TIMEOUT * 1000:g} ms)."
    )
    print()
    print(HEADER)
    print("-" * len(HEADER))
    previous = None
    for row in rows:
        if previous is not None and previous != row.model:
            print()
        previous = row.model
        print(format_row(row, ours_for(rows, row)))
    failed = [row for row in rows if row.result.errors]
    if failed:
        print()
        print("Errors:")
        for row in failed:
            kinds = ", ".join(f"{kind} × {count}" for kind, count in row.result.errors.most_common())
            print(f"  {row.model}, {row.server}, concurrency {row.result.concurrency}: {kinds}")
    print()
    print("OpenMaaS server resident memory (VmRSS of the server pid):")
    for stage, mb, status in memory:
        print(f"  {stage:<48}" + (f"{mb:>8.0f} MB" if not math.isnan(mb) else f"  server {status}"))
    for note in notes:
        print()
        print(note)


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="Measured seconds per row (after warm-up).")
    parser.add_argument("--concurrency", default="1,8,32", help="Comma-separated concurrent connections, e.g. 1,8,32.")
    parser.add_argument("--models", default="bow,minilm", help=f"Comma-separated, from {', '.join(MODELS)}.")
    parser.add_argument("--skip-peers", action="store_true", help="Measure OpenMaaS only (native and v2 rows).")
    parser.add_argument("--skip-v2", action="store_true", help="Leave out the KServe v2 rows (REST and gRPC).")
    args = parser.parse_args()
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency needs comma-separated integers")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    return args


@dataclass
class Run:
    """One benchmark run: the OpenMaaS server, its models, and what has been measured so far."""

    args: argparse.Namespace
    root: Path
    texts: list[str]
    server: Service
    port: int
    grpc_port: int
    rows: list[Row] = field(default_factory=list)
    offline: dict[str, dict[int, OfflineRate]] = field(default_factory=dict)  # title → {texts a call: rate}
    in_flight: dict[str, dict[int, OfflineRate]] = field(default_factory=dict)  # title → {concurrency: rate}
    memory: list[tuple[str, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def record_memory(self, stage: str) -> None:
        self.memory.append((stage, rss_mb(self.server.pid), self.server.status()))

    def prepare(self, client: Client, specs: Sequence[ModelSpec]) -> list[Trained]:
        """Train through the API, load each version in the server (first predict), copy the files it loaded."""
        print("training through the API ...", flush=True)
        train(client, specs)
        self.record_memory("after training (no model loaded yet)")
        trained = []
        for spec in specs:
            client.predict(spec.registry_name, [self.texts[0]])  # the server loads the version now
            self.record_memory(f"after {spec.title} loaded (first predict)")
            version = latest_version(self.data_dir, spec.registry_name)
            directory = self.root / "models" / spec.key
            source = copy_model_files(self.data_dir, version, directory)
            fields = {key: version[key] for key in ("version", "recipe", "runtime", "labels")}
            trained.append(Trained(spec, **fields, directory=directory, source=source))
            print(f"  {spec.title}: version {version['version']}, runtime {version['runtime']}, files from {source}")
        return trained

    def measure_model(self, model: Trained) -> None:
        """Offline limit, then every server at every concurrency; peers run one at a time."""
        spec = model.spec
        model.model = get_loader(model.recipe).load(model.directory, "cpu", model.runtime)
        rates = self.offline_rates(model)
        rate = max(r.texts_per_second for r in rates.values())
        print(f"{spec.title}: offline before the servers, {describe_offline(rates)}", flush=True)
        flights = self.in_flight_rates(model)
        first_row = len(self.rows)
        for name in SERVERS:
            if name == "OpenMaaS":
                self.measure_server(
                    self.server, model, self.port, f"/v1/models/{spec.registry_name}/predict", rate, flights
                )
                continue
            if name in V2_ROWS:  # the same server and model through KServe v2, beside the native route
                if not self.args.skip_v2:
                    grpc = name == "v2 gRPC"
                    port, path = (
                        (self.grpc_port, spec.registry_name)
                        if grpc
                        else (self.port, f"/v2/models/{spec.registry_name}/infer")
                    )
                    self.measure_server(self.server, model, port, path, rate, flights, protocol=name)
                continue
            if self.args.skip_peers:
                continue
            port = free_port()
            try:
                peer = start_peer(name, model, port, self.logs)
            except RuntimeError as error:
                self.notes.append(f"{name} serving {spec.title} did not start, not measured: {error}")
                print(f"  {name}: did not start, not measured (see the end)", flush=True)
                continue
            try:
                self.measure_server(peer, model, port, "/predict", rate, flights)
            finally:
                peer.stop()
        # Measured again after the servers: this VM's speed drifts by 10-15% over minutes, and the limit is
        # the most this machine delivered, so each call size keeps its better figure.
        again = self.offline_rates(model)
        print(f"{spec.title}: offline after the servers, {describe_offline(again)}", flush=True)
        rates = {size: max(rates[size], again[size], key=lambda r: r.texts_per_second) for size in rates}
        self.offline[spec.title] = rates
        flights_again = self.in_flight_rates(model)
        flights = {n: max(flights[n], flights_again[n], key=lambda r: r.texts_per_second) for n in flights}
        self.in_flight[spec.title] = flights
        for row in self.rows[first_row:]:
            row.offline = max(r.texts_per_second for r in rates.values())
            row.in_flight = flights[row.result.concurrency].texts_per_second
        model.model = None

    def in_flight_rates(self, model: Trained) -> dict[int, OfflineRate]:
        seconds = min(self.args.duration, ADJACENT_OFFLINE_SECONDS)
        return {n: in_flight_rate(model.model, self.texts, n, seconds) for n in self.args.concurrency}

    def offline_rates(self, model: Trained) -> dict[int, OfflineRate]:
        seconds = min(self.args.duration, 5.0)
        sizes = (1, model.spec.batch, OFFLINE_CHUNK)
        return {size: offline_rate(model.model, self.texts, size, seconds) for size in sizes}

    def measure_server(
        self,
        service: Service,
        model: Trained,
        port: int,
        path: str,
        offline: float,
        flights: dict[int, OfflineRate],
        protocol: str = "native",
    ) -> None:
        """Check the server's answers against the in-process model, then load it at every concurrency."""
        name, title = (service.name if protocol == "native" else protocol), model.spec.title
        sample = self.texts[:: max(1, len(self.texts) // 20)][:20]
        url = f"{HOST}:{port}" if protocol == "v2 gRPC" else f"http://{HOST}:{port}{path}"
        try:
            difference = max_difference(url, model, sample, protocol)
        except httpx.HTTPError as error:
            self.notes.append(
                f"{name} serving {title} failed the answer check ({type(error).__name__}: {error}; server "
                f"{service.status()}), not measured. Its log (tail):\n{service.log_tail(20)}"
            )
            print(f"  {name}: failed the answer check, not measured (see the end)", flush=True)
            return
        verdict = "match" if difference < 1e-4 else "DIFFER from"
        print(f"  {name}: answers {verdict} the in-process model (max |Δp| {difference:.1e})", flush=True)
        for concurrency in self.args.concurrency:
            now = math.nan
            if service is self.server:  # this VM's speed drifts: the same model offline, just before the row
                now = offline_rate(model.model, self.texts, OFFLINE_CHUNK, ADJACENT_OFFLINE_SECONDS).texts_per_second
            result = measure(port, path, self.texts, concurrency, self.args.duration, service.pid, protocol)
            self.rows.append(Row(title, name, result, offline, now, flights[concurrency].texts_per_second))
            print("  " + format_row(self.rows[-1], ours_for(self.rows, self.rows[-1])), flush=True)
        if service is not self.server and any(r.result.errors for r in self.rows[-len(self.args.concurrency) :]):
            self.notes.append(f"{name} log, serving {title} (tail):\n{service.log_tail(20)}")


def main() -> None:
    args = parse_args()
    load_average = os.getloadavg()[0]
    torch.set_num_threads(os.cpu_count() or 1)
    texts = read_texts()
    print(f"{len(texts)} SMS texts; the load generator shares the {os.cpu_count()} CPU cores with the servers")
    with tempfile.TemporaryDirectory(prefix="openmaas-serve-bench-") as scratch, ExitStack() as stack:
        root = Path(scratch)
        (root / "logs").mkdir()
        port, grpc_port = free_port(), free_port()
        server = start_openmaas(root / "data", port, grpc_port, root / "logs")
        stack.callback(server.stop)
        run = Run(args, root, texts, server, port, grpc_port)
        run.record_memory("idle, right after start")
        try:
            client = stack.enter_context(Client(f"http://{HOST}:{port}", KEY, timeout=120.0))
            for model in run.prepare(client, [MODELS[key] for key in args.models]):
                run.measure_model(model)
            run.record_memory("after all load tests")
        except BaseException:
            print(f"OpenMaaS server {server.status()}; its log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
        if server.log_tail():
            run.notes.append(f"OpenMaaS server log, warnings and errors (tail):\n{server.log_tail(20)}")
    print_report(run.rows, run.offline, run.in_flight, run.memory, run.notes, args.duration, load_average)


if __name__ == "__main__":
    main()
