"""Resource ids: a readable prefix and a random, URL-safe tail (`ds_…`, `job_…`)."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    # A millisecond timestamp first keeps ids roughly time-ordered, which makes `after=` paging natural.
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def now() -> float:
    return time.time()
