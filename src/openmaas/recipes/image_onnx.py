"""ONNX form of an image classifier: the export (a preprocessed float batch in, class probabilities out, with a
dynamic batch axis), its parity check against PyTorch on real images, and the ONNX Runtime session serving it.

The graph starts after the preprocessing (resize, scale, normalise), which stays in Python beside it and is
saved with the version, so the same pixels reach PyTorch and ONNX Runtime. A version trained with
`runtime: onnx` keeps the graph in its artifact as `model.onnx`: the graph served is the graph checked.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ONNX_FILE = "model.onnx"
IMAGE_RUNTIMES = ("torch", "onnx")
# The most any class probability may differ between ONNX Runtime and PyTorch on the same real images. Float32
# graphs agree to about 1e-7 on these networks (measured: EfficientNet-Lite0 2.1e-7, a tiny ViT 1.2e-7,
# image-cnn 0 to 1e-7); a wrong export (a shape baked in, a missed branch) differs by orders of magnitude more.
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 16


class ParityFailed(RuntimeError):
    """The exported graph does not answer as the PyTorch model does."""


class Probabilities(nn.Module):
    """`logits(batch)` as class probabilities: what the served graph outputs."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(pixels), dim=1)


def export_checked(module: nn.Module, parity_batch: torch.Tensor, path: Path) -> float:
    """Export `module` (float (N, 3, H, W) → probabilities (N, classes)) to `path`, then check it against PyTorch
    on `parity_batch` (real, preprocessed images: all of them at once, and the first alone, so the batch axis
    is seen to be dynamic). Returns the largest absolute difference; raises ParityFailed over the tolerance."""
    module = module.cpu().eval()
    batch = parity_batch[:PARITY_IMAGES].float().cpu()
    example = batch[:2] if len(batch) >= 2 else batch.repeat(2, 1, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as temporary:
        traced = Path(temporary) / ONNX_FILE
        # The tracer warns where Python reads a shape (TF "SAME" padding, a ViT's patch grid): those sizes are
        # fixed by the version's image size, and only the batch axis varies; the parity check is the proof.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(traced),
                input_names=["pixels"],
                output_names=["probabilities"],
                dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
            expected = module(batch).numpy()
        session = OnnxImageSession(traced, threads=1)
        difference = max(
            float(np.abs(session(batch.numpy()) - expected).max()),
            float(np.abs(session(batch[:1].numpy()) - expected[:1]).max()),
        )
        if not difference <= PARITY_TOLERANCE:  # a NaN fails too
            raise ParityFailed(
                f"the ONNX export differs from PyTorch by {difference:.3g} on {len(batch)} real images (more than "
                f"{PARITY_TOLERANCE:g}); train with runtime 'torch'"
            )
        os.replace(traced, path)
    return difference


class OnnxImageSession:
    """An ONNX Runtime session on the CPU fed a float (N, 3, H, W) array; answers the probabilities."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # Idle threads sleep instead of spinning: in a server the spinning steals the cores that decode images.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self.memory_bytes = path.stat().st_size

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]
        return result


def serves_onnx(runtime: str, device: str) -> bool:
    """ONNX Runtime here is its CPU build: a version trained with `runtime: onnx` is served by PyTorch on a GPU."""
    return runtime == "onnx" and device == "cpu"


def load_served_graph(directory: Path, runtime: str, device: str) -> OnnxImageSession | None:
    """The session on the version's checked graph where ONNX Runtime serves it (`serves_onnx`); None where PyTorch
    does. Its `path` is the graph served (the inference's `onnx_path`, a download of the version's graph)."""
    if not serves_onnx(runtime, device):
        return None
    return OnnxImageSession(directory / ONNX_FILE)
