"""Serving on Ray Serve vs. the embedded server vs. plain Ray Serve, in one run: requests/s and p50.

    .venv/bin/python bench/ray_serving.py [--duration 4] [--concurrency 1,32] [--models bow,minilm] [--rows 1000]
                                          [--rounds 3]

1. Starts a Ray cluster of its own on loopback (`ray start --head`, 3 logical CPUs on the machine's cores: room
   for the peer's replica beside two of ours; its own temp dir and ports; its processes are ended by pid at the
   end) and a Postgres schema of its own (cluster mode refuses SQLite).
2. An embedded OpenMaaS server (no OPENMAAS_CLUSTER) on that database trains, through the API, `bow-mlp`
   (3 epochs) and the MiniLM `transformer-classifier` (1 epoch, head only) on the first `--rows` SMS texts, then
   is measured: the native predict route, one text a request, closed loop at each concurrency (bench/serve.py's
   load generator).
3. Plain Ray Serve serves the same files (the embedded server's model cache, ONNX export included) as the peer:
   one deployment of one replica (1 CPU) with `@serve.batch` (32, 5 ms), behind Serve's own HTTP proxy.
4. At the same time, the same OpenMaaS data (database and data directory) under a cluster-mode server: each model
   deployed on Ray Serve (1 CPU a replica); the API process batches and calls the replicas through deployment
   handles. Per round and concurrency: the peer's row, ours at 1 replica, then ours re-scaled in place to 2
   replicas through the load API (`POST /v1/models/{ref}/load {"replicas": 2}`), `--rounds` times: on a shared
   machine whose load moves over minutes, a ratio is only worth its salt between rows seconds apart. A model is
   unloaded (its Serve application deleted) after its rows.

Prints requests/s and p50 per row, and the ratios: the Ray path over the embedded path, over plain Ray Serve
and 2 replicas over 1 (each row over the row just before it, the median over rounds). Every process
shares the machine's cores with the load generator.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from ray import serve
from serve import DATA, HOST, KEY, LoadResult, Service, free_port, measure, read_texts

from openmaas import Client

POSTGRES = os.environ.get("OPENMAAS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SRC = Path(__file__).resolve().parents[1] / "src"
MODELS = {  # key -> (title, recipe, hyperparameters)
    "bow": ("bow-mlp", "bow-mlp", {"epochs": 3}),
    "minilm": ("MiniLM classifier", "transformer-classifier", {"epochs": 1}),
}


@serve.deployment
class PlainServeClassifier:
    """The peer: a version's files loaded with the recipe's own loader, batched by Serve, behind Serve's proxy."""

    def __init__(self, directory: str, recipe: str, runtime: str) -> None:
        from openmaas.recipes import get_loader

        self.model = get_loader(recipe).load(Path(directory), "cpu", runtime)
        self.labels = list(self.model.labels)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        answers = []
        for row in self.model.predict_proba(texts).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            answers.append({"label": self.labels[best], "score": row[best]})
        return answers

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse  # with Content-Length, as the load generator reads answers

        [text] = (await request.json())["inputs"]
        return JSONResponse({"predictions": [await self.predict(text)]})


@dataclass
class RayCluster:
    address: str
    temp_dir: Path

    def stop(self) -> None:
        """Every process of this cluster (each names its temp dir), by pid: `ray stop` would end others' too."""
        mine: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(str(self.temp_dir) in part for part in process.info["cmdline"] or []):
                    mine[process.pid] = process
                    mine.update((child.pid, child) for child in process.children(recursive=True))
        for process in mine.values():
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(list(mine.values()), timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()


def start_ray(env: dict[str, str]) -> RayCluster:
    temp_dir = Path(tempfile.mkdtemp(prefix="raybench-", dir="/tmp"))
    port = free_port()
    # 3 logical CPUs on the 2 cores: room for the peer's replica (1 CPU) beside the Ray path's two (1 CPU each).
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port), "--num-cpus", "3"]
    command += ["--node-ip-address", HOST, "--temp-dir", str(temp_dir), "--include-dashboard", "false"]
    command += ["--disable-usage-stats", "--object-store-memory", str(200 * 1024 * 1024)]
    for flag in (
        "--ray-client-server-port",
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ):
        command += [flag, str(free_port())]
    cluster = RayCluster(f"{HOST}:{port}", temp_dir)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        cluster.stop()
        raise RuntimeError(f"ray start failed: {result.stderr[-2000:]}")
    return cluster


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    admin = sa.create_engine(POSTGRES)
    schema = f"bench_{secrets.token_hex(6)}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop schema {schema} cascade"))
        admin.dispose()


def start_openmaas(data_dir: Path, env: dict[str, str], name: str) -> tuple[Service, int]:
    port = free_port()
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    service = Service(name, [*command, "--log-level", "warning"], data_dir.parent / f"{name}.log", env)
    return service.wait_ready(f"http://{HOST}:{port}/healthz"), port


def deploy_peer(key: str, version: dict[str, Any], data_dir: Path) -> None:
    """The peer of `key`'s version on Serve's proxy at /peer-<key>: the embedded server's model cache (ONNX export
    included), one replica of 1 CPU. max_ongoing_requests at least the batch size, as Serve's batching guide asks
    (its default, 5, caps a batch at 5 and makes the proxy back off: 7 requests/s at 32 clients in a first run)."""
    directory = data_dir / "cache" / "models" / version["artifact_sha256"]
    app = PlainServeClassifier.options(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1}).bind(
        str(directory), version["recipe"], version["runtime"]
    )
    serve.run(app, name=f"peer-{key}", route_prefix=f"/peer-{key}")


def subset(rows: int, directory: Path) -> Path:
    path = directory / "sms-subset.csv"
    with DATA.open(encoding="utf-8", newline="") as source, path.open("w", encoding="utf-8", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=["text", "label"])
        writer.writeheader()
        for index, row in enumerate(reader):
            if index >= rows:
                break
            writer.writerow({"text": row["text"], "label": row["label"]})
    return path


def row(label: str, result: LoadResult) -> str:
    errors = sum(result.errors.values())
    return (
        f"  {label:<34} c={result.concurrency:<3} {result.throughput:8.1f} req/s"
        f"   p50 {result.percentile_ms(50):7.1f} ms" + (f"   errors {dict(result.errors)}" if errors else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per row")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--models", default="bow,minilm")
    parser.add_argument("--rows", type=int, default=1000, help="SMS texts the models train on")
    parser.add_argument("--rounds", type=int, default=3, help="plain Ray Serve and Ray path rows in turn, per level")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    keys = args.models.split(",")
    texts = read_texts()
    work = Path(tempfile.mkdtemp(prefix="openmaas-ray-bench-"))
    data_dir = work / "data"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_raylet_start_wait_time_s": "120",
    }
    results: dict[tuple[str, str, int], list[LoadResult]] = {}
    cluster = start_ray(env)
    print(f"Ray cluster at {cluster.address} (3 logical CPUs); data in {work} (removed at the end)", flush=True)
    try:
        with postgres_schema() as database:
            base = {**env, "OPENMAAS_ADMIN_KEY": KEY, "OPENMAAS_DATABASE_URL": database}
            base["OPENMAAS_FOUNDATION_MODELS"] = "[]"
            # 1. embedded: train, then measure
            server, port = start_openmaas(data_dir, base, "embedded")
            versions: dict[str, dict[str, Any]] = {}
            try:
                with Client(f"http://{HOST}:{port}", KEY) as client:
                    dataset = client.upload_dataset(subset(args.rows, work), name="sms")["id"]
                    for key in keys:
                        title, recipe, hyperparameters = MODELS[key]
                        job = client.create_job(dataset, f"bench-{key}", recipe=recipe, hyperparameters=hyperparameters)
                        final = client.wait_for_job(job["id"], timeout=1800, poll=0.5)
                        if final["status"] != "succeeded":
                            raise RuntimeError(f"training {title} {final['status']}: {final}")
                        client.predict(f"bench-{key}", ["warm-up"])
                        versions[key] = client.get_model(f"bench-{key}")["versions"][0]
                        print(f"  trained {title}", flush=True)
                for key in keys:
                    for level in levels:
                        path = f"/v1/models/bench-{key}/predict"
                        result = measure(port, path, texts, level, args.duration, server.pid)
                        results[(key, "embedded", level)] = [result]
                        print(row(f"{MODELS[key][0]}: embedded", result), flush=True)
            finally:
                server.stop()
            # 2. plain Ray Serve and the Ray path at once, their rows in turn: each ratio from adjacent rows
            import ray

            ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(SRC)}})
            peer_port = free_port()
            serve.start(http_options={"host": HOST, "port": peer_port})
            ray_env = {**base, "OPENMAAS_CLUSTER": cluster.address, "OPENMAAS_RAY_CPUS_PER_REPLICA": "1"}
            # The deadline covers the replica's start too: MiniLM's took over 30 s on the loaded machine.
            ray_env["OPENMAAS_RAY_PLACEMENT_TIMEOUT_S"] = "300"
            server, port = start_openmaas(data_dir, ray_env, "ray")
            one, two = "ray path, 1 replica", "ray path, 2 replicas"
            try:
                with Client(f"http://{HOST}:{port}", KEY, timeout=600) as client:
                    for key in keys:
                        deploy_peer(key, versions[key], data_dir)
                        for _ in range(args.rounds):
                            for level in levels:
                                # The peer, then ours at 1 replica, then re-scaled in place to 2 (the load API):
                                # each ratio is between rows seconds apart.
                                for name, replicas in (("plain Ray Serve", 0), (one, 1), (two, 2)):
                                    if replicas:
                                        client.load_model(f"bench-{key}", replicas=replicas)
                                        client.predict(f"bench-{key}", ["warm-up"])
                                    at = port if replicas else peer_port
                                    path = f"/v1/models/bench-{key}/predict" if replicas else f"/peer-{key}"
                                    pgid = server.pid if replicas else os.getpgid(0)
                                    result = measure(at, path, texts, level, args.duration, pgid)
                                    results.setdefault((key, name, level), []).append(result)
                                    print(row(f"{MODELS[key][0]}: {name}", result), flush=True)
                        serve.delete(f"peer-{key}")
                        client.unload_model(f"bench-{key}")  # its Serve application goes: wait for it
                        deadline = time.monotonic() + 120
                        while any(d["name"].startswith("om-") for d in client.cluster()["deployments"]):
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"bench-{key}'s Serve application is still there")
                            time.sleep(0.5)
            finally:
                server.stop()
            serve.shutdown()
            ray.shutdown()
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print("\nRatios (requests/s; ray/plain Ray Serve and 2 replicas/1: the median over rounds of each row over the")
    print("row just before it, seconds apart; ray/embedded: medians of the rows' figures, minutes apart):")
    for key in keys:
        for level in levels:

            def rows(label: str, key: str = key, level: int = level) -> list[float]:
                return [r.throughput for r in results.get((key, label, level), [])]

            def over(label: str, base: str) -> float:
                pairs = [a / b for a, b in zip(rows(label), rows(base), strict=False) if b]
                return statistics.median(pairs) if pairs else float("nan")

            embedded = statistics.median(rows("embedded")) if rows("embedded") else float("nan")
            print(
                f"  {MODELS[key][0]:<18} c={level:<3} ray/embedded {statistics.median(rows(one)) / embedded:5.2f}   "
                f"ray/plain Ray Serve {over(one, 'plain Ray Serve'):5.2f} (2 replicas "
                f"{over(two, 'plain Ray Serve'):5.2f})   2 replicas/1 {over(two, one):5.2f}"
            )


if __name__ == "__main__":
    main()
