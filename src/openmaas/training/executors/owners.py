"""Who runs a job's attempt: this process's owner name in job leases, and whether another owner is gone.

An owner is `node/pid/start`, the process's start time in milliseconds telling a reused pid apart. A process
can see whether an owner on its own node still lives, so a server restarted after a kill takes its jobs back
at once; an owner on another node is judged by its lease alone.
"""

from __future__ import annotations

import contextlib
import os
import socket

import psutil


def default_node() -> str:
    """The host's name and, where Linux has them, its pid namespace: two containers of one name are two nodes
    (a pid in one means nothing in the other)."""
    node = socket.gethostname() or "localhost"
    with contextlib.suppress(OSError):
        node += f":{os.stat('/proc/self/ns/pid').st_ino}"
    return node[:120]


def _started_ms(process: psutil.Process) -> int:
    return round(process.create_time() * 1000)


def this_process(node: str) -> str:
    me = psutil.Process()
    return f"{node}/{me.pid}/{_started_ms(me)}"


def is_gone(owner: str | None, node: str) -> bool:
    """True only when `owner` ran on `node` and that process no longer exists; an owner of another node, or
    one whose name this version does not read, may be alive."""
    if owner is None:
        return False
    owner_node, _, rest = owner.rpartition("/")
    owner_node, _, pid = owner_node.rpartition("/")
    if owner_node != node or not (pid.isdigit() and rest.isdigit()):
        return False
    try:
        # The start time is rounded the same way on both sides; a pid reused since reads a later start.
        process = psutil.Process(int(pid))
        return _started_ms(process) != int(rest) or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to inspect: assume alive
        return False
