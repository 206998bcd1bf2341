"""Two API processes with OPENMAAS_REDIS_URL share one rate limit (the Redis at 127.0.0.1:6379)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import REDIS, Server, redis_reachable


@pytest.mark.skipif(not redis_reachable(), reason="Redis at 127.0.0.1:6379 is unreachable")
def test_two_servers_sharing_redis_share_the_limit(start_server: type[Server], tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("shared")
    one = start_server(data, OPENMAAS_REDIS_URL=REDIS)
    two = start_server(data, OPENMAAS_REDIS_URL=REDIS)  # same database, another process
    with one.http() as admin:
        tenant = admin.post("/v1/tenants", json={"name": "shared"}).json()["id"]
        key = admin.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read"], "limits": {"requests_per_minute": 6}})
        secret = key.json()["key"]
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=one.url, headers=headers) as a, httpx.Client(base_url=two.url, headers=headers) as b:
        if 60 - time.time() % 60 < 3:  # let the minute turn over first: the test needs one whole window
            time.sleep(60 - time.time() % 60 + 0.1)
        statuses = [client.get("/v1/datasets").status_code for client in (a, b, a, b, a, b)]
        assert statuses == [200] * 6
        assert b.get("/v1/datasets").status_code == 429
        assert a.get("/v1/datasets").status_code == 429
