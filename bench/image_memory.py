"""Peak memory of an image dataset upload and of its /samples thumbnails, each in a fresh process.

    .venv/bin/python bench/image_memory.py [--images 3000] [--size 320x240]

Builds a zip of photo-like JPEGs in 10 class folders, then runs `DatasetService.upload(kind="image")` and
`DatasetService.samples(per_class=4)` against a local artifact store and a SQLite metadata store, each in its
own process, and prints each one's peak RSS (getrusage) next to the process's RSS before the call.
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def build_zip(path: Path, count: int, width: int, height: int) -> int:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            # Smooth noise scaled up: compresses like a photo, unlike per-pixel noise.
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=75)
            archive.writestr(f"class{i % 10}/{i:05d}.jpg", out.getvalue())
    return path.stat().st_size


def measure(what: str, zip_path: Path, root: Path) -> None:
    """One phase, in this (fresh) process."""
    from openmaas.domain.entities import Principal, Tenant
    from openmaas.domain.ids import now
    from openmaas.services.datasets import DatasetService
    from openmaas.services.idempotency import Idempotency
    from openmaas.storage.artifacts.local import LocalArtifactStore
    from openmaas.storage.metadata import open_store

    store = open_store(f"sqlite:///{root}/meta.db")
    if store.tenants.get("tn_bench") is None:
        store.tenants.create(Tenant("tn_bench", "bench", {}, False, now()))
    service = DatasetService(store, LocalArtifactStore(root / "artifacts"), 1 << 30, Idempotency(store.idempotency))
    principal = Principal(tenant_id="tn_bench", key_id="bench")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if what == "upload":
        dataset = service.upload(principal, name="m", filename="m.zip", data=zip_path.read_bytes(), kind="image")
        (root / "dataset-id").write_text(dataset.id)
        detail = f"{dataset.rows} images, {dataset.bytes / 2**20:.0f} MiB stored"
    else:
        detail = f"{len(service.samples(principal, (root / 'dataset-id').read_text(), 4))} thumbnails"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"  {what:<8} peak RSS {peak / 1024:6.0f} MiB (before the call {before / 1024:.0f} MiB), "
        f"{time.perf_counter() - started:5.1f} s: {detail}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of every image")
    parser.add_argument("--phase", choices=("upload", "samples"), help=argparse.SUPPRESS)
    parser.add_argument("--zip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        measure(args.phase, args.zip, args.root)
        return
    width, height = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-image-memory-") as tmp:
        root = Path(tmp)
        size = build_zip(root / "images.zip", args.images, width, height)
        decoded = args.images * width * height * 3
        print(
            f"{args.images} JPEGs of {width}x{height}: {size / 2**20:.1f} MiB zipped, {decoded / 2**20:.0f} MiB decoded"
        )
        for phase in ("upload", "samples"):
            command = [sys.executable, __file__, "--phase", phase, "--zip", str(root / "images.zip"), "--root", tmp]
            subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
