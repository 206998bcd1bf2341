"""Training throughput of a `bow-mlp` job served by OpenMaaS vs. plain PyTorch loops, in one run.

    .venv/bin/python bench/train_bow.py [--epochs 10]

Starts a real server on loopback, uploads sms_spam, runs a job and reads the samples/s its training loop
measured (and the end-to-end wall time, process start and registration included). Then trains the same
model on the same rows in this process: (a) the textbook dense loop (count matrix → nn.Linear) and (b) a
plain loop over our own EmbeddingBag model. Prints samples/s and the ratio job / plain.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torch import nn

from openmaas import Client
from openmaas.data.splitting import stratified_split
from openmaas.recipes.bow_mlp import BowMlp
from openmaas.recipes.featurizers import BagOfWords

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sms_spam" / "sms_spam.csv"
KEY = "om-bench-key-0000000000000000-000000"  # 32 characters at least: a shorter admin key is refused


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPENMAAS_ADMIN_KEY": KEY, "OPENMAAS_JOB_POLL_SECONDS": "0.05"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openmaas",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def plain_dense(texts: list[str], targets: list[int], max_features: int, epochs: int, batch: int) -> float:
    torch.manual_seed(0)
    bow = BagOfWords.fit(texts, max_features)
    sparse = bow.transform(texts)
    dense = np.zeros((len(texts), len(bow.vocabulary)), dtype=np.float32)
    rows = np.repeat(np.arange(len(texts)), np.diff(np.append(sparse.offsets, len(sparse.indices))))
    np.add.at(dense, (rows, sparse.indices), sparse.counts)
    x, y = torch.from_numpy(dense), torch.tensor(targets, dtype=torch.float32)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx])[:, 0], y[idx])
            loss.backward()
            optimizer.step()
    return epochs * len(y) / (time.perf_counter() - started)


def plain_bag(texts: list[str], targets: list[int], max_features: int, epochs: int, batch: int) -> float:
    torch.manual_seed(0)
    bow = BagOfWords.fit(texts, max_features)
    per_row = [bow.transform([t]) for t in texts]
    y = torch.tensor(targets, dtype=torch.float32)
    model = BowMlp(len(bow.vocabulary), 16, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y)).tolist()
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            parts = [per_row[j] for j in idx]
            lengths = [len(p.indices) for p in parts]
            offsets = torch.tensor(np.cumsum([0, *lengths[:-1]]), dtype=torch.long)
            indices = torch.from_numpy(np.concatenate([p.indices for p in parts]))
            counts = torch.from_numpy(np.concatenate([p.counts for p in parts]))
            optimizer.zero_grad()
            loss = loss_fn(model(indices, offsets, counts)[:, 0], y[idx])
            loss.backward()
            optimizer.step()
    return epochs * len(y) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-features", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with DATA.open(encoding="utf-8", newline="") as handle:
        rows = list(dict.fromkeys((r["text"].strip(), r["label"]) for r in csv.DictReader(handle)))
    labels = [label for _, label in rows]
    train_idx, _, _ = stratified_split(labels, 0.1, seed=0)  # the job's own default split
    texts = [rows[i][0] for i in train_idx]
    targets = [int(rows[i][1] == "spam") for i in train_idx]

    hp = {"epochs": args.epochs, "batch_size": args.batch_size, "max_features": args.max_features}
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(Path(data_dir), 8765)
        try:
            client = Client("http://127.0.0.1:8765", KEY)
            dataset = client.upload_dataset(DATA, name="sms")
            began = time.perf_counter()
            job = client.create_job(dataset["id"], "bench", hyperparameters=hp)
            final = client.wait_for_job(job["id"], timeout=1800, poll=0.5)
            print("job started with", client.job_events(job["id"])[0]["data"])
            wall = time.perf_counter() - began
        finally:
            server.terminate()
            server.wait()
    assert final["status"] == "succeeded", final
    job_rate = final["metrics"]["samples_per_second"]
    end_to_end = args.epochs * final["metrics"]["train_rows"] / wall
    dense = plain_dense(texts, targets, args.max_features, args.epochs, args.batch_size)
    bag = plain_bag(texts, targets, args.max_features, args.epochs, args.batch_size)

    print(
        f"sms_spam bow-mlp, {len(texts)} training rows, {args.epochs} epochs, batch {args.batch_size}, "
        f"max_features {args.max_features}, torch threads {torch.get_num_threads()} ({os.cpu_count()} cores)"
    )
    print(f"{'loop':<44}{'samples/s':>12}{'job / this':>12}")
    print(f"{'OpenMaaS job (training loop)':<44}{job_rate:>12,.0f}{1.0:>12.2f}")
    print(f"{'OpenMaaS job (end to end, incl. start-up)':<44}{end_to_end:>12,.0f}{end_to_end / job_rate:>12.2f}")
    print(f"{'plain PyTorch, dense counts + nn.Linear':<44}{dense:>12,.0f}{job_rate / dense:>12.2f}")
    print(f"{'plain PyTorch, same EmbeddingBag model':<44}{bag:>12,.0f}{job_rate / bag:>12.2f}")
    print(f"validation accuracy of the job: {final['metrics']['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
