"""The README's examples run as written: every fenced block marked `<!-- run -->` runs, in order, against a live
server, as a reader would type it in a terminal at the repository's root.

The server is started the way `make run` starts one (a fresh data directory, the admin key generated into
`data/admin.key`), in a temporary directory laid out like the repository: `data/`, `examples/`, `.venv/` and
`../shared/`. Bash blocks run with `bash -eo pipefail`, one after the other, and the shell variables a block
sets reach the next ones (as in one terminal); python blocks run with this interpreter. The one change made
to a block: the README's address, `127.0.0.1:8000`, becomes the test server's (the port may be taken here).
Unmarked blocks (slow training, the chat model, paths that are only examples) are counted, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATASETS, Server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- run -->"
FENCE = re.compile(r"^```(\w*)\s*$")
README_ADDRESS = "127.0.0.1:8000"
BLOCK_TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marked: bool


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block, marked when `<!-- run -->` is the last non-blank line before its fence."""
    blocks: list[Block] = []
    lines = text.splitlines()
    previous = ""
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(index + 1, opening.group(1), code, previous == MARKER))
        previous, index = "", end + 1
    return blocks


def test_fenced_blocks_finds_marked_blocks() -> None:
    text = "intro\n<!-- run -->\n\n```bash\necho hi\n```\n```python\nprint(1)\n```\n"
    assert fenced_blocks(text) == [Block(4, "bash", "echo hi\n", True), Block(7, "python", "print(1)\n", False)]


# Bash: the block's own variables are kept in a file between blocks. `declare -p` of the variables a fresh
# shell does not have: what the block (or one before it) set.
BASH_WRAPPER = """\
source "$README_STATE"
{code}
for name in $(compgen -v); do
  case " $README_BASELINE " in *" $name "*) ;; *) declare -p "$name" 2>/dev/null || true;; esac
done > "$README_STATE.next"
mv "$README_STATE.next" "$README_STATE"
"""


def lay_out(root: Path) -> Path:
    """A directory like the repository's root, with `../shared` beside it."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "examples").symlink_to(ROOT / "examples")
    (repo / ".venv").symlink_to(Path(sys.prefix))
    (root / "shared").symlink_to(DATASETS.parent)
    return repo


def run_block(block: Block, cwd: Path, env: dict[str, str], address: str) -> subprocess.CompletedProcess[str]:
    code = block.code.replace(README_ADDRESS, address)
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-eo", "pipefail", "-c", BASH_WRAPPER.format(code=code)]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, check=False
    )


def shell_env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of every block: this interpreter's venv on PATH, and where the shell keeps its variables."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "README_STATE": str(state),
        "COLUMNS": "200",  # rich's tables: ids whole
        **extra,
    }
    state.write_text("")
    baseline = subprocess.run(["bash", "-c", "compgen -v"], env=env, capture_output=True, text=True, check=True)
    env["README_BASELINE"] = " ".join(baseline.stdout.split())
    return env


def test_a_blocks_shell_variables_reach_the_next_block_and_a_failure_stops(tmp_path: Path) -> None:
    env = shell_env(tmp_path / "state.sh")
    sets = Block(1, "bash", "DATASET=$(echo ds_1)\nexport TEAM=a\n", True)
    uses = Block(5, "bash", 'test "$DATASET/$TEAM" = ds_1/a && echo "$DATASET"\n', True)
    fails = Block(9, "bash", "false\necho never\n", True)
    assert run_block(sets, tmp_path, env, "").returncode == 0
    assert run_block(uses, tmp_path, env, "").stdout == "ds_1\n"
    failed = run_block(fails, tmp_path, env, "")
    assert failed.returncode != 0 and "never" not in failed.stdout


@pytest.mark.slow
def test_readme_blocks_run_against_a_live_server(start_server: type[Server], tmp_path: Path) -> None:
    blocks = fenced_blocks(README.read_text(encoding="utf-8"))
    marked = [block for block in blocks if block.marked]
    assert len(marked) >= 6, f"only {len(marked)} README blocks are marked {MARKER}"
    assert all(block.language in ("bash", "python") for block in marked)
    repo = lay_out(tmp_path)
    (repo / "data").mkdir()
    # As `make run`: no configured key, so the server writes the one it generates to data/admin.key.
    server = start_server(repo / "data", OPENMAAS_ADMIN_KEY="")
    key = (repo / "data" / "admin.key").read_text().strip()
    env = shell_env(tmp_path / "state.sh", OPENMAAS_URL=server.url, OPENMAAS_API_KEY=key, KEY=key)
    took = []
    for block in marked:
        began = time.monotonic()
        result = run_block(block, repo, env, f"127.0.0.1:{server.port}")
        took.append(f"line {block.line}: {time.monotonic() - began:.0f} s")
        assert result.returncode == 0, (
            f"README.md block at line {block.line} ({block.language}) exited with {result.returncode}:\n"
            + textwrap.indent(block.code, "    ")
            + f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}\n"
            + f"server log:\n{server.log()[-2000:]}"
        )
    unmarked = len(blocks) - len(marked)
    print(f"README.md: ran {len(marked)} of {len(blocks)} code blocks ({', '.join(took)}); {unmarked} unmarked")
