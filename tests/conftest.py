"""Fixtures that start real servers on free ports and real clients against them."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from collab.testing.plugin import ClientFactory as PluginClientFactory
from collab.testing.plugin import ServerFactory as PluginServerFactory
from collab.testing.server import InProcessServer, ServerProcess, free_port

IN_CI = os.environ.get("CI") == "true"


# The suite uses the fixtures collab ships for its users (collab.testing's
# pytest plugin); these names are the suite's short aliases for them.
ServerFactory = PluginServerFactory
ClientFactory = PluginClientFactory


@pytest.fixture
def make_server(collab_server_factory: ServerFactory) -> ServerFactory:
    """Start servers with custom settings (memory store); all stop after the test."""
    return collab_server_factory


@pytest.fixture
def server(collab_server: InProcessServer) -> InProcessServer:
    """A collab server with default settings and the memory store."""
    return collab_server


@pytest.fixture
def make_client(collab_client: ClientFactory) -> ClientFactory:
    """Open synced Python client sessions; all are closed after the test."""
    return collab_client


def node_available() -> bool:
    return shutil.which("node") is not None


@pytest.fixture
def require_node() -> None:
    """Interop tests need Node.js; in CI its absence is a failure, not a skip."""
    here = os.path.dirname(__file__)
    modules = os.path.join(here, "interop", "node_modules")
    if node_available() and os.path.isdir(modules):
        return
    if IN_CI:
        pytest.fail("Node.js and tests/interop/node_modules are required in CI (scripts/install)")
    pytest.skip("Node.js or tests/interop/node_modules missing: run scripts/install")


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.messages.append(message)


#: A callback that holds the event loop this long fails the test: blocking
#: work (SQLite, compaction) belongs in a thread.  Generous, for slow CI;
#: ``COLLAB_SLOW_CALLBACK_SECONDS`` raises it on a machine shared by several runs.
SLOW_CALLBACK_SECONDS = float(os.environ.get("COLLAB_SLOW_CALLBACK_SECONDS", "0.5"))


@pytest.fixture(autouse=True)
async def event_loop_is_never_blocked(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test when any callback on its event loop ran too long (a module may
    allow longer with its own ``BLOCKED_LOOP_SECONDS``, saying why)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = getattr(
        request.module, "BLOCKED_LOOP_SECONDS", SLOW_CALLBACK_SECONDS
    )
    handler = _SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    try:
        yield
    finally:
        asyncio_log.removeHandler(handler)
        loop.set_debug(False)
    if handler.messages:
        pytest.fail("the event loop was blocked:\n" + "\n".join(handler.messages))


# -- PostgreSQL: one database per test run ---------------------------------------------

POSTGRES_URL = os.environ.get("COLLAB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = (
    "collab_snapshots, collab_updates, collab_schema, collab_events,"
    " collab_webhook_cursors, collab_webhook_deliveries, collab_webhook_endpoints,"
    " collab_history, collab_checkpoints, collab_versions, collab_trash, collab_history_meta,"
    " collab_idempotency"
)


def _postgres_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI ({POSTGRES_URL}): {reason}")
    pytest.skip(f"PostgreSQL not available at {POSTGRES_URL}: {reason}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh database for this run (its URL), dropped at the end."""
    try:
        import psycopg
    except ImportError:
        _postgres_unavailable("psycopg is not installed (pip install -e '.[dev]')")
        raise
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _postgres_unavailable(str(exc).strip().splitlines()[0])
        raise
    name = f"collab_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            parts = urlsplit(POSTGRES_URL)
            yield urlunsplit(parts._replace(path="/" + name))
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """The run's database; each test starts without collab tables."""
    import psycopg

    yield postgres_database
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLES}")


# -- Redis: a private server per test ----------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free port, so a test may stop and restart it."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if IN_CI:
                pytest.fail("redis-server is required in CI (scripts/services installs it)")
            pytest.skip("redis-server not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def no_server_process_outlives_the_session() -> Iterator[None]:
    yield
    ServerProcess.kill_leftovers()


# The real JavaScript client, for every test module.
from tests.jsclient import make_js_client  # noqa: E402, F401
