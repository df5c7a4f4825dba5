"""An async Python client for bots and tests, built on pycrdt.

    async with collab.connect("ws://127.0.0.1:8080/ws", "notes") as session:
        text = session.text()              # edited by character index
        text.insert(0, "hello from a bot\\n")

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
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
from pycrdt import Awareness, Doc, Text, TransactionEvent

from . import protocol
from . import text as chars
from .client_links import Buffered, HttpLink, HttpRefused, Link, WebSocketLink, http_urls
from .closecodes import CloseCode
from .protocol import ProtocolError

log = logging.getLogger("collab.client")

#: Seconds one connection attempt (TCP, TLS and the upgrade) may take.
ATTEMPT_TIMEOUT = 10.0
#: What ``transport=`` may be: "sse" and "poll" pin one HTTP tier.
TRANSPORTS = ("auto", "websocket", "http", "sse", "poll")
#: More time for an attempt on the stream, which waits up to 5 s for its open event.
OPEN_GRACE = 5.0
#: Seconds on the HTTP fallback after which "auto" tries a WebSocket again (and
#: moves back to one when it works: the network may have changed).
REPROBE_AFTER = 300.0


class ConnectionClosed(Exception):
    """The server closed the session for good (bad input, auth, deleted document)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed by server with code {code} {reason}".strip())
        self.code = code
        self.reason = reason


#: What a refused upgrade usually means, by HTTP status.
_REFUSALS = {
    400: "the server refused the request (a document name that is too long?)",
    401: "the server needs a valid token (token=...; `collab token` mints one)",
    403: "the token does not cover this document, or the page's origin is not allowed",
    404: "nothing serves WebSockets at this URL: collab's documents are at "
    "ws://HOST:PORT/ws/{name}, so the URL given to connect() ends in /ws",
}


class UpgradeRefused(ConnectionClosed):
    """The server answered the WebSocket upgrade with an HTTP error: retrying would not help.

    ``status`` is the HTTP status.  ``code`` is the matching close code for
    401 and 403 (``CloseCode.UNAUTHORIZED`` / ``FORBIDDEN``), else None: an
    HTTP 404 here is a wrong URL, not the deleted document of close code 4404.
    """

    def __init__(self, url: str, status: int, message: str = "") -> None:
        why = _REFUSALS.get(status, message)
        Exception.__init__(self, f"HTTP {status} at the WebSocket upgrade of {url}: {why}")
        self.code = 4000 + status if status in (401, 403) else None
        self.reason = message
        self.status = status
        self.url = url


class CannotConnect(ConnectionError):
    """No connection could be made within ``connect_timeout``; ``__cause__`` is the last error."""


class SharedText:
    """A ``pycrdt.Text`` edited by character index, as Python strings count.

    pycrdt counts ``Text`` positions in UTF-8 bytes, so ``text.insert(i, ...)``
    with an index found in ``str(text)`` lands in the wrong place, or inside a
    character, as soon as the text is not ASCII.  These methods take the
    indices ``str(text)`` has (``collab.text`` does the conversion).
    """

    def __init__(self, text: Text) -> None:
        #: The underlying pycrdt ``Text`` (byte positions), for ``observe`` and friends.
        self.raw = text

    def __str__(self) -> str:
        return str(self.raw)

    def __len__(self) -> int:
        """Characters, like ``len(str(text))`` (``len(text.raw)`` counts bytes)."""
        return chars.length(self.raw)

    def __iadd__(self, value: str) -> SharedText:
        self.raw += value
        return self

    def insert(self, index: int, value: str) -> None:
        """Insert ``value`` before character ``index``."""
        chars.insert(self.raw, index, value)

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` characters from character ``index`` on."""
        chars.delete(self.raw, index, length)

    def replace(self, new: str) -> None:
        """Make the text equal ``new`` with the smallest edits (others' typing survives)."""
        chars.replace(self.raw, new)


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
        connect_timeout: float | None = None,
        http: aiohttp.ClientSession | None = None,
        transport: str = "auto",
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        bases = [url] if isinstance(url, str) else list(url)
        if not bases:
            raise ValueError("no server URL given")
        #: One document URL per server; after a drop the next one is tried.
        self.urls = [f"{base.rstrip('/')}/{quote(name, safe='')}" for base in bases]
        self.url = self.urls[0]
        self.name = name
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.awareness = Awareness(self.doc, outdated_timeout=int(awareness_timeout * 1000))
        #: Set while the socket is open and the first sync step 2 has arrived.
        self.synced = asyncio.Event()
        #: Bytes of the initial sync received, and announced (0: not announced;
        #: a server sends its size first when the document comes in pieces).
        self.sync_received = 0
        self.sync_expected = 0
        #: Why the session ended for good, once it has.
        self.error: ConnectionClosed | CannotConnect | None = None
        #: The last failed connection attempt, while no connection is up.
        self.last_failure: BaseException | None = None
        self.close_code: int | None = None
        self.connects = 0
        # A header, not ?token=: URLs end up in proxies' and servers' access logs.
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._http = http
        self._own_http = http is None
        #: "auto", "websocket" or "http": what may be used.
        self._mode = transport
        #: The tier to try first: "websocket", then "sse" or "poll" once fallen back.
        self._tier = {"http": "sse", "sse": "sse", "poll": "poll"}.get(transport, "websocket")
        #: The tier of the current (or last) connection: "websocket", "sse" or "poll".
        self.transport: str | None = None
        self._link: Link | None = None
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

    def text(self, name: str = "text") -> SharedText:
        """The document's root ``Text`` called ``name``, edited by character index."""
        return SharedText(self.doc.get(name, type=Text))

    @property
    def progress(self) -> float:
        """How much of the initial sync arrived, from 0 to 1 (1 once synced).

        Known when the server announced the size (a document sent in pieces,
        ``--sync-chunk-bytes``); otherwise 0 until synced.  Live edits that
        arrive meanwhile count too, so it stays below 1 until the end.
        """
        if self.synced.is_set():
            return 1.0
        if not self.sync_expected:
            return 0.0
        return min(self.sync_received / self.sync_expected, 0.99)

    async def wait_synced(self, timeout: float | None = 10.0) -> None:
        """Wait until the document is in sync with the server.

        Raises ``ConnectionClosed`` / ``CannotConnect`` when the session ended
        for good, and ``TimeoutError`` naming the last failed attempt after
        ``timeout`` seconds.
        """
        try:
            await self._wait_synced(timeout)
        except TimeoutError:
            if self.last_failure is None:
                raise
            raise TimeoutError(
                f"not synced with {self.url} within {timeout} s; the last attempt failed: "
                f"{_describe(self.last_failure)}"
            ) from None

    async def _wait_synced(self, timeout: float | None) -> None:
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
        if self._link is not None and not self._link.closed:
            self.awareness.set_local_state(None)
            with contextlib.suppress(TimeoutError):
                await self.drain(timeout=5.0)
        self._stopping = True
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()
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
        loop = asyncio.get_running_loop()
        backoff = self._min_backoff
        attempts = 0
        #: Since when no connection is up: the start, or the last drop.
        down_since = loop.time()
        try:
            while not self._stopping:
                url = self.url
                try:
                    await self._connect_once()
                    backoff = self._min_backoff
                    attempts = 0
                    down_since = loop.time()
                except ConnectionClosed as exc:
                    self.error = exc
                    log.warning("%s: %s", self.name, exc)
                    return
                except HttpRefused as exc:
                    if exc.status in (400, 401, 403, 404) or CloseCode.is_fatal(exc.close_code):
                        self.error = ConnectionClosed(exc.close_code, exc.message)
                        log.error("%s: refused over HTTP: %s", self.name, exc)
                        return
                    self.last_failure = exc
                except aiohttp.WSServerHandshakeError as exc:
                    # 4xx at the upgrade will not change by retrying.
                    if 400 <= exc.status < 500 and exc.status not in (408, 429):
                        self.error = UpgradeRefused(url, exc.status, exc.message)
                        log.error("%s: %s", self.name, self.error)
                        return
                    self.last_failure = exc
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.last_failure = exc
                if self._stopping or not self._reconnect:
                    return
                delay = backoff * (0.5 + random.random())
                if self.last_failure is not None:  # this attempt failed (not a drop)
                    attempts += 1
                    waited = loop.time() - down_since
                    if self._connect_timeout is not None and waited >= self._connect_timeout:
                        self.error = CannotConnect(
                            f"could not connect to {url} within {self._connect_timeout:g} s "
                            f"({attempts} attempts): {_describe(self.last_failure)}"
                        )
                        self.error.__cause__ = self.last_failure
                        log.error("%s: %s", self.name, self.error)
                        return
                    if self._connect_timeout is not None:  # one last try at the deadline
                        delay = min(delay, self._connect_timeout - waited)
                    # Every failed attempt is worth a line: a bot that cannot
                    # reach its server must not look like one that waits.
                    log.warning(
                        "%s: cannot connect to %s (attempt %d): %s; retrying in %.1f s",
                        self.name,
                        url,
                        attempts,
                        _describe(self.last_failure),
                        delay,
                    )
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._ended.set()

    async def _connect_once(self) -> None:
        link = await self._open_link()
        self._link = link
        self.last_failure = None
        self.connects += 1
        self._outbox = asyncio.Queue()
        writer = asyncio.create_task(self._write_loop(link, self._outbox))
        upward = (
            asyncio.create_task(self._step_up_later(link))
            if self._mode == "auto" and not isinstance(link, WebSocketLink)
            else None
        )
        try:
            self._outbox.put_nowait(protocol.sync_step1(self.doc.get_state()))
            if self.awareness.get_local_state() is not None:
                self._send_awareness()
            while (frame := await link.receive()) is not None:
                self._handle(frame)
        finally:
            self.synced.clear()
            self.sync_received = self.sync_expected = 0
            for task in (writer, upward):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._link = None
            if not link.closed:
                with contextlib.suppress(Exception):
                    await link.close()
            self.close_code = link.close_code
        code = link.close_code
        if code != CloseCode.NORMAL:
            self._next_server()  # 1001 and drops: try another process first
        if not self._stopping and CloseCode.is_fatal(code):
            raise ConnectionClosed(code, link.close_reason)

    async def _open_link(self) -> Link:
        """A WebSocket, or (``transport`` "auto" or "http") the HTTP fallback.

        "auto" steps down once, when the upgrade fails while plain HTTP
        works (``/transport/probe``): a proxy that refuses upgrades fast
        must not look like an offline server.  The tier found is kept for
        the reconnects of this session.
        """
        if self._tier == "websocket":
            try:
                return await self._open_websocket()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if self._mode != "auto" or not await self._http_works():
                    raise
                log.warning(
                    "%s: WebSocket to %s failed (%s) but HTTP works: falling back to HTTP",
                    self.name,
                    self.url,
                    _describe(exc),
                )
                try:
                    return await self._open_http("sse")
                except HttpRefused:
                    if isinstance(exc, aiohttp.WSServerHandshakeError):
                        raise exc from None  # the server's own refusal, as the upgrade said
                    raise
        return await self._open_http(self._tier)

    async def _step_up_later(self, link: Link) -> None:
        """After ``REPROBE_AFTER`` on HTTP, try a WebSocket; when one opens, reconnect over it."""
        assert self._http is not None
        while True:
            await asyncio.sleep(REPROBE_AFTER * (0.9 + 0.2 * random.random()))
            try:
                async with asyncio.timeout(self._attempt_timeout()):
                    probe = await self._http.ws_connect(self.url, headers=self._headers)
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            await probe.close()
            log.info("%s: WebSockets work again: reconnecting over one", self.name)
            self._tier = "websocket"
            await link.close()  # the session reconnects at once, and resyncs
            return

    async def _open_http(self, tier: str) -> Link:
        assert self._http is not None
        self._tier = tier
        if self._tier == "sse":
            try:
                link = await self._attempt(
                    HttpLink.open(self._http, self.url, "sse", self._headers), OPEN_GRACE
                )
                self.transport = "sse"
                return link
            except Buffered:
                if self._mode == "sse":
                    raise TimeoutError("the stream's open event did not come") from None
                log.warning("%s: the stream is buffered on the way: long-polling", self.name)
                self._tier = "poll"
        link = await self._attempt(HttpLink.open(self._http, self.url, "poll", self._headers))
        self.transport = "poll"
        return link

    async def _attempt(self, opening: Awaitable[HttpLink], extra: float = 0.0) -> HttpLink:
        try:
            async with asyncio.timeout(self._attempt_timeout() + extra):
                return await opening
        except (aiohttp.ClientConnectionError, OSError, TimeoutError):
            self._next_server()
            raise

    def _attempt_timeout(self) -> float:
        # A host that drops packets would hold one attempt for aiohttp's
        # default of 5 minutes.
        attempt = ATTEMPT_TIMEOUT
        if self._connect_timeout is not None:
            attempt = min(attempt, max(self._connect_timeout, 0.1))
        return attempt

    async def _open_websocket(self) -> Link:
        assert self._http is not None
        try:
            async with asyncio.timeout(self._attempt_timeout()):
                ws = await self._http.ws_connect(
                    self.url, heartbeat=self._heartbeat, max_msg_size=0, headers=self._headers
                )
        except (aiohttp.ClientConnectionError, OSError, TimeoutError):
            self._next_server()
            raise
        self.transport = "websocket"
        return WebSocketLink(ws)

    async def _http_works(self) -> bool:
        """Whether the server answers plain HTTP (its ``/transport/probe``)."""
        urls = http_urls(self.url)
        if urls is None or self._http is None:
            return False
        try:
            async with (
                asyncio.timeout(self._attempt_timeout()),
                self._http.get(f"{urls[0]}transport/probe") as response,
            ):
                return response.status == 200 and bool((await response.json()).get("ok"))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False

    async def _write_loop(self, link: Link, outbox: asyncio.Queue[bytes]) -> None:
        while True:
            frames = [await outbox.get()]
            while not outbox.empty():  # one POST for everything queued
                frames.append(outbox.get_nowait())
            try:
                await link.send_all(frames)
            except Exception:
                # The link died; the next connection re-syncs everything.
                await link.close()
                return
            finally:
                for _ in frames:
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
            if self.sync_expected and not self.synced.is_set():
                self.sync_received += len(frame)
                self._changed.set()
            self._apply_remote(message.update)
            if isinstance(message, protocol.SyncStep2):
                self.synced.set()
        elif isinstance(message, protocol.SyncProgress):
            self.sync_received, self.sync_expected = 0, message.total
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
        if self._applying_remote or self._link is None:
            # Remote changes came from the server; offline ones go out
            # with the sync step 2 of the next connection.
            return
        update: bytes = event.update
        if update != protocol.EMPTY_UPDATE:
            self._outbox.put_nowait(protocol.sync_update(update))

    def _on_awareness_change(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        _, origin = change
        if topic == "update" and origin == "local" and self._link is not None:
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

    With ``wait`` (the default) the block starts once the document is synced,
    or raises after ``timeout`` seconds (``TimeoutError`` naming the last
    failed attempt).  ``options`` go to ``Session``: ``token`` (sent as
    ``Authorization: Bearer``), ``connect_timeout`` (give up with
    ``CannotConnect`` when no connection could be made for that long; by
    default a session retries for ever), ``doc``, ``reconnect``, backoff...
    """
    session = Session(url, name, **options)
    await session.start()
    try:
        if wait:
            await session.wait_synced(timeout)
        yield session
    finally:
        await session.close()


def _describe(exc: BaseException) -> str:
    """A connection error in a few words (aiohttp's reprs are long)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if error.errno:  # "Connection refused", not "Connect call failed (...)"
            return os.strerror(error.errno)
        return error.strerror or str(error) or str(exc)
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} at the WebSocket upgrade"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
