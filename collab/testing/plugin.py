"""The ``collab`` pytest plugin: real servers, clients and a faulty network as fixtures.

Installed with collab (entry point ``pytest11``), so any test suite can use:

``collab_server``
    a collab server running in the test's event loop on a free port
    (``.ws_url``, ``.http_url``, ``await .restart()``); the store comes from
    ``collab_store`` (``"memory"``, ``"sqlite"`` in ``tmp_path``, or a URL) and the
    settings from ``collab_settings``: override either fixture, or
    parametrize it indirectly.  With ``--collab-url ws://HOST:PORT/ws`` it
    is that server instead, collab or not (``restart`` is then unavailable).
``collab_server_factory``
    ``await collab_server_factory(store="sqlite", heartbeat=5)`` for more servers.
``collab_client``
    ``await collab_client("doc")``: a synced ``collab.client.Session``; ``url=``
    points it at any Yjs server, ``proxy=`` (with ``label=``) routes it through a
    ``NetemProxy``.  Every session is closed after the test.
``collab_proxy``
    a started ``NetemProxy`` in front of ``collab_server``, seeded with
    ``collab_seed`` and able to restart the server.
``collab_proxy_factory``
    ``await collab_proxy_factory(url, seed=..., restart=...)`` for other targets.
``collab_seed``
    ``--collab-seed N``, or a number derived from the test's id; a failing
    test prints it so the same fault schedule can be replayed.

Wait and assert with ``collab.testing.converged`` / ``assert_converged``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from collab.client import Session

from .netem import FaultUnavailable, NetemProxy
from .server import InProcessServer, store_url

__all__ = [
    "ClientFactory",
    "CollabServer",
    "ExternalServer",
    "ProxyFactory",
    "ServerFactory",
]

_SEED_KEY = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("collab", "collab: testing collaborative apps")
    group.addoption(
        "--collab-url",
        metavar="URL",
        help="run collab_server tests against this Yjs server (ws://HOST:PORT/ws) "
        "instead of starting collab in-process",
    )
    group.addoption(
        "--collab-seed",
        type=int,
        metavar="N",
        help="seed of collab_seed and collab_proxy (default: derived from each test's id)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if config.getoption("collab_url", None):
        lines.append(f"collab: against {config.getoption('collab_url')}")
    if config.getoption("collab_seed", None) is not None:
        lines.append(f"collab: seed {config.getoption('collab_seed')}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(
            ("collab", f"collab_seed was {seed}: replay with --collab-seed {seed}")
        )
    return report


class CollabServer(Protocol):
    """What ``collab_server`` gives: an in-process collab or an external server."""

    @property
    def ws_url(self) -> str: ...

    @property
    def http_url(self) -> str: ...

    async def restart(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ExternalServer:
    """A server given with ``--collab-url``: it cannot be restarted from here."""

    ws_url: str

    @property
    def http_url(self) -> str:
        base = self.ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        return base.rsplit("/", 1)[0] if base.count("/") > 2 else base

    async def restart(self) -> None:
        raise FaultUnavailable(f"{self.ws_url} was not started by the tests: it cannot restart")


class ServerFactory(Protocol):
    def __call__(
        self, *, store: str | None = ..., **settings: Any
    ) -> Awaitable[InProcessServer]: ...


class ClientFactory(Protocol):
    def __call__(
        self,
        name: str = ...,
        *,
        url: str | None = ...,
        proxy: NetemProxy | None = ...,
        label: str | None = ...,
        wait: bool = ...,
        timeout: float = ...,
        **options: Any,
    ) -> Awaitable[Session]: ...


class ProxyFactory(Protocol):
    def __call__(
        self,
        url: str | None = ...,
        *,
        seed: int | None = ...,
        restart: Callable[[], Awaitable[None]] | None = ...,
    ) -> Awaitable[NetemProxy]: ...


@pytest.fixture
def collab_store() -> str:
    """The store of ``collab_server``: ``memory``, ``sqlite`` (in ``tmp_path``) or a URL."""
    return "memory"


@pytest.fixture
def collab_settings() -> dict[str, Any]:
    """Settings of ``collab_server``: ``Settings`` fields, e.g. ``{"heartbeat": 5}``."""
    return {}


@pytest.fixture
def collab_seed(request: pytest.FixtureRequest) -> int:
    """The seed for this test's faults: ``--collab-seed``, or stable per test id."""
    given: int | None = request.config.getoption("collab_seed", None)
    seed = given if given is not None else zlib.crc32(request.node.nodeid.encode()) % 1_000_000
    request.node.stash[_SEED_KEY] = seed
    return seed


@pytest_asyncio.fixture
async def collab_server_factory(collab_store: str, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start in-process collab servers; all stop after the test."""
    servers: list[InProcessServer] = []

    async def factory(*, store: str | None = None, **settings: Any) -> InProcessServer:
        folder = tmp_path / f"collab-server-{len(servers)}"
        folder.mkdir(exist_ok=True)
        server = InProcessServer(store=store_url(store or collab_store, folder), **settings)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest_asyncio.fixture
async def collab_server(
    request: pytest.FixtureRequest,
    collab_server_factory: ServerFactory,
    collab_settings: dict[str, Any],
) -> CollabServer:
    """A running collab server (memory store), or the ``--collab-url`` server."""
    url: str | None = request.config.getoption("collab_url", None)
    if url:
        return ExternalServer(url)
    return await collab_server_factory(**collab_settings)


@pytest_asyncio.fixture
async def collab_client(collab_server: CollabServer) -> AsyncIterator[ClientFactory]:
    """Open ``Session``s (synced unless ``wait=False``); all close after the test."""
    sessions: list[Session] = []

    async def factory(
        name: str = "doc",
        *,
        url: str | None = None,
        proxy: NetemProxy | None = None,
        label: str | None = None,
        wait: bool = True,
        timeout: float = 10.0,
        **options: Any,
    ) -> Session:
        if proxy is not None:
            if url is not None:
                raise TypeError("give url= or proxy=, not both")
            url = await proxy.endpoint(label or f"client-{len(sessions)}")
        options.setdefault("min_backoff", 0.05)
        options.setdefault("max_backoff", 0.5)
        session = Session(url or collab_server.ws_url, name, **options)
        sessions.append(session)
        await session.start()
        if wait:
            await session.wait_synced(timeout)
        return session

    yield factory
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@pytest_asyncio.fixture
async def collab_proxy_factory(
    collab_server: CollabServer, collab_seed: int
) -> AsyncIterator[ProxyFactory]:
    """Start ``NetemProxy``s (default: in front of ``collab_server``); all close after."""
    proxies: list[NetemProxy] = []

    async def factory(
        url: str | None = None,
        *,
        seed: int | None = None,
        restart: Callable[[], Awaitable[None]] | None = None,
    ) -> NetemProxy:
        if url is None:
            url = collab_server.ws_url
            if restart is None and isinstance(collab_server, InProcessServer):
                restart = collab_server.restart
        proxy = NetemProxy(url, seed=collab_seed if seed is None else seed, restart=restart)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        await proxy.close()


@pytest_asyncio.fixture
async def collab_proxy(collab_proxy_factory: ProxyFactory) -> NetemProxy:
    """A fault-injecting proxy in front of ``collab_server``, seeded with ``collab_seed``."""
    return await collab_proxy_factory()
