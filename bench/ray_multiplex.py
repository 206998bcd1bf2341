"""Ray Serve: a deployment per version vs. one multiplexed deployment holding several versions, in one run.

    .venv/bin/python bench/ray_multiplex.py [--models bow,minilm] [--versions bow=6,minilm=3] [--duration 4]
                                            [--multiplexed-replicas 1,2] [--rounds 2]

About 6 minutes on the shared 2-core machine (bow-mlp about 3, MiniLM about 3).

OpenMaaS deploys each loaded version as a Serve application of its own (runtime/ray_serve.py); Serve's
alternative is one deployment whose replicas load versions by model id (`@serve.multiplexed`, the id from
`serve.get_multiplexed_model_id()`, the caller's `handle.options(multiplexed_model_id=...)`). This measures both:

1. Starts a Ray cluster of its own on loopback (bench/ray_serving.py's `start_ray`: 3 logical CPUs, its own
   temp dir and ports, its processes ended by pid at the end).
2. Builds K+1 versions per model in this process with the recipe's own plan and export (bow-mlp: 20 Adam steps
   on its own 300 SMS rows, so each has its own vocabulary; MiniLM `transformer-classifier`: one frozen-encoder
   plan, the head trained a few steps more before each export), each in its own directory, each loaded once
   here with `get_loader(recipe).load(directory, "cpu", runtime)` (for MiniLM that writes its ONNX export, as
   the server's cache holds it).
3. **Per version**: K Serve applications of 1 replica (0.25 CPU) each, submitted at once (`serve._run`,
   `_blocking=False`, as `ServeLoader` does); **multiplexed**: one application whose replicas (0.25 CPU each)
   load versions on demand, `max_num_models_per_replica` K+1 (every version fits: nothing is evicted). Both
   answer one text a call (a batch of 1, the forward pass on the replica's event loop; no `@serve.batch` on
   either side: the same work per call on both), `max_ongoing_requests` 32.
   For each: **cold**, seconds from submitting the application(s) until all K versions have answered once;
   **new version**, seconds until the (K+1)-th version answers once with the K warm (per version: a new
   application, i.e. a new replica process; multiplexed: a load inside a running replica); the **memory** of
   the replica processes (the raylet's children titled `ray::ServeReplica:<app>:...`) with the K loaded,
   RSS (shared library pages counted in every process) and PSS (shared pages split between the processes
   that map them: the machine's real cost); **requests/s** through deployment handles (no HTTP) from 32
   concurrent callers in this process, round-robin over the K versions and all on one version, the two
   designs' rows in turn (`--rounds`), with the CPU time a request of this process (callers and handles)
   and of the replica processes.
   Also Ray's own per-actor cost: a bare Ray actor (no imports) and an idle replica (torch and the recipe
   imported, no version loaded), RSS and PSS.

Prints a table per model and the ratios multiplexed / per version (throughput: the median over rounds of each
row over the per-version row just before it). Every process shares the machine's cores with the callers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import ray
from ray import serve
from ray_serving import SRC, start_ray
from serve import DATA, HOST, free_port

CALLERS = 32
CPUS_PER_REPLICA = 0.25
ROWS_PER_VERSION = 300
MODELS = {  # key -> (title, recipe, runtime)
    "bow": ("bow-mlp", "bow-mlp", "torch"),
    "minilm": ("MiniLM classifier", "transformer-classifier", "onnx"),
}
DEFAULT_VERSIONS = {"bow": 6, "minilm": 3}
TEMP_DIR: list[str] = []  # the cluster's temp dir, once started


def warm_imports(recipe: str) -> None:
    """What any replica of the recipe imports before its first version: the idle replica's memory includes it."""
    from openmaas.recipes import get_loader

    get_loader(recipe)


@serve.deployment
class PerVersion:
    """One version, loaded at start: what `ModelReplica` does for a classifier, less the artifact store."""

    def __init__(self, directory: str, recipe: str, runtime: str) -> None:
        from openmaas.recipes import get_loader

        self.model = get_loader(recipe).load(Path(directory), "cpu", runtime)

    async def predict(self, text: str) -> float:
        return float(self.model.predict_proba([text])[0].max())


def multiplexed_deployment(per_replica: int) -> Any:
    """The multiplexed deployment: `max_num_models_per_replica` is fixed where the method is decorated (Serve finds
    multiplexed methods on the class at replica start), so the class is made for the run's K."""

    class Multiplexed:
        """Versions loaded by model id on first use, at most `per_replica` of them (least recently used out)."""

        def __init__(self, directories: dict[str, str], recipe: str, runtime: str) -> None:
            warm_imports(recipe)
            self.directories = directories
            self.recipe = recipe
            self.runtime = runtime

        @serve.multiplexed(max_num_models_per_replica=per_replica)
        async def get_model(self, model_id: str) -> Any:
            from openmaas.recipes import get_loader

            return get_loader(self.recipe).load(Path(self.directories[model_id]), "cpu", self.runtime)

        async def predict(self, text: str) -> float:
            model = await self.get_model(serve.get_multiplexed_model_id())
            return float(model.predict_proba([text])[0].max())

    return serve.deployment(Multiplexed)


@ray.remote(num_cpus=0)
class BareActor:
    def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------- versions


def read_rows() -> list[tuple[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        return [(row["text"].strip(), row["label"]) for row in csv.DictReader(handle) if row["text"].strip()]


def train_steps(plan: Any, steps: int, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for batch in plan.train_batches(generator):
            result = plan.step(batch)
            plan.optimizer.zero_grad()
            result.loss.backward()
            plan.optimizer.step()
            done += 1
            if done >= steps:
                break


def build_versions(key: str, count: int, rows: list[tuple[str, str]], root: Path) -> list[Path]:
    """`count` versions of `key`, each exported to its own directory and loaded once with the recipe's loader."""
    from openmaas.recipes import get_loader, get_recipe
    from openmaas.recipes.base import Examples

    _, recipe_name, runtime = MODELS[key]
    recipe: Any = get_recipe(recipe_name)
    labels = sorted({label for _, label in rows})

    def examples(part: list[tuple[str, str]]) -> Examples:
        return Examples([t for t, _ in part], [labels.index(label) for _, label in part])

    directories = []
    plan = None
    for index in range(count):
        if key == "bow" or plan is None:  # bow: a plan (and a vocabulary) per version; MiniLM: one frozen encoder
            part = rows[index * ROWS_PER_VERSION : (index + 1) * ROWS_PER_VERSION]
            hp = recipe.hyperparameters(batch_size=32, seed=index)
            plan = recipe.plan(examples(part[:-30]), examples(part[-30:]), labels, hp, "cpu")
        train_steps(plan, 20 if key == "bow" else 5, index)
        directory = root / f"{key}-v{index}"
        directory.mkdir(parents=True)
        plan.export(directory)
        get_loader(recipe_name).load(directory, "cpu", runtime)  # checks it loads; MiniLM: writes its ONNX file
        directories.append(directory)
    return directories


# ---------------------------------------------------------------- measuring


@dataclass
class Memory:
    processes: int
    rss_mb: float
    pss_mb: float


def memory(pids: list[int]) -> Memory:
    rss = pss = 0.0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss / 2**20
        pss += info.pss / 2**20
    return Memory(len(pids), rss, pss)


def replica_pids(app: str) -> list[int]:
    """The pids of the replica processes of one Serve application: the raylet's children whose title Ray set to
    `ray::ServeReplica:<app>:<deployment>` (Ray's state API needs the dashboard, which this cluster goes without)."""
    pids = []
    for raylet in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = raylet.info["cmdline"] or []
            if not (cmdline and cmdline[0].endswith("raylet") and any(TEMP_DIR[0] in part for part in cmdline)):
                continue
            for child in raylet.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if " ".join(child.cmdline()).startswith(f"ray::ServeReplica:{app}:"):
                        pids.append(child.pid)
    return pids


def wait_running(apps: list[str], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        statuses = serve.status().applications
        if all(app in statuses and statuses[app].status == "RUNNING" for app in apps):
            return
        failed = [a for a in apps if a in statuses and statuses[a].status == "DEPLOY_FAILED"]
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"not running: {[(a, statuses.get(a)) for a in apps]}")
        time.sleep(0.1)


def wait_replicas(app: str, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pids := replica_pids(app)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app}: {len(pids)} replicas, {count} expected")
        time.sleep(0.2)
    return pids


Caller = Callable[..., Any]  # (version index, text) -> a DeploymentResponse


async def answer_all(call: Caller, versions: range) -> None:
    await asyncio.gather(*(call(v) for v in versions))


async def throughput(call: Caller, texts: list[str], versions: list[int], seconds: float) -> tuple[int, float]:
    """(answers, seconds) of CALLERS closed-loop callers for `seconds`; caller i calls versions[i % len]."""
    done = 0
    stop = time.monotonic() + seconds

    async def caller(index: int) -> None:
        nonlocal done
        version = versions[index % len(versions)]
        position = index
        while time.monotonic() < stop:
            await call(version, texts[position % len(texts)])
            done += 1
            position += CALLERS

    warm = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return done, time.monotonic() - warm


@dataclass
class Design:
    name: str
    replicas: int
    cold_s: float = float("nan")
    new_version_s: float = float("nan")
    memory: Memory | None = None
    rates: dict[str, list[float]] = field(default_factory=dict)


class PerVersionSide:
    def __init__(self, key: str, directories: list[Path]) -> None:
        self.key = key
        self.directories = directories
        self.handles: dict[int, Any] = {}

    def app(self, index: int) -> str:
        return f"{self.key}-v{index}"

    def submit(self, index: int) -> None:
        _, recipe, runtime = MODELS[self.key]
        options = {"max_ongoing_requests": CALLERS, "ray_actor_options": {"num_cpus": CPUS_PER_REPLICA}}
        app = PerVersion.options(**options).bind(str(self.directories[index]), recipe, runtime)
        serve._run(app, name=self.app(index), route_prefix=None, _blocking=False)

    def call(self, index: int, text: str = "warm-up") -> Any:
        if index not in self.handles:
            self.handles[index] = serve.get_app_handle(self.app(index))
        return self.handles[index].predict.remote(text)

    def pids(self, count: int) -> list[int]:
        return [pid for index in range(count) for pid in replica_pids(self.app(index))]

    def delete(self) -> None:
        for index in range(len(self.directories)):
            serve.delete(self.app(index), _blocking=False)


class MultiplexedSide:
    def __init__(self, key: str, directories: list[Path], replicas: int) -> None:
        self.key = key
        self.name = f"{key}-multiplexed-{replicas}"
        self.directories = directories
        self.replicas = replicas
        self.handle: Any = None
        self.options: dict[int, Any] = {}

    def submit(self) -> None:
        _, recipe, runtime = MODELS[self.key]
        options = {"max_ongoing_requests": CALLERS, "ray_actor_options": {"num_cpus": CPUS_PER_REPLICA}}
        directories = {f"v{i}": str(d) for i, d in enumerate(self.directories)}
        deployment = multiplexed_deployment(len(self.directories)).options(num_replicas=self.replicas, **options)
        app = deployment.bind(directories, recipe, runtime)
        serve._run(app, name=self.name, route_prefix=None, _blocking=False)

    def call(self, index: int, text: str = "warm-up") -> Any:
        if self.handle is None:
            self.handle = serve.get_app_handle(self.name)
        if index not in self.options:
            self.options[index] = self.handle.predict.options(multiplexed_model_id=f"v{index}")
        return self.options[index].remote(text)

    def delete(self) -> None:
        serve.delete(self.name)


def measure_per_version(side: PerVersionSide, count: int, design: Design) -> None:
    started = time.monotonic()
    for index in range(count):
        side.submit(index)
    wait_running([side.app(i) for i in range(count)])
    asyncio.run(answer_all(side.call, range(count)))
    design.cold_s = time.monotonic() - started
    design.memory = memory(side.pids(count))
    started = time.monotonic()
    side.submit(count)
    wait_running([side.app(count)])
    asyncio.run(answer_all(side.call, range(count, count + 1)))
    design.new_version_s = time.monotonic() - started


def measure_multiplexed(side: MultiplexedSide, count: int, design: Design) -> Memory:
    """Returns the memory of one idle replica (no version loaded yet)."""
    started = time.monotonic()
    side.submit()
    wait_running([side.name])
    pids = wait_replicas(side.name, side.replicas)
    idle = memory(pids[:1])
    asyncio.run(answer_all(side.call, range(count)))
    design.cold_s = time.monotonic() - started
    design.memory = memory(replica_pids(side.name))
    started = time.monotonic()
    asyncio.run(answer_all(side.call, range(count, count + 1)))
    design.new_version_s = time.monotonic() - started
    return idle


@dataclass
class Rate:
    per_second: float
    caller_ms: float  # CPU time of this process (the 32 callers and the handles' routing) per answer
    replicas_ms: float  # CPU time of the replica processes per answer


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def rate(call: Callable[..., Any], pids: list[int], texts: list[str], versions: list[int], seconds: float) -> Rate:
    async def run() -> Rate:
        await throughput(call, texts, versions, 0.5)  # warm-up: every caller's handle and route in place
        caller, replicas = cpu_seconds([os.getpid()]), cpu_seconds(pids)
        answers, elapsed = await throughput(call, texts, versions, seconds)
        per_second = answers / elapsed
        caller_ms = (cpu_seconds([os.getpid()]) - caller) / answers * 1000
        return Rate(per_second, caller_ms, (cpu_seconds(pids) - replicas) / answers * 1000)

    return asyncio.run(run())


# ---------------------------------------------------------------- report


def describe(found: Rate) -> str:
    return (
        f"{found.per_second:5.0f} req/s (CPU a request: callers {found.caller_ms:4.2f} ms,"
        f" replicas {found.replicas_ms:4.2f} ms)"
    )


def print_table(title: str, count: int, designs: list[Design], bare: Memory, idle: Memory) -> None:
    print(f"\n{title}: {count} versions (+1 for 'new version'); replicas of {CPUS_PER_REPLICA} CPU each")
    print(
        f"  {'design':<26} {'replicas':>8} {'RSS MB':>8} {'PSS MB':>8} {'cold s':>7} {'new ver s':>9}"
        f" {'rr req/s':>9} {'one req/s':>9}"
    )
    for d in designs:
        assert d.memory is not None
        rr = statistics.median(d.rates["round-robin"])
        one = statistics.median(d.rates["one version"])
        print(
            f"  {d.name:<26} {d.memory.processes:>8} {d.memory.rss_mb:8.0f} {d.memory.pss_mb:8.0f} {d.cold_s:7.1f}"
            f" {d.new_version_s:9.2f} {rr:9.0f} {one:9.0f}"
        )
    print(f"  Ray's per-actor cost: a bare Ray actor RSS {bare.rss_mb:.0f} MB, PSS {bare.pss_mb:.0f} MB;")
    print(f"  an idle replica (torch + recipe imported, no version) RSS {idle.rss_mb:.0f} MB, PSS {idle.pss_mb:.0f} MB")
    base = designs[0]
    assert base.memory is not None
    print("  ratios multiplexed / per version (requests/s: median over rounds of adjacent rows):")
    for d in designs[1:]:
        assert d.memory is not None
        ratios = {
            label: statistics.median(
                a / b for a, b in zip(d.rates[label], d.rates[f"{label} base {d.name}"], strict=True)
            )
            for label in ("round-robin", "one version")
        }
        print(
            f"    {d.name:<24} RSS {d.memory.rss_mb / base.memory.rss_mb:5.2f}  PSS"
            f" {d.memory.pss_mb / base.memory.pss_mb:5.2f}  cold {d.cold_s / base.cold_s:5.2f}"
            f"  new version {d.new_version_s / base.new_version_s:5.3f}  round-robin {ratios['round-robin']:5.2f}"
            f"  one version {ratios['one version']:5.2f}"
        )


def run_model(key: str, count: int, rows: list[tuple[str, str]], work: Path, args: argparse.Namespace) -> None:
    title = MODELS[key][0]
    started = time.monotonic()
    directories = build_versions(key, count + 1, rows, work / key)
    print(f"  built {count + 1} {title} versions in {time.monotonic() - started:.0f} s", flush=True)
    texts = [text for text, _ in rows]
    bare_actor = BareActor.remote()  # type: ignore[attr-defined]
    bare = memory([ray.get(bare_actor.pid.remote())])
    ray.kill(bare_actor)

    per_version = PerVersionSide(key, directories)
    base = Design("per version", count)
    measure_per_version(per_version, count, base)
    print(f"  per version: cold {base.cold_s:.1f} s, new version {base.new_version_s:.2f} s", flush=True)
    designs = [base]
    idle = Memory(0, float("nan"), float("nan"))
    for replicas in args.multiplexed_replicas:
        side = MultiplexedSide(key, directories, replicas)
        design = Design(f"multiplexed, {replicas} replica{'s' if replicas > 1 else ''}", replicas)
        found = measure_multiplexed(side, count, design)
        if replicas == 1:
            idle = found
        print(f"  {design.name}: cold {design.cold_s:.1f} s, new version {design.new_version_s:.2f} s", flush=True)
        for _ in range(args.rounds):
            for label, versions in (("round-robin", list(range(count))), ("one version", [0])):
                # The per-version row, then the multiplexed one right after it: a ratio between adjacent rows.
                ours = rate(per_version.call, per_version.pids(count + 1), texts, versions, args.duration)
                theirs = rate(side.call, replica_pids(side.name), texts, versions, args.duration)
                base.rates.setdefault(label, []).append(ours.per_second)
                design.rates.setdefault(label, []).append(theirs.per_second)
                design.rates.setdefault(f"{label} base {design.name}", []).append(ours.per_second)
                print(f"    {label:<12} per version {describe(ours)}   {design.name} {describe(theirs)}", flush=True)
        side.delete()
        designs.append(design)
    per_version.delete()
    print_table(title, count, designs, bare, idle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="bow,minilm", help="bow, minilm or both")
    parser.add_argument("--versions", default="bow=6,minilm=3", help="K per model")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per throughput row")
    parser.add_argument("--multiplexed-replicas", default="1,2", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--rounds", type=int, default=2, help="per-version and multiplexed rows in turn")
    args = parser.parse_args()
    counts = {**DEFAULT_VERSIONS, **{k: int(v) for k, v in (p.split("=") for p in args.versions.split(","))}}
    rows = read_rows()
    work = Path(tempfile.mkdtemp(prefix="openmaas-multiplex-bench-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_raylet_start_wait_time_s": "120",
    }
    cluster = start_ray(env)
    TEMP_DIR.append(str(cluster.temp_dir))
    print(f"Ray cluster at {cluster.address} (3 logical CPUs); versions in {work} (removed at the end)", flush=True)
    try:
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(SRC)}})
        serve.start(http_options={"host": HOST, "port": free_port()})
        for key in args.models.split(","):
            run_model(key, counts[key], rows, work, args)
        serve.shutdown()
        ray.shutdown()
    except BaseException:
        # Printed here: once the cluster is stopped, Ray's exception hook would wait a minute for its GCS instead.
        traceback.print_exc()
        sys.exit(1)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with contextlib.suppress(Exception):
        print(f"python {sys.version.split()[0]}, ray {ray.__version__}")


if __name__ == "__main__":
    main()
