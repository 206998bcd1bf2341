"""Sentence embeddings with all-MiniLM-L6-v2: PyTorch vs ONNX Runtime, float and int8, batch 1 and 32, in one run.

    .venv/bin/python bench/embeddings.py [--seconds 5]

Every runtime goes through the same tokenizer, pooling and normalisation as the server (the loaders in
openmaas.recipes.sentence_embedding), on real SMS texts, using every core. Prints sentences/s, the ratios
ONNX / PyTorch and int8 / ONNX, and how close the int8 embeddings are to the float ones (cosine similarity
on 2,000 texts, embedded 32 a call).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from openmaas.recipes.foundation import foundation_directory
from openmaas.recipes.sentence_embedding import EmbeddingInference

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sms_spam" / "sms_spam.csv"


def rate(model: EmbeddingInference, texts: list[str], batch: int, seconds: float) -> float:
    model.embed(texts[:batch])  # warm-up
    done, position, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = texts[position : position + batch]
        model.embed(chunk)
        done += len(chunk)
        position = (position + batch) % (len(texts) - batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with DATA.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:2000]
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "minilm"
        shutil.copytree(foundation_directory("all-minilm-l6-v2"), directory)
        runtimes = {name: EmbeddingInference(directory, "cpu", name) for name in ("torch", "onnx", "onnx-int8")}
        print(f"all-MiniLM-L6-v2 on {os.cpu_count()} cores, real SMS texts (median ~15 tokens), {args.seconds}s each")
        print(
            f"{'batch':>5}  {'PyTorch s/s':>12}  {'ONNX RT s/s':>12}  {'int8 s/s':>10}  "
            f"{'ONNX / PyTorch':>14}  int8 / ONNX"
        )
        for batch in (1, 32):
            results = {name: rate(model, texts, batch, args.seconds) for name, model in runtimes.items()}
            print(
                f"{batch:>5}  {results['torch']:>12.1f}  {results['onnx']:>12.1f}  {results['onnx-int8']:>10.1f}  "
                f"{results['onnx'] / results['torch']:>14.2f}  {results['onnx-int8'] / results['onnx']:>11.2f}"
            )
        floats, int8 = (
            np.concatenate([runtimes[name].embed(texts[i : i + 32])[0] for i in range(0, len(texts), 32)])
            for name in ("onnx", "onnx-int8")
        )
        cosines = (floats * int8).sum(axis=1)  # both are L2-normalised
        print(
            f"int8 against float, cosine similarity on {len(texts)} texts: mean {cosines.mean():.4f}, "
            f"1st percentile {np.percentile(cosines, 1):.4f}, min {cosines.min():.4f}"
        )


if __name__ == "__main__":
    main()
