"""An async Python client for bots and tests, built on pycrdt.

    async with collab.connect("ws://127.0.0.1:8080/ws", "notes") as session:
        text = session.doc.get("text", type=pycrdt.Text)
        text += "hello from a bot\\n"

The session keeps a pycrdt ``Doc`` in sync with the server: local changes
are sent as they happen, remote ones applied; after a dropped connection it
reconnects with exponential backoff and re-syncs both ways (edits made
while offline reach the server through its sync step 1).  It speaks the
plain Yjs protocol, so it works against any y-websocket compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from pycrdt import Awareness, Doc, TransactionEvent

from . import protocol
from .closecodes import CloseCode
from .protocol import ProtocolError

log = logging.getLogger("collab.client")


class ConnectionClosed(Exception):
    """The server closed the session for good (bad input, auth, deleted document)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed by server with code {code} {reason}".strip())
        self.code = code
        self.reason = reason


class Session:
    """A document kept in sync with one server, across reconnects."""

    def __init__(
        self,
        url: str | Sequence[str],
        name: str,
        *,
        doc: Doc[Any] | None = None,
        token: str | None = None,
        reconnect: bool = True,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        heartbeat: float | None = 30.0,
        awareness_timeout: float = 30.0,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        query = "?" + urlencode({"token": token}) if token else ""
        bases = [url] if isinstance(url, str) else list(url)
        if not bases:
            raise ValueError("no server URL given")
        #: One document URL per server; after a drop the next one is tried.
        self.urls = [f"{base.rstrip('/')}/{quote(name, safe='')}{query}" for base in bases]
        self.url = self.urls[0]
        self.name = name
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.awareness = Awareness(self.doc, outdated_timeout=int(awareness_timeout * 1000))
        #: Set while the socket is open and the first sync step 2 has arrived.
        self.synced = asyncio.Event()
        #: Why the session ended for good, once it has.
        self.error: ConnectionClosed | None = None
        self.close_code: int | None = None
        self.connects = 0
        self._reconnect = reconnect
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._applying_remote = False
        self._changed = asyncio.Event()
        self._stopping = False
        self._ended = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._awareness_task: asyncio.Task[None] | None = None
        self._doc_sub = self.doc.observe(self._on_doc_change)
        self._awareness_sub = self.awareness.observe(self._on_awareness_change)

    # -- public ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; see ``wait_synced``."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run(), name=f"collab-client-{self.name}")
        self._awareness_task = asyncio.create_task(self.awareness.start())

    async def wait_synced(self, timeout: float | None = 10.0) -> None:
        """Wait until the document is in sync with the server."""
        async with asyncio.timeout(timeout):
            while not self.synced.is_set():
                if self.error is not None:
                    raise self.error
                ended = asyncio.ensure_future(self._ended.wait())
                synced = asyncio.ensure_future(self.synced.wait())
                try:
                    await asyncio.wait({ended, synced}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
                    synced.cancel()
                if self._ended.is_set() and not self.synced.is_set():
                    raise self.error or ConnectionClosed(self.close_code, "session ended")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after every document change."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def set_presence(self, state: dict[str, Any] | None) -> None:
        """Publish this client's awareness state (``None`` withdraws it)."""
        self.awareness.set_local_state(state)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued local change has been handed to the socket."""
        async with asyncio.timeout(timeout):
            await self._outbox.join()

    async def close(self) -> None:
        """Withdraw presence, send what is queued, and disconnect."""
        if self._stopping:
            await self._ended.wait()
            return
        if self._ws is not None and not self._ws.closed:
            self.awareness.set_local_state(None)
            with contextlib.suppress(TimeoutError):
                await self.drain(timeout=5.0)
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in (self._runner, self._awareness_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.doc.unobserve(self._doc_sub)
        self.awareness.unobserve(self._awareness_sub)
        if self._own_http and self._http is not None:
            await self._http.close()
        self._ended.set()

    # -- connection loop ---------------------------------------------------------

    def _next_server(self) -> None:
        self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    async def _run(self) -> None:
        backoff = self._min_backoff
        try:
            while not self._stopping:
                try:
                    await self._connect_once()
                    backoff = self._min_backoff
                except ConnectionClosed as exc:
                    self.error = exc
                    log.warning("%s: %s", self.name, exc)
                    return
                except aiohttp.WSServerHandshakeError as exc:
                    # 400/401/403/404 at the upgrade will not change by retrying;
                    # report them as the matching 44xx close code.
                    if 400 <= exc.status < 500 and exc.status not in (408, 429):
                        self.error = ConnectionClosed(4000 + exc.status, exc.message)
                        log.warning("%s: %s", self.name, self.error)
                        return
                    log.debug("%s: handshake failed: %r", self.name, exc)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.debug("%s: connect failed: %r", self.name, exc)
                if self._stopping or not self._reconnect:
                    return
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._ended.set()

    async def _connect_once(self) -> None:
        assert self._http is not None
        try:
            ws = await self._http.ws_connect(self.url, heartbeat=self._heartbeat, max_msg_size=0)
        except (aiohttp.ClientConnectionError, OSError):
            self._next_server()
            raise
        self._ws = ws
        self.connects += 1
        self._outbox = asyncio.Queue()
        writer = asyncio.create_task(self._write_loop(ws, self._outbox))
        reason = ""
        try:
            self._outbox.put_nowait(protocol.sync_step1(self.doc.get_state()))
            if self.awareness.get_local_state() is not None:
                self._send_awareness()
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._handle(msg.data)
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    reason = msg.extra if isinstance(msg.extra, str) else ""
                    await ws.close()
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        finally:
            self.synced.clear()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._ws = None
            self.close_code = ws.close_code
        code = ws.close_code
        if code != CloseCode.NORMAL:
            self._next_server()  # 1001 and drops: try another process first
        if not self._stopping and CloseCode.is_fatal(code):
            raise ConnectionClosed(code, reason)

    async def _write_loop(
        self, ws: aiohttp.ClientWebSocketResponse, outbox: asyncio.Queue[bytes]
    ) -> None:
        while True:
            frame = await outbox.get()
            try:
                await ws.send_bytes(frame)
            except Exception:
                # The socket died; the next connection re-syncs everything.
                await ws.close()
                return
            finally:
                outbox.task_done()

    def _handle(self, frame: bytes) -> None:
        try:
            message = protocol.decode(frame)
        except ProtocolError as exc:
            log.warning("%s: bad frame from server: %s", self.name, exc)
            return
        if isinstance(message, protocol.SyncStep1):
            self._outbox.put_nowait(protocol.sync_step2(self.doc.get_update(message.state_vector)))
        elif isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate)):
            self._apply_remote(message.update)
            if isinstance(message, protocol.SyncStep2):
                self.synced.set()
        elif isinstance(message, protocol.AwarenessUpdate):
            self.awareness.apply_awareness_update(message.payload, "remote")
            self._changed.set()
        elif isinstance(message, protocol.QueryAwareness):
            self._send_awareness()
        elif isinstance(message, protocol.PermissionDenied):
            log.warning("%s: server refused an update: %s", self.name, message.reason)

    def _apply_remote(self, update: bytes) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    # -- local changes -------------------------------------------------------------

    def _on_doc_change(self, event: TransactionEvent) -> None:
        self._changed.set()
        if self._applying_remote or self._ws is None:
            # Remote changes came from the server; offline ones go out
            # with the sync step 2 of the next connection.
            return
        update: bytes = event.update
        if update != protocol.EMPTY_UPDATE:
            self._outbox.put_nowait(protocol.sync_update(update))

    def _on_awareness_change(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        _, origin = change
        if topic == "update" and origin == "local" and self._ws is not None:
            self._send_awareness()

    def _send_awareness(self) -> None:
        payload = self.awareness.encode_awareness_update([self.awareness.client_id])
        self._outbox.put_nowait(protocol.awareness(payload))


@asynccontextmanager
async def connect(
    url: str | Sequence[str],
    name: str,
    *,
    wait: bool = True,
    timeout: float = 10.0,
    **options: Any,
) -> AsyncIterator[Session]:
    """Open a session on document ``name`` at ``url`` (``ws://HOST:PORT/ws``).

    ``url`` may be a list of servers of one deployment: after a drop the
    session reconnects to the next one.

    With ``wait`` (the default) the block starts once the document is synced.
    ``options`` go to ``Session`` (``doc``, ``token``, ``reconnect``, backoff...).
    """
    session = Session(url, name, **options)
    await session.start()
    try:
        if wait:
            await session.wait_synced(timeout)
        yield session
    finally:
        await session.close()
