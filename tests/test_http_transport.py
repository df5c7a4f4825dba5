"""The HTTP fallback transport (issue #15) over real sockets: SSE, long-poll and POST
against the same rooms as WebSockets, through the fault-injecting proxy, and across
two processes on Redis behind a round-robin balancer."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.auth import issue_token
from collab.client import ConnectionClosed, Session
from collab.client_links import HttpLink
from collab.framing import decode_frames, encode_frames
from collab.hooks import ConnectionEvent, Hooks, IncomingUpdate, Reject
from collab.testing.netem import NetemProxy
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, RedisServer, ServerFactory
from tests.helpers import converged, eventually

pytestmark = pytest.mark.timeout(90)


def names_in(session: Session) -> set[str]:
    return {
        s["user"]["name"]
        for s in session.awareness.states.values()
        if isinstance(s, dict) and "user" in s
    }


#: Every RawSession of a test: their streams are closed after it.
_OPEN: list[RawSession] = []


class RawSession:
    """An HTTP session driven by hand: the stream's events and POSTs, as a browser sends them."""

    def __init__(self, http: aiohttp.ClientSession, base: str, doc: str = "doc") -> None:
        self.http = http
        self.base = base
        self.doc = doc
        self.sid = ""
        self.seq = 0
        self.last = 0
        self.response: aiohttp.ClientResponse | None = None
        self._buffer = b""
        _OPEN.append(self)

    async def open(self, **params: str) -> dict[str, Any]:
        headers = {"Last-Event-ID": str(self.last)} if self.sid else {}
        query = {"sid": self.sid, **params} if self.sid else params
        self.response = await self.http.get(
            f"{self.base}/sse/{self.doc}", params=query, headers=headers
        )
        assert self.response.status == 200, await self.response.text()
        name, data = await self.event()
        if name == "open":
            hello: dict[str, Any] = json.loads(data)
            self.sid = hello["sid"]
            return hello
        return {"event": name, **json.loads(data)}

    async def event(self, timeout: float = 10.0) -> tuple[str, str]:
        """The next event: ("open"|"close", json) or (id, base64 frame)."""
        assert self.response is not None
        async with asyncio.timeout(timeout):
            while b"\n\n" not in self._buffer:
                chunk = await self.response.content.readany()
                assert chunk, "stream ended"
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        fields = dict(line.split(": ", 1) for line in raw.decode().split("\n"))
        if "event" in fields:
            return fields["event"], fields["data"]
        self.last = int(fields["id"])
        return fields["id"], fields["data"]

    async def frame(self) -> protocol.Message:
        name, data = await self.event()
        assert name.isdigit(), (name, data)
        return protocol.decode(base64.b64decode(data))

    def drop(self) -> None:
        if self.response is not None:
            self.response.close()
        self._buffer = b""

    async def post(self, *frames: bytes, seq: int | None = None) -> list[bytes]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        async with self.http.post(
            f"{self.base}/send/{self.doc}",
            params={"sid": self.sid},
            data=encode_frames(frames),
            headers={"Collab-Seq": str(seq), "Content-Type": "application/octet-stream"},
        ) as response:
            assert response.status == 200, await response.text()
            return decode_frames(await response.read())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
        while _OPEN:
            _OPEN.pop().drop()


@pytest.mark.parametrize("tier", ["sse", "poll"])
async def test_http_clients_converge_with_a_websocket_client_and_see_presence_both_ways(
    server: InProcessServer, make_client: ClientFactory, tier: str
) -> None:
    ws = await make_client("doc", transport="websocket")
    over_http = Session(server.ws_url, "doc", transport="http")
    over_http._tier = tier  # "http" starts with the stream; the poll tier is asked for here
    await over_http.start()
    try:
        await over_http.wait_synced(10)
        assert over_http.transport == tier
        ws.set_presence({"user": {"name": "ws"}})
        over_http.set_presence({"user": {"name": tier}})
        ws.text().insert(0, "from ws. ")
        over_http.text().insert(0, f"from {tier}. ")
        text = await converged([ws, over_http])
        assert "from ws. " in text and f"from {tier}. " in text
        await ws.wait_for(lambda: tier in names_in(ws))
        await over_http.wait_for(lambda: "ws" in names_in(over_http))
        # Later edits keep flowing both ways (the stream or the polls go on).
        for i in range(5):
            ws.text().insert(0, f"w{i} ")
            over_http.text().insert(0, f"h{i} ")
        text = await converged([ws, over_http])
        assert all(f"w{i} " in text and f"h{i} " in text for i in range(5))
    finally:
        await over_http.close()


async def test_a_repeated_collab_seq_is_applied_and_stored_once(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite", commit_window=0.01)
    raw = RawSession(http, server.http_url)
    await raw.open()
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    state = doc.get_state()
    text += "once"
    update = protocol.sync_update(doc.get_update(state))
    assert await raw.post(update, seq=1) == []
    assert await raw.post(update, seq=1) == []  # a retry: same answer, not applied again
    step1 = protocol.sync_step1(Doc().get_state())
    # A retry of a POST with replies gets the same replies.
    first = await raw.post(step1, seq=2)
    assert await raw.post(step1, seq=2) == first
    assert isinstance(protocol.decode(first[0]), protocol.SyncStep2)
    database = server.settings.store.removeprefix("sqlite:///")

    def rows() -> int:
        with sqlite3.connect(database) as db:
            return int(db.execute("SELECT count(*) FROM collab_updates").fetchone()[0])

    await eventually(lambda: rows() >= 1)
    await asyncio.sleep(0.3)  # well past the commit window
    assert rows() == 1
    room = server.server.manager.rooms["doc"]
    assert str(room.doc.get("text", type=Text)) == "once"


async def test_last_event_id_resumes_the_stream_without_a_resync(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    raw = RawSession(http, server.http_url)
    await raw.open()
    assert isinstance(await raw.frame(), protocol.SyncStep1)
    sid, seen = raw.sid, raw.last
    raw.drop()
    ws = await make_client("doc")
    ws.text().insert(0, "missed while away")
    await ws.drain()
    room = server.server.manager.rooms["doc"]
    await eventually(lambda: str(room.doc.get("text", type=Text)) == "missed while away")
    hello = await raw.open()
    assert hello["sid"] == sid  # the same session, from the frame after the last one seen
    missed = [await raw.frame()]
    assert raw.last == seen + 1
    while not isinstance(missed[-1], protocol.SyncUpdate):  # the WS client's presence too
        missed.append(await raw.frame())
    # What was missed, not a new handshake (a resync would start with a sync step 1).
    assert not any(isinstance(m, protocol.SyncStep1 | protocol.SyncStep2) for m in missed)
    update = missed[-1]
    assert isinstance(update, protocol.SyncUpdate)
    replica: Doc[Any] = Doc()
    replica.apply_update(update.update)
    assert str(replica.get("text", type=Text)) == "missed while away"


async def test_a_resume_after_the_session_is_gone_is_told_4410(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    raw = RawSession(http, server.http_url)
    raw.sid = "no-such-session"
    assert await raw.open() == {"event": "close", "code": 4410, "reason": "session expired"}
    async with http.get(
        f"{server.http_url}/poll/doc", params={"sid": "no-such-session", "after": "3"}
    ) as response:
        body = await response.json()
    assert response.status == 200
    assert body["close"] == {"code": 4410, "reason": "session expired"}


async def test_an_abandoned_session_expires_leaves_the_room_and_its_presence_goes(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(http_session_timeout=1.0)
    watcher = await make_client("doc", url=server.ws_url)
    raw = RawSession(http, server.http_url)
    await raw.open()
    presence: Doc[Any] = Doc()
    from pycrdt import Awareness

    awareness = Awareness(presence)
    awareness.set_local_state({"user": {"name": "raw"}})
    payload = awareness.encode_awareness_update([awareness.client_id])
    await raw.post(protocol.awareness(payload))
    await watcher.wait_for(lambda: "raw" in names_in(watcher))
    room = server.server.manager.rooms["doc"]
    assert len(room.connections) == 2
    raw.drop()  # the client vanishes without a goodbye
    await watcher.wait_for(lambda: "raw" not in names_in(watcher), timeout=10)
    await eventually(lambda: len(room.connections) == 1)
    sessions = server.app[_sessions_key()].sessions
    await eventually(lambda: raw.sid not in sessions, timeout=10)


def _sessions_key() -> Any:
    from collab.http_transport import HTTP_SESSIONS

    return HTTP_SESSIONS


async def test_a_bad_token_is_refused_with_json_naming_4401(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    secret = "s" * 32
    server = await make_server(auth_secret=secret)
    for path in ("sse", "poll"):
        async with http.get(f"{server.http_url}/{path}/doc", params={"token": "bad"}) as response:
            assert response.status == 401
            body = await response.json()
        assert body["close_code"] == 4401
        assert body["error"]
    token = issue_token(secret, "other", "write", 60)
    async with http.get(f"{server.http_url}/sse/doc", params={"token": token}) as response:
        assert response.status == 403
        assert (await response.json())["close_code"] == 4403
    good = issue_token(secret, "doc", "write", 60)
    raw = RawSession(http, server.http_url)
    assert (await raw.open(token=good))["sid"]
    raw.drop()


async def test_an_oversized_post_is_refused_with_413_and_closes_the_session_with_1009(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_message_size=1024)
    raw = RawSession(http, server.http_url)
    hello = await raw.open()
    assert hello["post_max"] == 1024 + 16
    async with http.post(
        f"{server.http_url}/send/doc",
        params={"sid": raw.sid},
        data=encode_frames([protocol.sync_update(b"\x00" * 2000)]),
        headers={"Collab-Seq": "1"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["close_code"] == 1009
    while (event := await raw.event())[0] != "close":
        pass
    assert json.loads(event[1])["code"] == 1009


async def test_a_cross_site_post_is_refused_and_the_same_origin_passes(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    raw = RawSession(http, server.http_url)
    await raw.open()
    step1 = encode_frames([protocol.sync_step1(Doc().get_state())])
    for origin, status in (("https://evil.example", 403), (server.http_url, 200)):
        async with http.post(
            f"{server.http_url}/send/doc",
            params={"sid": raw.sid},
            data=step1,
            headers={"Origin": origin, "Collab-Seq": str(status)},
        ) as response:
            assert response.status == status
    async with http.get(
        f"{server.http_url}/sse/doc", headers={"Origin": "https://evil.example"}
    ) as response:
        assert response.status == 403
    async with http.get(f"{server.http_url}/transport/probe") as response:
        assert await response.json() == {"ok": True, "transports": ["websocket", "sse", "poll"]}


class RoundRobin:
    """A TCP balancer: each new connection goes to the next backend; it notes the
    status line of every response."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.next = 0
        self.statuses: list[int] = []
        self.per_backend = [0] * len(ports)
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.next % len(self.ports)
        self.next += 1
        self.per_backend[backend] += 1
        task = asyncio.create_task(self._serve(backend, reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(
        self, backend: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.ports[backend])

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, down: bool
        ) -> None:
            first = True
            try:
                while data := await source.read(65536):
                    if down and first and data.startswith(b"HTTP/"):
                        self.statuses.append(int(data.split(b" ", 2)[1]))
                    first = False
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


async def test_two_processes_on_redis_behind_round_robin_converge_without_4xx(
    # Redis and PostgreSQL first: they must outlive the servers at teardown.
    redis_server: RedisServer,
    postgres_url: str,
    make_server: ServerFactory,
) -> None:
    servers = [
        await make_server(store=postgres_url, redis_url=redis_server.url, commit_window=0.01)
        for _ in range(2)
    ]
    balancer = RoundRobin([s.port for s in servers])
    port = await balancer.start()
    # No keep-alive: every POST is a new connection, so they alternate between processes.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    sessions: list[Session] = []
    try:
        over_http = Session(f"ws://127.0.0.1:{port}/ws", "rr", transport="http", http=http)
        ws = Session(servers[1].ws_url, "rr")
        sessions += [over_http, ws]
        for session in sessions:
            await session.start()
            await session.wait_synced(15)
        over_http.set_presence({"user": {"name": "http"}})
        for i in range(20):
            over_http.text().insert(0, f"h{i} ")
            ws.text().insert(0, f"w{i} ")
            await asyncio.sleep(0.01)
        text = await converged(sessions)
        assert all(f"h{i} " in text and f"w{i} " in text for i in range(20))
        await ws.wait_for(lambda: "http" in names_in(ws))
        assert over_http.connects == 1
        assert min(balancer.per_backend) >= 2  # the POSTs did land on both
        assert balancer.statuses and all(s < 400 for s in balancer.statuses), balancer.statuses
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await http.close()
        await balancer.close()


async def test_auto_falls_back_to_the_stream_when_a_proxy_refuses_upgrades(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        ws = await make_client("doc")
        behind = await make_client("doc", proxy=proxy, label="corp")
        assert behind.transport == "sse"
        assert proxy.faults["refuse upgrade"] >= 2  # switched on, then one upgrade refused
        behind.text().insert(0, "through the proxy ")
        ws.text().insert(0, "direct ")
        await converged([ws, behind])


async def test_auto_picks_long_poll_behind_a_buffering_proxy_within_10_s(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        proxy.buffer_responses(["corp"])
        ws = await make_client("doc")
        started = time.monotonic()
        behind = await make_client("doc", proxy=proxy, label="corp", timeout=10)
        assert time.monotonic() - started < 10
        assert behind.transport == "poll"
        behind.set_presence({"user": {"name": "poller"}})
        behind.text().insert(0, "polled ")
        ws.text().insert(0, "direct ")
        await converged([ws, behind])
        await ws.wait_for(lambda: "poller" in names_in(ws))


@pytest.mark.timeout(120)
async def test_heartbeats_keep_a_stream_open_through_a_proxy_that_kills_idle_connections(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        ws = await make_client("doc")
        behind = await make_client("doc", proxy=proxy, label="corp")
        assert behind.transport == "sse"
        # The stream carries a keepalive every 10 s: it never idles 13 s.
        proxy.kill_idle(13.0, ["corp"])
        await asyncio.sleep(28)
        assert behind.connects == 1
        ws.text().insert(0, "still there")
        await behind.wait_for(lambda: "still there" in str(behind.text()))


async def test_a_refused_token_over_http_ends_the_session_with_the_close_code(
    make_server: ServerFactory,
) -> None:
    server = await make_server(auth_secret="t" * 32)
    session = Session(server.ws_url, "doc", transport="http", token="bad", reconnect=False)
    await session.start()
    try:
        with pytest.raises(ConnectionClosed) as refused:
            await session.wait_synced(10)
        assert refused.value.code == 4401
    finally:
        await session.close()


async def test_chaos_with_clients_over_http_and_websockets_loses_no_edit(
    make_server: ServerFactory,
) -> None:
    from collab.testing.chaos import ChaosConfig, run_chaos

    server = await make_server(store="sqlite", commit_window=0.01)
    config = ChaosConfig(
        url=server.ws_url,
        clients=6,
        http_clients=4,
        duration=8,
        seed=21,
        rate=4,
        converge_timeout=30,
    )
    report = await run_chaos(config, restart=server.restart)
    assert report.ok, report.format()
    assert report.transports["websocket"] == 2
    assert report.transports["sse"] + report.transports["poll"] == 4
    assert report.faults["restart"] >= 1


async def test_closing_a_session_removes_its_presence_at_once(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    watcher = await make_client("doc")
    leaving = await make_client("doc", transport="http")
    leaving.set_presence({"user": {"name": "leaving"}})
    await watcher.wait_for(lambda: "leaving" in names_in(watcher))
    # Without the goodbye it would stay until the session expired (30 s).
    leaving._reconnect = False
    started = time.monotonic()
    link = leaving._link
    assert link is not None
    await link.close()
    await watcher.wait_for(lambda: "leaving" not in names_in(watcher), timeout=10)
    assert time.monotonic() - started < 5
    room = server.server.manager.rooms["doc"]
    await eventually(lambda: len(room.connections) == 1)


class Recorder(Hooks):
    """Records connection events and refuses updates holding "forbidden"."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def on_connect(self, event: ConnectionEvent) -> None:
        self.events.append(("connect", event.transport))

    async def on_disconnect(self, event: ConnectionEvent) -> None:
        self.events.append(("disconnect", event.transport))

    async def before_update(self, event: IncomingUpdate) -> None:
        if b"forbidden" in event.update:
            raise Reject(reason="no forbidden words")


async def test_hooks_and_metrics_see_http_sessions_with_their_transport(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    recorder = Recorder()
    server = await make_server(hooks=[recorder])
    ws = await make_client("doc", url=server.ws_url)
    sse = await make_client("doc", url=server.ws_url, transport="sse")
    poll = await make_client("doc", url=server.ws_url, transport="poll")
    async with http.get(f"{server.http_url}/metrics") as response:
        metrics = await response.text()
    for transport in ("websocket", "sse", "poll"):
        assert f'collab_transport_connections{{transport="{transport}"}} 1.0' in metrics
        assert f'collab_connections_opened_total{{transport="{transport}"}} 1.0' in metrics
    await eventually(lambda: recorder.events.count(("connect", "http")) == 2)
    # The gating hooks run on POSTed updates as on a socket's.
    sse.text().insert(0, "forbidden ")
    poll.text().insert(0, "fine ")
    await ws.wait_for(lambda: "fine" in str(ws.text()))
    await asyncio.sleep(0.3)
    assert "forbidden" not in str(ws.text())
    await poll.close()
    await eventually(lambda: ("disconnect", "http") in recorder.events)


async def test_a_session_sending_too_fast_gets_429_naming_4429(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(rate_messages=5)
    raw = RawSession(http, server.http_url)
    await raw.open()
    query = protocol.query_awareness()
    statuses = []
    for seq in range(1, 40):
        async with http.post(
            f"{server.http_url}/send/doc",
            params={"sid": raw.sid},
            data=encode_frames([query] * 5),
            headers={"Collab-Seq": str(seq)},
        ) as response:
            statuses.append(response.status)
            if response.status != 200:
                assert (await response.json())["close_code"] == 4429
                break
    assert statuses[-1] == 429
    while (event := await raw.event())[0] != "close":
        pass
    assert json.loads(event[1])["code"] == 4429


async def test_a_retried_post_gets_a_big_answer_again_without_keeping_it(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    from collab.http_transport import KEEP_REPLY_BYTES

    writer = await make_client("doc")
    writer.text().insert(0, "x" * (2 * KEEP_REPLY_BYTES))
    await writer.drain()
    room = server.server.manager.rooms["doc"]
    await eventually(lambda: len(str(room.doc.get("text", type=Text))) == 2 * KEEP_REPLY_BYTES)
    raw = RawSession(http, server.http_url)
    await raw.open()
    step1 = protocol.sync_step1(Doc().get_state())
    first = await raw.post(step1, seq=1)
    again = await raw.post(step1, seq=1)
    for reply in (first, again):
        (answer,) = reply
        message = protocol.decode(answer)
        assert isinstance(message, protocol.SyncStep2)
        replica: Doc[Any] = Doc()
        replica.apply_update(message.update)
        assert len(str(replica.get("text", type=Text))) == 2 * KEEP_REPLY_BYTES
    sessions = server.app[_sessions_key()].sessions
    assert not isinstance(sessions[raw.sid].last_reply, bytes)  # the question, not the answer


@pytest.mark.timeout(180)
async def test_the_transport_bench_runs_small(tmp_path: Path) -> None:
    # Correctness only (no timing is asserted): the bench starts its servers,
    # every sender's edits arrive, and N sessions are held and all reached.
    out = tmp_path / "transport.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.transport",
        "--edits", "3", "--idle", "5", "--sessions", "20", "--json", str(out),
        cwd=Path(__file__).parent.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    results = json.loads(out.read_text())
    assert set(results["latency"]) >= {"websocket->websocket", "sse->websocket", "poll->websocket"}
    assert results["idle_memory"]["sse"]["count"] == 5
    assert results["many_sessions"]["sessions"] == 20
    assert "SSE sessions at once" in output.decode()


async def test_the_server_heartbeat_keeps_quiet_http_sessions(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    # A 1 s heartbeat pings (and drops after 0.5 s more) any connection that is
    # silent; an HTTP session's stream, polls and POSTs are its signs of life.
    server = await make_server(heartbeat=1.0)
    sse = await make_client("doc", url=server.ws_url, transport="sse")
    poll = await make_client("doc", url=server.ws_url, transport="poll")
    await asyncio.sleep(4)
    assert sse.connects == 1 and poll.connects == 1
    sse.text().insert(0, "still ")
    await poll.wait_for(lambda: "still" in str(poll.text()))


def link_streaming(session: Session) -> bool:
    link = session._link
    return isinstance(link, HttpLink) and link.streaming


async def test_a_stream_dropped_mid_edit_resumes_without_a_new_connection(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        ws = await make_client("doc")
        behind = await make_client("doc", proxy=proxy, label="corp")
        assert behind.transport == "sse"
        for i in range(30):
            ws.text().insert(0, f"w{i} ")
            behind.text().insert(0, f"h{i} ")
            if i in (10, 20):
                # Once the stream is back: reset it (and any POST in flight).
                await eventually(lambda: link_streaming(behind))
                assert proxy.drop(["corp"]) >= 1
            await asyncio.sleep(0.02)
        text = await converged([ws, behind])
        assert all(f"w{i} " in text and f"h{i} " in text for i in range(30))
        link = behind._link
        assert isinstance(link, HttpLink)
        assert link.resumes >= 2  # resumed from Last-Event-ID ...
        assert behind.connects == 1  # ... in the same session: no reconnect, no resync
