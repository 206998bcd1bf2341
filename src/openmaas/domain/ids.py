"""Resource ids: a readable prefix and a random, URL-safe tail (`ds_…`, `job_…`)."""

from __future__ import annotations

import secrets
import time

# The bound of every integer a client sends (or a tighter limit of its own) before it reaches a query: the
# largest integer every JSON reader holds exactly (JavaScript's MAX_SAFE_INTEGER; JSON Schema validators compare
# numbers as doubles, which round wider integers, so a bound nearer SQLite's and Postgres' 2**63 - 1 cannot be
# stated exactly in the OpenAPI schema), well within what the databases store.
DB_INT_MAX = 2**53 - 1


def new_id(prefix: str) -> str:
    # A millisecond timestamp first keeps ids roughly time-ordered, which makes `after=` paging natural.
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def now() -> float:
    return time.time()
