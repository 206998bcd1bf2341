"""How long does a user wait for the first embedding after a server starts, with and without preloading?

Starts real servers (`python -m openmaas serve`) on fresh data directories, and again on the same ones (the
ONNX graph then cached), and times: the start until /healthz answers, the start until /readyz answers 200, and
the first POST /v1/embeddings sent as soon as the server is healthy (preloading: as soon as it is ready).

    .venv/bin/python bench/cold_start.py        # about a minute on two cores
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "om-bench-admin-key-0123456789abcdef0123"
MODEL = "all-minilm-l6-v2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline_s: float = 300) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 in {deadline_s}s")


def one_start(data_dir: Path, preload: bool) -> tuple[float, float, float]:
    """(seconds to /healthz, seconds to /readyz, seconds of the first embeddings call)."""
    port = free_port()
    env = {
        **os.environ,
        "OPENMAAS_ADMIN_KEY": KEY,
        "OPENMAAS_FOUNDATION_MODELS": f'["{MODEL}"]',
        "OPENMAAS_PRELOAD_MODELS": f'["{MODEL}"]' if preload else "[]",
    }
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        healthy = wait_for(f"{url}/healthz") - started
        ready = wait_for(f"{url}/readyz") - started
        before = time.perf_counter()
        answer = httpx.post(
            f"{url}/v1/embeddings",
            json={"model": MODEL, "input": "How long did this take?"},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=300,
        )
        answer.raise_for_status()
        return healthy, ready, time.perf_counter() - before
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for preload in (False, True):
            data_dir = Path(scratch) / ("preload" if preload else "lazy")
            for start in ("first start", "restart"):
                rows.append((start, preload, *one_start(data_dir, preload)))
    print(f"{'start':<12} {'preload':<8} {'/healthz s':>10} {'/readyz s':>10} {'first embedding s':>18}")
    for start, preload, healthy, ready, first in rows:
        print(f"{start:<12} {'yes' if preload else 'no':<8} {healthy:>10.2f} {ready:>10.2f} {first:>18.3f}")


if __name__ == "__main__":
    main()
