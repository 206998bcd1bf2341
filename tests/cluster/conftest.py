"""The cluster-mode server shared by the tests of this package: OPENMAAS_CLUSTER on the session's Ray cluster,
the machine's Postgres (a schema of its own) and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import REDIS, RayHead, Server, redis_reachable
from tests.contract.test_metadata_store import _postgres_url


@pytest.fixture(scope="package")
def cluster_server(ray_cluster: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
    urls = _postgres_url()
    database = next(urls)
    # The data directory is the path every node shares here (one machine); on several hosts, S3.
    server = Server(
        tmp_path_factory.mktemp("cluster-server"),
        {"OPENMAAS_CLUSTER": ray_cluster.address, "OPENMAAS_DATABASE_URL": database, "OPENMAAS_REDIS_URL": REDIS},
    ).start(timeout=120)
    try:
        yield server
    finally:
        server.stop()  # before its schema is dropped
        next(urls, None)
