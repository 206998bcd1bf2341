"""Shared fixtures: a real OpenMaaS server on loopback, started as its own process, and clients for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ADMIN_KEY = "om-test-admin-key-0123456789abcdef"
REDIS = "redis://127.0.0.1:6379/0"  # the Redis on these machines (tests of shared limits skip without it)


def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `openmaas serve` process with its own data directory."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # more options of `openmaas serve`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self.port = self.port or free_port()  # a restarted server keeps its address
        env = {
            **os.environ,
            "OPENMAAS_ADMIN_KEY": ADMIN_KEY,
            "OPENMAAS_JOB_POLL_SECONDS": "0.05",
            # SmolLM2's conversion costs tens of seconds: only the servers of the tests that chat with it offer it
            "OPENMAAS_FOUNDATION_MODELS": '["all-minilm-l6-v2"]',
            # Preloading MiniLM costs every server seconds of CPU: only the tests of preloading ask for it
            "OPENMAAS_PRELOAD_MODELS": "[]",
            **self.env,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openmaas",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer /healthz in {timeout}s: {self.log()}")

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def client(self, api_key: str = ADMIN_KEY) -> Client:
        return Client(self.url, api_key)

    def http(self, api_key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[Server]]:
    """Start servers of one's own (for fault tests); every one is stopped at the end."""
    started: list[Server] = []

    def make(data_dir: Path | None = None, **env: str) -> Server:
        server = Server(data_dir or tmp_path_factory.mktemp("server"), env).start()
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server for the API and end-to-end tests."""
    instance = Server(tmp_path_factory.mktemp("shared-server")).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[Client]:
    with server.client() as sdk:
        yield sdk


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as session:
        yield session


@dataclass
class S3Server:
    """moto's standalone S3 server on loopback: a real S3 endpoint for the S3 artifact store."""

    endpoint: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """What an OpenMaaS process needs to reach it: the standard AWS variables only."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"openmaas-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session; each test makes its own bucket."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            httpx.get(server.endpoint, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("moto_server did not answer in 30s") from None
            time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RayHead:
    """A two-node Ray cluster of this test session, on loopback, in its own temp dir and on free ports: the head
    (2 CPUs) and a second raylet joined to it with `ray start --address` (1 CPU)."""

    address: str  # the head's GCS address, as OPENMAAS_CLUSTER takes it
    temp_dir: Path

    def processes(self) -> list[Any]:
        """Ray's processes of this cluster: every one names the cluster's temp dir on its command line."""
        import psutil

        mine: dict[int, Any] = {}
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(str(self.temp_dir) in part for part in process.info["cmdline"] or []):
                    mine[process.pid] = process
                    # The raylet's agents rename themselves (ray::DashboardAgent, ...): found as its children.
                    mine.update((child.pid, child) for child in process.children(recursive=True))
        return list(mine.values())


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayHead]:
    """`ray start --head` once per session, only when a test asks for it; its processes are ended by pid at
    the end (`ray stop` would end every Ray cluster of the machine, other sessions' too)."""
    pytest.importorskip("ray", reason="Ray is the `cluster` extra")
    with ray_head() as head:
        yield head


@contextlib.contextmanager
def ray_head() -> Iterator[RayHead]:
    """A one-node Ray cluster on loopback (2 CPUs) for as long as the block runs (the benches use it too)."""
    import psutil

    temp_dir = Path(tempfile.mkdtemp(prefix="rayom-", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    head_command = [ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
    head_command += ["--ray-client-server-port", str(free_port())]
    # The second raylet joins the head's GCS; both on loopback, in the same temp dir, with ports of their own.
    joined_command = [ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"]
    # Its workers import OpenMaaS from the same sources as the servers (PYTHONPATH is inherited).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env["RAY_raylet_start_wait_time_s"] = "120"  # a raylet on a loaded machine registers late (30 s by default)
    # No token auth, whatever another cluster of the machine left in ~/.ray/auth_token: a token read there by one
    # process of ours and not another fails the joined raylet's "InvalidAuthToken". The servers inherit it too.
    isolation = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": str(temp_dir / "no-auth-token")}
    saved = {name: os.environ.get(name) for name in isolation}
    os.environ.update(isolation)
    env.update(isolation)
    head = RayHead(f"127.0.0.1:{port}", temp_dir)
    try:
        for command in (head_command, joined_command):
            command += ["--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir), "--disable-usage-stats"]
            command += ["--object-store-memory", str(100 * 1024 * 1024)]
            for flag in (
                "--node-manager-port",
                "--object-manager-port",
                "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port",
                "--runtime-env-agent-port",
                "--metrics-export-port",
            ):
                command += [flag, str(free_port())]
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(command[:3])} failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
        yield head
    finally:
        processes = head.processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
