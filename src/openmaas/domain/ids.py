"""Resource ids: a readable prefix and a random, URL-safe tail (`ds_…`, `job_…`)."""

from __future__ import annotations

import secrets
import time

# The bound of every integer a client sends (or a tighter limit of its own) before it reaches a query: within
# what SQLite and Postgres (BIGINT) store (2**63 - 1), and a double exactly, as JSON Schema validators compare
# numbers as doubles (2**63 - 1 reads as 2**63 there, so a fuzzer takes 2**63 + 100 for a valid value).
DB_INT_MAX = 2**63 - 1024


def new_id(prefix: str) -> str:
    # A millisecond timestamp first keeps ids roughly time-ordered, which makes `after=` paging natural.
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def now() -> float:
    return time.time()
