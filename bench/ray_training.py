"""One bow-mlp job trained by 1 and by 2 data-parallel Ray Train workers, side by side, in one run.

    .venv/bin/python bench/ray_training.py [--rows 3000] [--epochs 5] [--batch-size 16]

1. Starts a one-node Ray cluster on loopback (2 CPUs; tests/conftest.py's `ray_head`), a Postgres schema of its
   own on 127.0.0.1:5432 and a cluster-mode server (OPENMAAS_CLUSTER, Redis at 127.0.0.1:6379).
2. Uploads the first `--rows` rows of the SMS spam data and trains the same job (seed, epochs, batch size) with
   `num_workers` 1, then 2, one after the other.
3. Prints, per job: wall seconds from create to succeeded, the job's own train seconds, optimizer steps,
   samples/s and validation accuracy; then 1-worker / 2-worker ratios.

Each step of 2 workers trains 2 batches (one each) with one gradient all-reduce (gloo), so the job takes half
the steps; on 2 cores shared with Ray's own processes, what it gains per step is what the all-reduce and the
second process cost back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import REDIS, Server, ray_head  # noqa: E402
from tests.contract.test_metadata_store import _postgres_url  # noqa: E402
from tests.fault.test_resume import sms_subset  # noqa: E402


def train(server: Server, dataset: str, workers: int, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    with server.client() as client:
        began = time.perf_counter()
        job = client.create_job(
            dataset, f"bench-{workers}-workers", hyperparameters={**hyperparameters, "num_workers": workers}
        )
        final = client.wait_for_job(job["id"], timeout=1800)
        wall = time.perf_counter() - began
        if final["status"] != "succeeded":
            raise RuntimeError(f"the {workers}-worker job ended {final['status']}: {final.get('reason')}")
        metrics = client.get_model(f"bench-{workers}-workers")["versions"][0]["metrics"]
    return {"workers": workers, "wall_s": wall, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    hyperparameters = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": 7, "log_every_steps": 0}
    scratch = Path(tempfile.mkdtemp(prefix="bench-ray-training-"))
    urls = _postgres_url()
    with ray_head() as head:
        server = Server(
            scratch / "server",
            {
                "OPENMAAS_CLUSTER": head.address,
                "OPENMAAS_DATABASE_URL": next(urls),
                "OPENMAAS_REDIS_URL": REDIS,
                "OPENMAAS_FOUNDATION_MODELS": "[]",
            },
        ).start(timeout=180)
        try:
            with server.client() as client:
                dataset = client.upload_dataset(sms_subset(scratch, rows=args.rows), name="sms")["id"]
            rows = [train(server, dataset, workers, hyperparameters) for workers in (1, 2)]
        finally:
            server.stop()
            next(urls, None)
    print(f"bow-mlp, {args.rows} SMS rows, {args.epochs} epochs, batch {args.batch_size} per worker, Ray 2 CPUs")
    print(f"{'workers':>7} {'wall s':>8} {'train s':>8} {'steps':>6} {'samples/s':>10} {'val acc':>8}")
    for row in rows:
        print(
            f"{row['workers']:>7} {row['wall_s']:>8.1f} {row['train_seconds']:>8.1f} {row['steps']:>6} "
            f"{row['samples_per_second']:>10.0f} {row['val_accuracy']:>8.4f}"
        )
    one, two = rows
    print(
        f"2 workers / 1: wall {two['wall_s'] / one['wall_s']:.2f}x, "
        f"train {two['train_seconds'] / one['train_seconds']:.2f}x, "
        f"val accuracy {two['val_accuracy'] - one['val_accuracy']:+.4f}"
    )


if __name__ == "__main__":
    main()
