"""Torch's intra-op threads in a serving process: set once, before the first model loads."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def apply_torch_threads(count: int) -> None:
    """Run every torch operator of this process on `count` intra-op threads (0: leave torch's default, a thread
    per core). Torch copies the count into each thread as the thread runs its first parallel operator, and a thread
    keeps what it copied: so this is called before any model loads, and torch is imported only when it is needed.
    Why one thread is the default: bench/torch_threads.py (on a shared host, threads that wait for each other at
    every operator while another process holds a core run several times slower than one thread)."""
    if count <= 0:
        return
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
        log.info("torch runs its operators on %d intra-op thread(s)", count)
