"""Image models: images/s served over HTTP against the offline limit of the same model, and the training loop's
images/s against a plain PyTorch loop, for `image-cnn` and the EfficientNet-Lite0 classifier, in one run.

    .venv/bin/python bench/images.py [--duration 4] [--images 200] [--epochs 2] [--models cnn,effnet]
                                      [--concurrency 1,32] [--effnet-images 64] [--rounds 2] [--train-base]

Serving:
1. Starts a real OpenMaaS server on loopback (admin key, temporary data dir), uploads scikit-learn's digits
   (`--images` of them, 8x8 PNGs in class folders) as an image dataset and trains, through the API, `image-cnn`
   and `image-classifier` (a head on the frozen EfficientNet-Lite0).
2. Offline limit: the version's files (its blobs, checked against its manifest) loaded in this process with the
   recipe's own loader; images/s of `predict_proba` on decoded images, 1 a call and the loader's preferred
   batch (what the server's batch queue runs), with torch's default intra-op threads and with one (on a busy
   machine one can be several times faster), each measured before and again after the HTTP rows (the
   machine's speed drifts; the better figure counts); the limit is the best of them. No HTTP, no JSON, no PNG
   decoding.
3. Served: closed-loop clients (httpx, one connection each) at each concurrency for `--duration` seconds after
   a warm-up, each request one base64 PNG in JSON (`{"inputs": [{"image": ...}]}`), as a client sends it;
   a non-200 or an answer without a prediction counts as an error.
Training:
4. The same digits and model, in this process: our recipe's plan through `training.loop.run` (the loop a job
   runs, events and stopping rules included) against a minimal hand loop (permute, slice, forward, loss,
   backward, Adam step) over the same preprocessed tensors, batch size and epochs, interleaved `--rounds` times
   (the best of each kept). For `image-cnn` both run without augmentation (crop_padding 0), the hand loop having
   none; our loop with the default crop is printed too. For the frozen classifier the comparison is end to end
   on `--effnet-images` digits (weights loaded, features once, then the head's epochs: the loop itself is a
   linear layer); with `--train-base` also the whole network's fine-tuning loop (slow on a CPU).

The client shares the machine's cores with the server it measures: on a busy 2-core machine a served/offline
ratio is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from torch import nn

from openmaas import Client
from openmaas.recipes import get_loader, get_recipe
from openmaas.recipes.base import ImageExamples
from openmaas.recipes.efficientnet_lite import load_pretrained
from openmaas.recipes.image_classifier import Classifier, scaled, to_batch
from openmaas.recipes.image_cnn import Preprocessing, SmallCnn
from openmaas.storage.artifacts import sha256_file
from openmaas.storage.artifacts.local import LocalArtifactStore
from openmaas.training import loop

KEY = "om-bench-key-0000000000000000-000000"  # 32 characters at least: a shorter admin key is refused
HOST = "127.0.0.1"
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    recipe: str
    hyperparameters: dict[str, Any]

    @property
    def registry_name(self) -> str:
        return f"bench-{self.key}"


MODELS = {
    "cnn": ModelSpec("cnn", "image-cnn", "image-cnn", {"image_size": 32, "channels": 16}),
    "effnet": ModelSpec("effnet", "EfficientNet-Lite0 head", "image-classifier", {"train_base": False}),
}


# ---------------------------------------------------------------- data and server


def digits(count: int) -> tuple[list[np.ndarray], list[int]]:
    """scikit-learn's handwritten digits as RGB uint8 (8, 8, 3) images, and their targets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    grey = (data.images[:count] * (255 / 16)).round().astype(np.uint8)
    return [np.repeat(image[:, :, None], 3, axis=2) for image in grey], [int(t) for t in data.target[:count]]


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_archive(images: Sequence[np.ndarray], targets: Sequence[int], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            archive.writestr(f"digits/{target}/{i:04d}.png", png(image))
    return path


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPENMAAS_ADMIN_KEY": KEY, "OPENMAAS_JOB_POLL_SECONDS": "0.2"}
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with suppress(httpx.TransportError):
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return process
        time.sleep(0.2)
    stop(process)
    raise RuntimeError("the server did not start in 180 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def train_on_server(client: Client, archive: Path, specs: Sequence[ModelSpec], epochs: int) -> dict[str, float]:
    """Train each model through the API; returns each job's own training rate (images/s, from its metrics)."""
    dataset = client.upload_dataset(archive, name="digits", kind="image")
    rates = {}
    for spec in specs:
        hp = {**spec.hyperparameters, "epochs": epochs, "validation_split": 0.2}
        job = client.create_job(dataset["id"], spec.registry_name, recipe=spec.recipe, hyperparameters=hp)
        began = time.perf_counter()
        final = client.wait_for_job(job["id"], timeout=1800, poll=0.5)
        if final["status"] != "succeeded":
            raise RuntimeError(f"training {spec.title} {final['status']}: {final.get('error') or final}")
        metrics = final["metrics"]
        rates[spec.key] = float(metrics.get("samples_per_second") or 0.0)
        print(
            f"  trained {spec.title:<24} val accuracy {metrics['val_accuracy']:.3f} "
            f"(job wall {time.perf_counter() - began:.0f} s)",
            flush=True,
        )
    return rates


def load_version(data_dir: Path, spec: ModelSpec, scratch: Path) -> Any:
    """The newest version's files, from the server's blobs (checked against the manifest), loaded here."""
    with closing(sqlite3.connect(f"file:{data_dir / 'openmaas.db'}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT v.files FROM model_versions v JOIN registered_models m ON m.id = v.model_id WHERE m.name = ? "
            "ORDER BY v.version DESC LIMIT 1",
            (spec.registry_name,),
        ).fetchone()
    files: dict[str, str] = json.loads(row[0])
    directory = LocalArtifactStore(data_dir / "artifacts").materialize(files, scratch / spec.key)
    for name, sha256 in files.items():
        if sha256_file(directory / name) != sha256:
            raise RuntimeError(f"{directory / name} does not match the version's manifest")
    return get_loader(spec.recipe).load(directory, "cpu")


# ---------------------------------------------------------------- serving


def offline_rate(model: Any, images: list[np.ndarray], batch: int, seconds: float) -> float:
    """Images/s of `predict_proba` on consecutive calls of `batch` images."""
    model.predict_proba(images[:batch])  # warm-up
    done, position, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = images[position : position + batch]
        model.predict_proba(chunk)
        done += len(chunk)
        position = (position + batch) % max(len(images) - batch, 1)
    return done / (time.perf_counter() - started)


def offline_rates(model: Any, images: list[np.ndarray], seconds: float) -> dict[str, float]:
    """The offline rate at 1 image a call and at the loader's preferred batch (what the server's queue runs), each
    with torch's default intra-op threads and with one: on a machine whose cores other processes hold, two
    threads that wait for each other at every operator can be several times slower than one."""
    default = torch.get_num_threads()
    sizes = (1, int(getattr(model, "preferred_batch_size", 32)))
    rates = {}
    try:
        for threads in sorted({1, default}):
            torch.set_num_threads(threads)
            for size in sizes:
                rates[f"{size}/call, {threads} thr"] = offline_rate(model, images, size, seconds)
    finally:
        torch.set_num_threads(default)
    return rates


async def served_rate(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[float, int]:
    """Closed-loop clients, one request (one image) in flight each: (images/s answered 200, errors). The clock
    starts once every client is up: building 32 clients took 0.7 s of CPU (a TLS context each, now skipped on
    plain HTTP), which on a loaded machine ran past the window, and c=32 counted only the requests in flight."""
    counts = {"ok": 0, "errors": 0}
    measuring, started = asyncio.Event(), asyncio.Event()
    up = [0]
    stop_at = [float("inf")]  # set by the clock when the window opens

    async def client(index: int) -> None:
        limits = httpx.Limits(max_connections=1)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers, verify=False) as http:
            up[0] += 1
            if up[0] == concurrency:
                started.set()
            position = index
            while time.perf_counter() < stop_at[0]:
                try:
                    answer = await http.post(url, content=bodies[position % len(bodies)])
                    ok = answer.status_code == 200 and bool(answer.json().get("predictions"))
                except httpx.HTTPError:
                    ok = False
                if measuring.is_set():
                    counts["ok" if ok else "errors"] += 1
                position += concurrency

    async def clock() -> float:
        await started.wait()
        await asyncio.sleep(WARMUP_SECONDS)
        measuring.set()
        began = time.perf_counter()
        stop_at[0] = began + seconds
        await asyncio.sleep(seconds)
        return time.perf_counter() - began

    results = await asyncio.gather(clock(), *(client(i) for i in range(concurrency)))
    # Requests in flight when the clock stops finish after it; they count, and the time they took is short
    # against `seconds` (one request's latency).
    elapsed = max(float(results[0]), time.perf_counter() - stop_at[0] + seconds)
    if counts["ok"] + counts["errors"] < concurrency:
        raise RuntimeError(f"{counts} in a {seconds:g} s window at c={concurrency}: too few to be a rate")
    return counts["ok"] / elapsed, counts["errors"]


# ---------------------------------------------------------------- training


def plain_loop(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    epochs: int,
    learning_rate: float,
    seed: int,
) -> float:
    """The textbook loop; returns images/s over the epochs."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(targets))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(prepare(inputs[rows])), targets[rows])
            loss.backward()
            optimizer.step()
    return len(targets) * epochs / (time.perf_counter() - started)


def our_loop(recipe: str, train: ImageExamples, hp: dict[str, Any]) -> tuple[float, float, Any]:
    """Our recipe's plan through the job's training loop: (loop images/s, plan + loop wall seconds, the plan)."""
    parsed = get_recipe(recipe).hyperparameters(**hp)
    loop.seed_everything(parsed.seed)
    began = time.perf_counter()
    empty = ImageExamples([], [])
    plan = get_recipe(recipe).plan(train, empty, [str(d) for d in range(10)], parsed, "cpu")
    result = loop.run(plan, parsed, emit=lambda kind, data: None, should_stop=lambda: False)
    return result.rate, time.perf_counter() - began, plan


def best_of(rounds: int, *measures: Callable[[], float]) -> list[float]:
    """Each measure run `rounds` times, interleaved (a, b, a, b: the machine's speed drifts), its best kept."""
    best = [0.0] * len(measures)
    for _ in range(rounds):
        for index, measure in enumerate(measures):
            best[index] = max(best[index], measure())
    return best


def bench_training(images: list[np.ndarray], targets: list[int], args: argparse.Namespace, keys: set[str]) -> list[str]:
    lines = []
    epochs = args.epochs
    common = {"epochs": epochs, "validation_split": 0.0, "seed": 0, "batch_size": 32, "learning_rate": 0.001}
    train = ImageExamples(images, targets)
    target_tensor = torch.tensor(targets, dtype=torch.long)
    if "cnn" in keys:
        hp = {**common, "image_size": 32, "channels": 16, "crop_padding": 0, "horizontal_flip": False}
        pre = Preprocessing.fit(Preprocessing(32, [0.0] * 3, [1.0] * 3).stack(images), 32)
        stacked = pre.stack(images)

        def plain() -> float:
            torch.manual_seed(0)
            return plain_loop(SmallCnn(16, 10), stacked, target_tensor, pre.normalise, 32, epochs, 0.001, 0)

        ours, ours_crop, hand = best_of(
            args.rounds,
            lambda: our_loop("image-cnn", train, hp)[0],
            lambda: our_loop("image-cnn", train, {**hp, "crop_padding": 2})[0],
            plain,
        )
        lines.append(f"  image-cnn loop, no augmentation        {ours:8.1f}  {hand:8.1f}  {ours / hand:6.2f}")
        lines.append(f"  image-cnn loop, crop_padding 2 (ours)  {ours_crop:8.1f}  {hand:8.1f}  {ours_crop / hand:6.2f}")
    if "effnet" in keys:
        few, few_targets = images[: args.effnet_images], target_tensor[: args.effnet_images]
        hp = {**common, "train_base": False}

        def ours_head() -> float:
            _, wall, _ = our_loop("image-classifier", ImageExamples(few, targets[: len(few)]), hp)
            return len(few) * epochs / wall

        def plain_head() -> float:
            began = time.perf_counter()
            backbone = load_pretrained().eval().requires_grad_(False)
            with torch.inference_mode():
                features = torch.cat(
                    [backbone.features(scaled(to_batch(few[i : i + 32], 224))) for i in range(0, len(few), 32)]
                )
            plain_loop(nn.Linear(features.shape[1], 10), features, few_targets, lambda x: x, 32, epochs, 0.001, 0)
            return len(few) * epochs / (time.perf_counter() - began)

        ours, hand = best_of(args.rounds, ours_head, plain_head)
        lines.append(f"  EfficientNet head (features + epochs)  {ours:8.1f}  {hand:8.1f}  {ours / hand:6.2f}")
        if args.train_base:
            base_hp = {**common, "train_base": True, "batch_size": 16}

            def plain_full() -> float:
                model = Classifier(load_pretrained(), 10)
                return plain_loop(model, to_batch(few, 224), few_targets, scaled, 16, epochs, 0.001, 0)

            ours, hand = best_of(
                args.rounds,
                lambda: our_loop("image-classifier", ImageExamples(few, targets[: len(few)]), base_hp)[0],
                plain_full,
            )
            lines.append(f"  EfficientNet fine-tune (train_base)    {ours:8.1f}  {hand:8.1f}  {ours / hand:6.2f}")
    return lines


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per served or offline figure")
    parser.add_argument("--images", type=int, default=200, help="digits to train and serve (1797 at most)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every training run")
    parser.add_argument("--models", default="cnn,effnet", help="cnn, effnet, or both")
    parser.add_argument("--concurrency", default="1,32", help="served concurrencies")
    parser.add_argument("--effnet-images", type=int, default=64, help="digits of the EfficientNet training runs")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each training figure (best kept)")
    parser.add_argument("--train-base", action="store_true", help="also the full EfficientNet fine-tuning loop")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    specs = [MODELS[key] for key in args.models.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    images, targets = digits(args.images)
    print(f"{len(images)} digits (8x8 PNGs), {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    if not args.skip_serving:
        with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
            root = Path(tmp)
            port = free_port()
            server = start_server(root / "data", port, root / "server.log")
            try:
                client = Client(f"http://{HOST}:{port}", api_key=KEY)
                job_rates = train_on_server(client, digits_archive(images, targets, root / "d.zip"), specs, args.epochs)
                bodies = [
                    f'{{"inputs": [{{"image": "{base64.b64encode(png(image)).decode()}"}}]}}'.encode()
                    for image in images
                ]
                rows = []
                for spec in specs:
                    model = load_version(root / "data", spec, root / "models")
                    before = offline_rates(model, images, args.duration)
                    url = f"http://{HOST}:{port}/v1/models/{spec.registry_name}/predict"
                    served = {c: asyncio.run(served_rate(url, bodies, c, args.duration)) for c in concurrencies}
                    after = offline_rates(model, images, args.duration)
                    best = {size: max(before[size], after[size]) for size in before}
                    rows.append((spec, best, served, job_rates[spec.key]))
            finally:
                stop(server)
        print("\nServed over HTTP (one image a request) against the offline limit (predict_proba in this process,")
        print("the best of 1 image a call and the loader's batch, with 1 and the default torch threads, each measured")
        print("before and after the HTTP rows):")
        header = "  ".join(f"{'c' + str(c):>8} {'ratio':>6}" for c in concurrencies)
        print(f"  {'model':<24} {'limit':>7}  {'(best of)':<20}  {header}  errors")
        for spec, best, served, _ in rows:
            where, limit = max(best.items(), key=lambda item: item[1])
            cells = "  ".join(f"{served[c][0]:8.1f} {served[c][0] / limit:6.2f}" for c in concurrencies)
            errors = sum(served[c][1] for c in concurrencies)
            print(f"  {spec.title:<24} {limit:7.1f}  {where:<20}  {cells}  {errors}")
            print("    offline: " + ", ".join(f"{key} {rate:.1f}" for key, rate in best.items()))
        print("  (images/s; ratio = served / limit)")
        for spec, *_, job_rate in rows:
            print(f"  the server's {spec.title} job reported {job_rate:.0f} images/s in its training loop")
    if not args.skip_training:
        print(f"\nTraining images/s, {args.epochs} epochs, batch 32, in this process:   ours     plain   ratio")
        for line in bench_training(images, targets, args, {s.key for s in specs}):
            print(line, flush=True)


if __name__ == "__main__":
    main()
