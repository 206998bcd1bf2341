"""`make run` installs what serving needs and nothing more; `make test` adds the dev extras (read from `make -n`,
which prints the commands a fresh clone would run, without running them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str, clone: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    # Under `make test` the outer make's variables would make this one a sub-make (and print its directory).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    command = ["make", "--no-print-directory", "-n", target]
    return subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, check=True).stdout


def test_make_run_installs_only_what_serving_needs(tmp_path: Path) -> None:
    commands = planned("run", tmp_path)
    assert "pip install --quiet -e .\n" in commands and "torch==2.13.0" in commands
    assert "[dev]" not in commands
    assert commands.rstrip().endswith("openmaas serve --host 127.0.0.1 --port 8000")


def test_make_test_adds_the_dev_extras(tmp_path: Path) -> None:
    commands = planned("test", tmp_path)
    assert "pip install --quiet -e .\n" in commands
    assert "-e '.[dev]' torch==2.13.0" in commands  # torch pinned again: an extra never pulls a CUDA build
    assert commands.index("-e .\n") < commands.index("[dev]") < commands.index("pytest")
