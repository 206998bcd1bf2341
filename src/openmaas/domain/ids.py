"""Resource ids: a readable prefix and a random, URL-safe tail (`ds_…`, `job_…`)."""

from __future__ import annotations

import secrets
import time

# The largest integer SQLite and Postgres (BIGINT) store: every integer a client sends is bounded by it
# (or by a tighter limit of its own) before it reaches a query.
DB_INT_MAX = 2**63 - 1


def new_id(prefix: str) -> str:
    # A millisecond timestamp first keeps ids roughly time-ordered, which makes `after=` paging natural.
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def now() -> float:
    return time.time()
