"""Device `auto`: training (training/worker.py) and serving (runtime/predictors.py) both resolve it here, so a
CUDA GPU that torch sees is used for both, and `cuda` without one is refused with why."""

from __future__ import annotations

import pytest
import torch

from openmaas.recipes.base import resolve_device


def test_auto_takes_the_gpu_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
