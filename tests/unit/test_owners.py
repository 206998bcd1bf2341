"""Job owners: a dead process on this node is known to be gone; anything else may be alive."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from openmaas.training.executors.owners import is_gone, this_process


def test_only_a_dead_process_of_this_node_is_gone() -> None:
    me = this_process("node-a")
    assert me.startswith(f"node-a/{os.getpid()}/") and not is_gone(me, "node-a")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    started = round(psutil.Process(ended.pid).create_time() * 1000)
    ended.wait()
    dead = f"node-a/{ended.pid}/{started}"
    assert is_gone(dead, "node-a")
    assert not is_gone(dead, "node-b")  # another node's process: only its lease can tell
    _, _, start = me.rpartition("/")
    reused = f"node-a/{os.getpid()}/{int(start) - 5000}"  # this pid, but a process that started earlier
    assert is_gone(reused, "node-a")
    assert not is_gone("not an owner", "node-a") and not is_gone(None, "node-a")
    assert not is_gone(this_process("a/node/with/slashes"), "a/node/with/slashes")
