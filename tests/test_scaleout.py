"""Three `collab serve` processes sharing documents through a real Redis and PostgreSQL.

Every test runs twice: against three separate processes, and against one
`collab serve --workers 3` (one port; a client is pinned to a worker through
the keep-alive connection that asked /healthz, and killing "process i" kills
worker i, which its supervisor then restarts).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import aiohttp
import pytest
from pycrdt import Text

from collab.client import Session
from collab.testing.server import ServerProcess
from tests.conftest import RedisServer
from tests.helpers import converged, eventually, text_of
from tests.jsclient import JsClientFactory
from tests.test_workers import session_on_worker, worker_health

pytestmark = pytest.mark.timeout(120)

MARKER = re.compile(r"\[[a-z]\d+\.\d+\]")


class Node(Protocol):
    """One server of a cluster: a process, or a worker of `--workers`."""

    @property
    def ws_url(self) -> str: ...

    @property
    def http_url(self) -> str: ...

    async def kill(self) -> int | None: ...


class Cluster:
    """Three server processes on one Redis and one PostgreSQL database."""

    def __init__(self, redis: RedisServer, postgres_url: str, *extra: str) -> None:
        self.args = (
            "--store", postgres_url, "--redis-url", redis.url,
            "--unload-grace", "1", "--awareness-timeout", "3", *extra,
        )  # fmt: skip
        self.processes = [ServerProcess(*self.args) for _ in range(3)]
        self.servers: Sequence[Node] = self.processes
        self.sessions: list[Session] = []

    async def start(self) -> None:
        await asyncio.gather(*(s.start() for s in self.processes))

    async def stop(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
        running = [s for s in self.processes if s.running]
        await asyncio.gather(*(s.stop(timeout=10) for s in running))

    def left(self, session: Session, server: int) -> bool:
        """Whether ``session`` is no longer connected through ``server``."""
        return session.url != self.servers[server].ws_url + "/" + session.name

    def urls(self, first: int) -> list[str]:
        """Every server's URL, starting with ``first``'s (where a client connects)."""
        order = [*self.servers[first:], *self.servers[:first]]
        return [s.ws_url for s in order]

    async def client(self, name: str, on: int) -> Session:
        session = Session(self.urls(on), name, min_backoff=0.05, max_backoff=0.5)
        self.sessions.append(session)
        await session.start()
        await session.wait_synced(15)
        return session


class Worker:
    """Worker ``index`` of a `--workers` server, as a cluster node."""

    def __init__(self, process: ServerProcess, index: int) -> None:
        self.process = process
        self.index = index

    @property
    def ws_url(self) -> str:
        return self.process.ws_url

    @property
    def http_url(self) -> str:
        return self.process.http_url

    async def kill(self) -> int | None:
        """SIGKILL this worker (its supervisor restarts it) and wait until it is gone."""
        pid = (await worker_health(self.http_url, 3))[self.index]["worker"]["pid"]
        os.kill(pid, signal.SIGKILL)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await eventually(gone, timeout=10)
        return -signal.SIGKILL


class WorkersCluster(Cluster):
    """The same three servers as the workers of one `collab serve --workers 3`."""

    def __init__(self, redis: RedisServer, postgres_url: str, *extra: str) -> None:
        super().__init__(redis, postgres_url, *extra)
        self.processes = [ServerProcess("--workers", "3", *self.args)]
        self.servers = [Worker(self.processes[0], i + 1) for i in range(3)]
        self._pinned: list[aiohttp.ClientSession] = []

    async def start(self) -> None:
        await super().start()

        async def all_serving() -> bool:
            return len(await worker_health(self.processes[0].http_url, 3)) == 3

        await eventually(all_serving, timeout=60, interval=0.1)

    async def stop(self) -> None:
        await super().stop()
        await asyncio.gather(*(http.close() for http in self._pinned))

    async def client(self, name: str, on: int) -> Session:
        http, _ = await session_on_worker(self.processes[0].http_url, on + 1)
        self._pinned.append(http)
        session = Session(
            self.servers[on].ws_url, name, min_backoff=0.05, max_backoff=0.5, http=http
        )
        self.sessions.append(session)
        await session.start()
        await session.wait_synced(15)
        return session

    def left(self, session: Session, server: int) -> bool:
        # One URL for all: a session that left its (killed) worker has reconnected.
        return session.connects > 1


@pytest.fixture(params=["processes", "workers"])
async def cluster(
    request: pytest.FixtureRequest, redis_server: RedisServer, postgres_url: str
) -> AsyncIterator[Cluster]:
    kind = WorkersCluster if request.param == "workers" else Cluster
    c = kind(redis_server, postgres_url)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def edit_markers(
    session: Session, tag: str, count: int, rng: random.Random, stop: asyncio.Event | None = None
) -> set[str]:
    """Insert unique markers at marker boundaries; delete some of one's own."""
    text = session.doc.get("text", type=Text)
    mine: list[str] = []
    for k in range(count):
        if stop is not None and stop.is_set():
            break
        current = str(text)
        if mine and rng.random() < 0.2:
            victim = mine.pop(rng.randrange(len(mine)))
            at = current.find(victim)
            if at >= 0:
                del text[at : at + len(victim)]
        else:
            marker = f"[{tag}{k}.{rng.randrange(1000)}]"
            spots = [0, *(m.end() for m in MARKER.finditer(current))]
            text.insert(rng.choice(spots), marker)
            mine.append(marker)
        await asyncio.sleep(rng.choice((0, 0.002, 0.01)))
    return set(mine)


async def test_clients_spread_over_three_processes_converge(
    cluster: Cluster, make_js_client: JsClientFactory
) -> None:
    rng = random.Random(7)
    py = [await cluster.client("spread", on=i % 3) for i in range(6)]
    js = [await make_js_client("spread", url=cluster.servers[i].ws_url) for i in range(3)]
    py_results = asyncio.gather(
        *(edit_markers(s, "abcdef"[i], 40, random.Random(rng.random())) for i, s in enumerate(py))
    )
    for round_ in range(15):
        for i, client in enumerate(js):
            await client.insert(0, f"[j{i}.{round_}]")
    kept = set().union(*await py_results)
    js_markers = {f"[j{i}.{r}]" for i in range(3) for r in range(15)}
    # The Python clients may agree before the last JS inserts reach them.
    for session in py:

        def has_js_markers(s: Session = session) -> bool:
            return js_markers <= set(re.findall(r"\[j\d+\.\d+\]", text_of(s)))

        await session.wait_for(has_js_markers, timeout=30)
    final = await converged(py, timeout=30)
    for client in js:
        await client.wait_text(final, timeout=30)
    assert set(MARKER.findall(final)) | set(re.findall(r"\[j\d+\.\d+\]", final)) == (
        kept | js_markers
    )


async def test_late_joiner_on_a_process_that_never_had_the_document(cluster: Cluster) -> None:
    writer = await cluster.client("late", on=0)
    text = writer.doc.get("text", type=Text)
    for i in range(100):
        text.insert(len(text), f"line {i}\n")
    await writer.drain()
    second = await cluster.client("late", on=1)
    await second.wait_for(lambda: text_of(second) == str(text), timeout=15)
    # Process 2 never had the document: it loads from PostgreSQL and asks its peers.
    late = await cluster.client("late", on=2)
    await late.wait_for(lambda: text_of(late) == str(text), timeout=15)


async def test_sigkilled_process_loses_no_edit_that_reached_a_survivor(cluster: Cluster) -> None:
    victims = [await cluster.client("crash", on=2) for _ in range(2)]
    survivors = [await cluster.client("crash", on=i) for i in (0, 1)]
    stop = asyncio.Event()
    rng = random.Random(11)
    editing = asyncio.gather(
        *(
            edit_markers(s, "vwxy"[i], 400, random.Random(rng.random()), stop)
            for i, s in enumerate(victims + survivors)
        )
    )
    await asyncio.sleep(1.0)  # mid-editing
    await cluster.servers[2].kill()
    await asyncio.sleep(1.0)  # the victims reconnect to process 0 and keep typing
    stop.set()
    kept = set().union(*await editing)
    final = await converged(victims + survivors, timeout=30)
    assert set(MARKER.findall(final)) == kept
    assert all(cluster.left(s, 2) for s in victims)
    # And the store has it all once the survivors let the document go.
    for s in victims + survivors:
        await s.close()
    async with aiohttp.ClientSession() as http:

        async def stored_everything() -> bool:
            url = f"{cluster.servers[0].http_url}/api/docs/crash"
            async with http.get(url) as resp:
                body = await resp.json()
            return bool(body["content"].get("text") == final)

        await eventually(stored_everything, timeout=20)


async def test_redis_restart_mid_editing_all_processes_catch_up(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    sessions = [await cluster.client("outage", on=i % 3) for i in range(3)]
    stop = asyncio.Event()
    rng = random.Random(5)
    editing = asyncio.gather(
        *(
            edit_markers(s, "rst"[i], 600, random.Random(rng.random()), stop)
            for i, s in enumerate(sessions)
        )
    )
    await asyncio.sleep(0.5)
    redis_server.stop()  # Redis keeps nothing on disk: it comes back empty
    async with aiohttp.ClientSession() as http:

        async def not_ready() -> bool:
            async with http.get(f"{cluster.servers[0].http_url}/readyz") as resp:
                return resp.status == 503

        await eventually(not_ready, timeout=10)
        await asyncio.sleep(0.5)  # edits made meanwhile stay local to each process
        redis_server.start()

        async def ready() -> bool:
            for server in cluster.servers:
                async with http.get(f"{server.http_url}/readyz") as resp:
                    if resp.status != 200:
                        return False
            return True

        await eventually(ready, timeout=20)
    await asyncio.sleep(0.5)
    stop.set()
    kept = set().union(*await editing)
    final = await converged(sessions, timeout=30)
    assert set(MARKER.findall(final)) == kept


async def test_presence_crosses_processes_and_leaves_with_a_dead_process(
    cluster: Cluster,
) -> None:
    watcher = await cluster.client("presence", on=0)
    visitor = await cluster.client("presence", on=2)
    visitor.set_presence({"user": {"name": "ada"}})
    vid = visitor.awareness.client_id
    await watcher.wait_for(lambda: vid in watcher.awareness.states, timeout=10)
    visitor._reconnect = False  # it must not come back through another process
    await cluster.servers[2].kill()
    # Nobody renews ada's state any more: it times out (3 s here, 30 s by default).
    await watcher.wait_for(lambda: vid not in watcher.awareness.states, timeout=15)


async def test_each_update_is_stored_once(cluster: Cluster, postgres_url: str) -> None:
    import psycopg

    sessions = [await cluster.client("once", on=i) for i in range(3)]
    text = sessions[0].doc.get("text", type=Text)
    for i in range(20):
        text.insert(len(text), f"{i},")
        await sessions[0].drain()
        await asyncio.sleep(0.05)  # past the commit window: one row per edit
    await converged(sessions)

    async def rows() -> int:
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM collab_updates WHERE name = 'once'")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    await eventually(lambda: rows_are(rows, 20), timeout=10)
    await asyncio.sleep(0.5)  # and no other process adds its copy later
    assert await rows() == 20


async def rows_are(rows: Callable[[], Awaitable[int]], want: int) -> bool:
    return await rows() == want
