"""OPENMAAS_TORCH_THREADS: the model pool sets torch's intra-op threads before it loads a model, and every thread
that runs a model afterwards (the loading thread, a batch queue's lane) runs on that many. In a fresh process each
time: the setting is process-wide, and a thread keeps the count it first saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, tempfile, threading
    from pathlib import Path

    import torch

    from openmaas.domain.entities import ModelVersion
    from openmaas.runtime.pool import ModelLoadError, ModelPool
    from openmaas.storage.artifacts.local import LocalArtifactStore

    seen = {}
    before = threading.Thread(target=lambda: seen.update(default=torch.get_num_threads()))  # torch's own count
    before.start()
    before.join()

    def loader(version, directory, device):
        seen["loading"] = torch.get_num_threads()
        raise RuntimeError("counted, not loaded")

    def lane():
        torch.ones(1000, 1000).sum()  # a parallel operator: the thread takes its count now
        seen["lane"] = torch.get_num_threads()

    version = ModelVersion(
        "m", 1, "tenant", "text-classification", "bow-mlp", "torch", (), {}, {}, None, None, None, 0, "0" * 64, {}, 0.0
    )
    root = Path(tempfile.mkdtemp())
    pool = ModelPool(
        LocalArtifactStore(root / "artifacts"), root / "cache", device="cpu", memory_budget_bytes=10**9,
        loader=loader, torch_threads=int(sys.argv[1]),
    )
    try:
        asyncio.run(pool.acquire(version))
    except ModelLoadError:
        pass
    thread = threading.Thread(target=lane)
    thread.start()
    thread.join()
    print(json.dumps(seen))
    """
)


def threads_seen(setting: int) -> dict[str, int]:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(setting)], env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout
    seen: dict[str, int] = json.loads(output.strip().splitlines()[-1])
    return seen


def test_the_pool_runs_models_on_the_threads_it_is_given() -> None:
    seen = threads_seen(1)
    assert seen["loading"] == seen["lane"] == 1


def test_zero_leaves_torch_its_default() -> None:
    seen = threads_seen(0)
    assert seen["loading"] == seen["lane"] == seen["default"]  # a thread per physical core
