"""The HTTP fallback transport (issue #15): the same rooms where WebSockets are blocked.

Wire contract: ``docs/transports.md`` (and /work/notes/http-transport-contract.md).
A *session* is one client's connection carried over plain HTTP: frames go
down a Server-Sent Events stream (``GET /sse/{doc}``) or, where a proxy
buffers streams, through long-polls (``GET /poll/{doc}``); frames come up
by ``POST /send/{doc}``, idempotent by ``Collab-Seq``, whose response
carries the immediate replies (sync step 2, awareness answers).

A session *is* the ``Channel`` of its ``Connection``: ``send`` appends to a
bounded per-session buffer that the stream or poll drains, ``receive``
hands the connection loop the frames posted.  So admission, rate limits,
hooks, close codes, on_connect / on_disconnect and metrics are the
WebSocket's own (``loop.serve``), with the metrics label "sse" or "poll".

A POST that lands on a process that does not hold its session (several
processes on Redis, no sticky sessions) authenticates and applies its
frames through a short-lived connection on the room; replication carries
the change to the process that holds the stream.

Costs are bounded: the buffer of frames not yet sent past 1 MiB makes
``send`` push back, so the connection's own queue merges and, if the
client still does not read, closes it with 1013 like a slow socket; sent
frames are kept for resuming for at most 1 MiB / 60 s; a session without a
stream, poll or POST for ``--http-session-timeout`` expires and its
connection leaves the room.  One timer per server (not per session) sends
keepalives, notices streams whose client left, and expires sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from .auth import AuthError, authenticate, request_of
from .channel import Kind, Received
from .closecodes import CloseCode
from .connection import Connection
from .framing import FramingError, decode_frames, encode_frames
from .guard import add_route, origin_allowed
from .keys import HOOKS, LOOP_CONTEXT, METRICS, RATE_LIMITS, SEND_LIMITS, SETTINGS
from .loop import serve
from .ws import document_name, peer_of

log = logging.getLogger("collab.http")

#: The no-op awareness update (no entries): the stock y-websocket client
#: ignores it, but it feeds the client's 30 s liveness timer.
KEEPALIVE: Final = b"\x01\x01\x00"
#: Seconds of silence on a stream or a waiting poll before a keepalive frame.
HEARTBEAT: Final = 10.0
#: Seconds a poll waits for frames before it answers with none.
POLL_WAIT: Final = 25.0
#: Sent frames kept for a stream's resume (Last-Event-ID): bytes and seconds.
RESUME_BYTES: Final = 1024 * 1024
RESUME_SECONDS: Final = 60.0
#: Bytes of frames not yet sent beyond which ``send`` pushes back.
PENDING_BYTES: Final = 1024 * 1024
#: Seconds a new poll session waits for its first frames (the sync step 1).
FIRST_POLL_WAIT: Final = 2.0
#: Replies of POSTs served without a session, kept for a retried Collab-Seq.
RECENT_POSTS: Final = 4096
#: Answers kept for a retried Collab-Seq up to this size; a larger one (a whole
#: document's sync step 2) is made again from the frames that asked for it.
KEEP_REPLY_BYTES: Final = 64 * 1024
#: Bytes of answers kept for POSTs served without their session.
RECENT_BYTES: Final = 8 * 1024 * 1024
#: Close code and reason of a session that is gone (expired or unknown).
EXPIRED: Final[tuple[int, str]] = (CloseCode.SESSION_EXPIRED, "session expired")

TIERS: Final = ("sse", "poll")
STREAM_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
NO_CACHE: Final = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}

_GONE: Final = Received(Kind.CLOSED)
#: How a document update frame starts (sync message, type update).
_SYNC_UPDATE: Final = b"\x00\x02"


class Session:
    """One client's connection over HTTP; the ``Channel`` of its ``Connection``."""

    __slots__ = (
        "_bytes",
        "_frames",
        "_hub",
        "_inbound",
        "_pending",
        "_post",
        "_reader",
        "_receiver",
        "_replies",
        "_space",
        "attached",
        "conn",
        "doc",
        "dropped",
        "ended",
        "ended_at",
        "last_out",
        "last_reply",
        "last_seq",
        "next_n",
        "sent",
        "sid",
        "stream",
        "task",
        "tier",
        "touched",
    )

    def __init__(self, hub: Sessions, sid: str, doc: str, tier: str) -> None:
        self._hub = hub
        self.sid = sid
        self.doc = doc
        self.tier = tier
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None
        #: (number, frame, when queued): unsent frames and sent ones kept for resuming.
        self._frames: deque[tuple[int, bytes, float]] = deque()
        self._bytes = 0
        #: Bytes of frames not yet handed to a stream or poll.
        self._pending = 0
        #: The last frame number given out, the last handed to a client, the last dropped.
        self.next_n = 0
        self.sent = 0
        self.dropped = 0
        #: Frames posted and not yet taken by the connection loop.
        self._inbound: deque[bytes] = deque()
        #: The loop waiting for a frame; the stream or poll waiting for frames; a full send.
        self._receiver: asyncio.Future[Any] | None = None
        self._reader: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        #: While a POST is applied: its replies, and the future that says it is done.
        self._replies: list[bytes] | None = None
        self._post: asyncio.Future[None] | None = None
        self.last_seq = 0
        #: The answer to POST ``last_seq``, or the frames that asked for a big one.
        self.last_reply: bytes | list[bytes] = b""
        #: The stream or poll attached (an object only its request holds), and its socket.
        self.attached: object | None = None
        self.stream: asyncio.BaseTransport | None = None
        now = hub.loop.time()
        self.touched = self.last_out = now
        self.ended: tuple[int, str] | None = None
        self.ended_at = 0.0

    # -- Channel: what the connection loop and Connection call ------------------

    async def send(self, frame: bytes) -> None:
        if self._replies is not None and not frame.startswith(_SYNC_UPDATE):
            # A POST is being applied: its answers go in its response.  Others'
            # updates keep to the stream, numbered and resumable: a response
            # lost on the way must not lose them.
            self._replies.append(frame)
            return
        while self._pending > PENDING_BYTES and self.ended is None:
            # Push back like a full socket: the connection queues, merges,
            # and closes with 1013 after its stall timeout.
            self._space = self._hub.loop.create_future()
            await self._space
        if self.ended is not None:
            raise ConnectionResetError("session closed")
        self.push(frame)

    def receive(self) -> Awaitable[Any]:
        future: asyncio.Future[Any] = self._hub.loop.create_future()
        if self._inbound:
            future.set_result(self._inbound.popleft())
        elif self.ended is not None:
            future.set_result(_GONE)
        else:
            # The loop handled every frame posted: the POST may answer now.
            self._finish_post()
            self._receiver = future
        return future

    def classify(self, raw: Any) -> Received:
        if isinstance(raw, bytes):
            return Received(Kind.BINARY, raw)
        assert isinstance(raw, Received)
        return raw

    async def pong(self, data: bytes) -> None:
        pass

    async def ping(self) -> None:
        # An attached stream or poll is the client itself: it is alive.
        if self.attached is not None and self.conn is not None:
            self.conn.alive()

    async def close(self, code: int, reason: str) -> None:
        self.end(code, reason)

    def abort(self) -> None:
        self.end(1006, "aborted")

    # -- the buffer --------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue ``frame`` for the client (with the next number) and wake its reader."""
        self.next_n += 1
        self._frames.append((self.next_n, frame, self._hub.loop.time()))
        self._bytes += len(frame)
        self._pending += len(frame)
        self.wake()

    def after(self, number: int) -> list[tuple[int, bytes]]:
        """The frames numbered above ``number``, now marked as handed out."""
        buffered = self._frames
        first = buffered[0][0] if buffered else 0
        # Numbers are consecutive: skip to the first one wanted without comparing.
        skip = max(0, number - first + 1)
        frames = [(n, f) for n, f, _ in itertools.islice(buffered, skip, None)]
        if frames and frames[-1][0] > self.sent:
            self._pending -= sum(len(f) for n, f in frames if n > self.sent)
            self.sent = frames[-1][0]
            if self._space is not None and self._pending <= PENDING_BYTES:
                self._space.set_result(None)
                self._space = None
            self.trim(self._hub.loop.time())
        return frames

    def resumable(self, number: int) -> bool:
        """Whether every frame after ``number`` is still here (nothing was trimmed)."""
        return self.dropped <= number <= self.next_n

    def ack(self, number: int) -> None:
        """The client has every frame up to ``number``: drop them."""
        frames = self._frames
        while frames and frames[0][0] <= min(number, self.sent):
            n, frame, _ = frames.popleft()
            self._bytes -= len(frame)
            self.dropped = n

    def trim(self, now: float) -> None:
        """Drop sent frames beyond the resume budget (bytes, then age)."""
        frames = self._frames
        while frames and frames[0][0] <= self.sent:
            n, frame, queued = frames[0]
            if self._bytes - self._pending <= RESUME_BYTES and now - queued < RESUME_SECONDS:
                break
            frames.popleft()
            self._bytes -= len(frame)
            self.dropped = n

    # -- streams and polls ---------------------------------------------------------

    def attach(self, stream: asyncio.BaseTransport | None) -> object:
        """A stream or poll takes over (an earlier one ends); returns its token."""
        token = object()
        self.attached = token
        self.stream = stream
        self.touched = self._hub.loop.time()
        if self.conn is not None:
            self.conn.alive()  # any request is the client's sign of life (answers a ping)
        self.wake()
        return token

    def detach(self, token: object) -> None:
        if self.attached is token:
            self.attached = None
            self.stream = None
            self.touched = self._hub.loop.time()

    def wait(self) -> asyncio.Future[None]:
        """A future set when a frame comes, the session ends, or another reader attaches."""
        future = self._reader = self._hub.loop.create_future()
        return future

    def wake(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            if not reader.done():
                reader.set_result(None)

    # -- posts ---------------------------------------------------------------------

    async def post(self, seq: int | None, frames: list[bytes]) -> tuple[bytes, bool]:
        """Hand ``frames`` to the connection loop; (the replies, whether they were applied).

        One POST at a time: a retry of the one in flight waits for it and
        gets its answer, and a ``Collab-Seq`` seen before is not applied again.
        """
        while self._post is not None:
            await asyncio.shield(self._post)
        self.touched = self._hub.loop.time()
        if self.conn is not None:
            self.conn.alive()
        if seq is not None and seq <= self.last_seq:
            if seq < self.last_seq:
                return b"", False
            if isinstance(self.last_reply, bytes):
                return self.last_reply, False
            # A retry whose answer was too big to keep: ask again (only the
            # questions, sync step 1 and awareness queries, nothing is applied).
            frames, seq = self.last_reply, None
        if self.ended is not None:
            return b"", False
        done = self._post = self._hub.loop.create_future()
        self._replies = []
        self._inbound.extend(frames)
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            self._receiver = None
            receiver.set_result(self._inbound.popleft())
        try:
            await asyncio.shield(done)
        finally:
            replies, self._replies = self._replies, None
            self._post = None
        reply = encode_frames(replies or ())
        if seq is not None:
            self.last_seq = seq
            self.last_reply = reply if len(reply) <= KEEP_REPLY_BYTES else questions(frames)
        return reply, True

    def _finish_post(self) -> None:
        done = self._post
        if done is not None and not done.done():
            done.set_result(None)

    # -- the end -------------------------------------------------------------------

    def end(self, code: int, reason: str) -> None:
        """The session is over: wake everyone who waits on it."""
        if self.ended is None:
            self.ended = (code, reason)
            self.ended_at = self._hub.loop.time()
        self._inbound.clear()
        self.wake()
        self._finish_post()
        space, receiver = self._space, self._receiver
        self._space = self._receiver = None
        if space is not None and not space.done():
            space.set_result(None)
        if receiver is not None and not receiver.done():
            receiver.set_result(_GONE)

    def expire(self) -> None:
        """The client left (no stream, poll or POST for the timeout): leave the room."""
        self.end(*EXPIRED)
        # Nobody will read them: a late resume or poll is told 4410 anyway.
        self._frames.clear()
        self._bytes = self._pending = 0


class Sessions:
    """Every HTTP session of one application, and the one timer that tends them."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, Session] = {}
        self.timeout = app[SETTINGS].http_session_timeout
        settings = app[SETTINGS]
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.allowed_origin)
        #: A POST body holds at least one frame of the largest size, with its length.
        self.post_max = settings.max_message_size + 16
        #: (sid, seq) -> reply of POSTs applied without their session (any process).
        self.recent: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.recent_bytes = 0
        self._ticker: asyncio.Task[None] | None = None

    def hello(self, session: Session) -> dict[str, Any]:
        return {
            "sid": session.sid,
            "heartbeat_ms": int(HEARTBEAT * 1000),
            "post_max": self.post_max,
        }

    async def open(self, request: web.Request, name: str, tier: str) -> Session:
        """Authenticate like the WebSocket route, then start the session's connection loop."""
        app = request.app
        metrics = app[METRICS]
        peer = peer_of(request)
        try:
            principal = await authenticate(
                app[HOOKS], request_of(request, name, write=False, transport="http")
            )
        except AuthError as exc:
            exc.report(log, metrics, name, peer)
            raise refusal(exc) from None
        session = Session(self, secrets.token_urlsafe(18), name, tier)
        conn = Connection(
            session,
            doc=name,
            peer=peer,
            limits=app[SEND_LIMITS],
            rate=app[RATE_LIMITS],
            traffic=metrics.traffic,
            can_write=principal.can_write,
            principal=principal,
        )
        conn.expires = principal.expires_at
        session.conn = conn
        self.sessions[session.sid] = session
        session.task = self.loop.create_task(self._serve(session), name=f"collab-http-{conn.id}")
        if self._ticker is None:
            self._ticker = self.loop.create_task(self._tick_forever(), name="collab-http-tick")
        return session

    async def _serve(self, session: Session) -> None:
        assert session.conn is not None
        try:
            await serve(session.conn, session, self.app[LOOP_CONTEXT], "http", label=session.tier)
        finally:
            conn = session.conn
            session.end(conn.close_code or 1006, conn.close_reason)

    def get(self, sid: str | None, name: str) -> Session | None:
        session = self.sessions.get(sid) if sid else None
        return session if session is not None and session.doc == name else None

    # -- the timer -----------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:  # one bad session must not stop the others' keepalives
                log.exception("HTTP session tick failed")

    def tick(self) -> None:
        """Keepalives, streams whose client left, expiry, and the resume budget."""
        now = self.loop.time()
        for sid, session in list(self.sessions.items()):
            if session.ended is not None:
                task = session.task
                # An expired one goes at once; a refused one stays a while, so
                # that a late poll or resume learns its close code, not 4410.
                gone = session.ended == EXPIRED or now - session.ended_at >= self.timeout
                if gone and (task is None or task.done()):
                    del self.sessions[sid]
                continue
            if session.attached is not None:
                stream = session.stream
                if stream is not None and stream.is_closing():
                    session.detach(session.attached)
                    session.wake()  # the handler notices it is no longer attached
                elif now - session.last_out >= HEARTBEAT:
                    session.push(KEEPALIVE)
            elif now - session.touched >= self.timeout:
                session.expire()
            session.trim(now)

    async def close(self) -> None:
        """End every session (1001) and wait for their loops."""
        if self._ticker is not None:
            self._ticker.cancel()
        tasks = []
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.close(CloseCode.GOING_AWAY, "server shutting down")
            session.end(CloseCode.GOING_AWAY, "server shutting down")
            if session.task is not None:
                tasks.append(session.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        self.sessions.clear()


HTTP_SESSIONS = web.AppKey("http_sessions", Sessions)


def refusal(exc: AuthError) -> web.HTTPException:
    """An auth refusal as JSON with the close code a WebSocket would have seen."""
    code = exc.close_code or _CLOSE_OF_STATUS.get(exc.status)
    return error(exc.status, exc.code, exc.reason, code)


#: Ends after which a POST is still applied (without the session): the client
#: is merely between streams.
_CLIENT_GONE = frozenset({EXPIRED[0], CloseCode.NORMAL, CloseCode.GOING_AWAY, 1006})
_CLOSE_OF_STATUS: dict[int, int] = {
    401: CloseCode.UNAUTHORIZED,
    403: CloseCode.FORBIDDEN,
    404: CloseCode.NOT_FOUND,
}
_STATUS_OF_CLOSE: dict[int, int] = {
    CloseCode.MESSAGE_TOO_BIG: 413,
    CloseCode.DOCUMENT_TOO_LARGE: 413,
    CloseCode.RATE_LIMITED: 429,
    CloseCode.UNAUTHORIZED: 401,
    CloseCode.FORBIDDEN: 403,
    CloseCode.NOT_FOUND: 404,
    CloseCode.TRY_AGAIN_LATER: 503,
    CloseCode.GOING_AWAY: 503,
}


def error(status: int, code: str, message: str, close_code: int | None) -> web.HTTPException:
    """An HTTP error with a JSON ``{"error", "message", "close_code"}`` body."""
    headers = {"WWW-Authenticate": 'Bearer realm="collab"'} if status == 401 else None
    exc = web.HTTPException(
        text=json.dumps({"error": code, "message": message, "close_code": close_code}),
        content_type="application/json",
        headers=headers,
    )
    exc.set_status(status)
    return exc


def _check_origin(request: web.Request) -> None:
    # GETs too: a session joins the room, and a cross-site page has no business doing that.
    if not origin_allowed(request, request.app[HTTP_SESSIONS].origins):
        request.app[METRICS].refused("origin")
        raise error(403, "origin_not_allowed", "origin not allowed", CloseCode.FORBIDDEN)


def questions(frames: list[bytes]) -> list[bytes]:
    """The frames that ask for an answer: sync step 1 and awareness queries."""
    return [f for f in frames if f[:2] == b"\x00\x00" or f[:1] == b"\x03"]


def _number(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


# -- handlers ------------------------------------------------------------------------


async def probe_handler(request: web.Request) -> web.Response:
    """Answers without auth: tells "HTTP works, WebSocket blocked" from "offline"."""
    return web.json_response(
        {"ok": True, "transports": ["websocket", *TIERS]}, headers={"Cache-Control": "no-store"}
    )


async def sse_handler(request: web.Request) -> web.StreamResponse:
    """The stream down: one event per frame, resumable with Last-Event-ID."""
    hub = request.app[HTTP_SESSIONS]
    name = document_name(request)
    _check_origin(request)
    sid = request.query.get("sid")
    session: Session | None
    cursor = 0
    if sid is None:
        session = await hub.open(request, name, "sse")
    else:
        session = hub.get(sid, name)
        last = _number(request.headers.get("Last-Event-ID") or request.query.get("last"))
        if session is not None and (last is None or not session.resumable(last)):
            session.expire()  # the frames it missed are gone: a fresh session resyncs
            session = None
        cursor = last or 0
    response = web.StreamResponse(headers=STREAM_HEADERS)
    await response.prepare(request)
    if session is None:
        code, reason = EXPIRED
        await response.write(_event("close", {"code": code, "reason": reason}))
        return response
    await response.write(_event("open", hub.hello(session)))
    token = session.attach(request.transport)
    try:
        while True:
            if session.attached is not token:
                break  # another stream took over, or the client left
            frames = session.after(cursor)
            if frames:
                cursor = frames[-1][0]
                session.last_out = hub.loop.time()
                await response.write(
                    "".join(
                        f"id: {n}\ndata: {base64.b64encode(f).decode()}\n\n" for n, f in frames
                    ).encode()
                )
                continue
            if session.ended is not None:
                code, reason = session.ended
                await response.write(_event("close", {"code": code, "reason": reason}))
                break
            await session.wait()
    except (ConnectionError, RuntimeError):  # the client left mid-write
        pass
    finally:
        session.detach(token)
    return response


async def poll_handler(request: web.Request) -> web.Response:
    """The long-poll tier: every answer completes, so buffering proxies pass it."""
    hub = request.app[HTTP_SESSIONS]
    name = document_name(request)
    _check_origin(request)
    sid = request.query.get("sid")
    if sid is None:
        session = await hub.open(request, name, "poll")
        token = session.attach(None)
        try:
            # The sync step 1 comes once the room is loaded: hand it out at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_POLL_WAIT):
                    while not session.next_n and session.ended is None:
                        await session.wait()
            return _poll_answer(hub, session, 0)
        finally:
            session.detach(token)
    after = _number(request.query.get("after", "0"))
    held = hub.get(sid, name)
    if held is None or after is None or not held.resumable(after):
        code, reason = EXPIRED
        return web.json_response(
            {"sid": sid, "frames": [], "close": {"code": code, "reason": reason}},
            headers=NO_CACHE,
        )
    session = held
    session.ack(after)
    token = session.attach(request.transport)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_WAIT):
                while (
                    session.next_n <= after and session.ended is None and session.attached is token
                ):
                    await session.wait()
        return _poll_answer(hub, session, after)
    finally:
        session.detach(token)


def _poll_answer(hub: Sessions, session: Session, after: int) -> web.Response:
    frames = session.after(after)
    if frames:
        session.last_out = hub.loop.time()
    close = None
    if session.ended is not None and session.next_n <= (frames[-1][0] if frames else after):
        code, reason = session.ended
        close = {"code": code, "reason": reason}
    body = {
        **hub.hello(session),
        "frames": [[n, base64.b64encode(f).decode()] for n, f in frames],
        "close": close,
    }
    return web.json_response(body, headers=NO_CACHE)


async def send_handler(request: web.Request) -> web.Response:
    """Frames up; the answer carries the immediate replies. Any process may take it."""
    hub = request.app[HTTP_SESSIONS]
    name = document_name(request)
    sid = request.query.get("sid") or ""
    seq = _number(request.headers.get("Collab-Seq"))
    session = hub.get(sid, name)
    max_frame = request.app[SETTINGS].max_message_size
    try:
        body = await _read_body(request, hub.post_max)
        frames = decode_frames(body, max_frame)
    except (web.HTTPException, FramingError) as exc:
        # As a WebSocket is closed for an oversized or malformed frame, so is the session.
        code: int
        status: int
        if isinstance(exc, web.HTTPException):
            code, status, reason = (
                CloseCode.MESSAGE_TOO_BIG,
                413,
                f"body above {hub.post_max} bytes",
            )
        elif "limit" in str(exc):
            code, status, reason = CloseCode.MESSAGE_TOO_BIG, 413, str(exc)
        else:
            code, status, reason = CloseCode.PROTOCOL_ERROR, 400, str(exc)
        request.app[METRICS].refused("message_too_big" if status == 413 else "bad_body")
        if session is not None and session.conn is not None:
            session.conn.close(code, reason)
        raise error(status, "too_large" if status == 413 else "bad_body", reason, code) from None
    closing = request.query.get("close") == "1"
    if session is not None and session.ended is None:
        reply, _ = await session.post(seq, frames) if frames or not closing else (b"", False)
        if closing and session.conn is not None:
            # The client's goodbye (a WebSocket's close 1000): it leaves the
            # room and its presence goes now, not at the session's expiry.
            session.conn.close(CloseCode.NORMAL, "client closed")
            return _octets(reply)
        if session.ended is not None and session.ended != EXPIRED:
            code, reason = session.ended
            if code not in (CloseCode.NORMAL, 1006):
                status = _STATUS_OF_CLOSE.get(code, 400)
                raise error(status, "closed", reason, code)
        return _octets(reply)
    if session is not None:  # it ended here
        if seq is not None and seq <= session.last_seq:
            last = session.last_reply
            fresh = isinstance(last, bytes) and seq == session.last_seq
            return _octets(last if fresh and isinstance(last, bytes) else b"")
        assert session.ended is not None
        code, reason = session.ended
        if code not in _CLIENT_GONE:  # refused (4429, 4413...): not again through a side door
            raise error(_STATUS_OF_CLOSE.get(code, 400), "closed", reason, code)
    if closing and not frames:
        return _octets(b"")  # a goodbye for a session held elsewhere: it expires there
    key = (sid, seq) if sid and seq is not None else None
    if key is not None and key in hub.recent:
        hub.recent.move_to_end(key)
        return _octets(hub.recent[key])
    reply = await _apply_without_session(request, name, frames)
    if key is not None:
        # A big answer is not kept: a retry applies again, which changes
        # nothing (the updates are in the document) and stores nothing.
        if len(reply) <= KEEP_REPLY_BYTES:
            hub.recent[key] = reply
            hub.recent_bytes += len(reply)
        while len(hub.recent) > RECENT_POSTS or hub.recent_bytes > RECENT_BYTES:
            _, dropped = hub.recent.popitem(last=False)
            hub.recent_bytes -= len(dropped)
    return _octets(reply)


def _octets(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/octet-stream", headers=NO_CACHE)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, or 413 (with the close code a WebSocket gets) past ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise error(413, "too_large", f"body above {limit} bytes", CloseCode.MESSAGE_TOO_BIG)
    chunks = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise error(413, "too_large", f"body above {limit} bytes", CloseCode.MESSAGE_TOO_BIG)
        chunks.append(chunk)
    return b"".join(chunks)


class _OneShot:
    """The Channel of a short-lived connection: the POST's frames in, its replies out."""

    __slots__ = ("_frames", "_loop", "_release", "_started", "failure", "replies")

    def __init__(self, frames: list[bytes], release: Callable[[], None]) -> None:
        self._frames = deque(frames)
        self._loop = asyncio.get_running_loop()
        self._release = release
        self._started = False
        self.replies: list[bytes] = []
        self.failure: tuple[int, str] | None = None

    async def send(self, frame: bytes) -> None:
        self.replies.append(frame)

    def receive(self) -> Awaitable[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._started:
            # The room's greeting (its sync step 1, everyone's presence) is
            # for a new client: this one has its stream elsewhere.
            self._started = True
            self.replies.clear()
        if self._frames:
            future.set_result(self._frames.popleft())
        else:
            self._release()
            future.set_result(_DONE)
        return future

    def classify(self, raw: Any) -> Received:
        if isinstance(raw, bytes):
            return Received(Kind.BINARY, raw)
        assert isinstance(raw, Received)
        return raw

    async def pong(self, data: bytes) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        self.failure = (code, reason)

    def abort(self) -> None:
        pass


_DONE: Final = Received(Kind.CLOSED, code=CloseCode.NORMAL)


async def _apply_without_session(request: web.Request, name: str, frames: list[bytes]) -> bytes:
    """Apply a POST on a process that does not hold its session.

    The frames go through a connection loop that lives for this request:
    the same auth, limits, hooks and close codes as any connection.  The
    presence it sets stays (owned by nobody here: it expires unless its
    client renews it) and reaches the process holding the stream by
    replication.
    """
    app = request.app
    ctx = app[LOOP_CONTEXT]
    metrics = app[METRICS]
    try:
        principal = await authenticate(
            app[HOOKS], request_of(request, name, write=False, transport="http")
        )
    except AuthError as exc:
        metrics.refused(exc.metric)
        raise refusal(exc) from None

    def release() -> None:
        room = ctx.manager.rooms.get(name)
        member = room.connections.get(conn) if room is not None else None
        if room is not None and member is not None:
            for client_id in list(member.ids):
                room.awareness.release(client_id)

    channel = _OneShot(frames, release)
    conn = Connection(
        channel,
        doc=name,
        peer=peer_of(request),
        limits=app[SEND_LIMITS],
        rate=app[RATE_LIMITS],
        traffic=metrics.traffic,
        can_write=principal.can_write,
        principal=principal,
    )
    await serve(conn, channel, ctx, "http", label="http")
    if channel.failure is not None:
        code, reason = channel.failure
        raise error(_STATUS_OF_CLOSE.get(code, 400), "closed", reason, code)
    return encode_frames(channel.replies)


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HTTP_SESSIONS] = sessions = Sessions(app)
    try:
        yield
    finally:
        await sessions.close()


def setup_http_transport(app: web.Application) -> None:
    """Add the HTTP fallback routes (``/sse``, ``/poll``, ``/send``, ``/transport/probe``)."""
    app.cleanup_ctx.append(_sessions_ctx)
    add_route(app, "GET", "/transport/probe", probe_handler)
    # [\s\S]: "." would not match a newline (%0A) in a document name.
    add_route(app, "GET", r"/sse/{doc:[\s\S]+}", sse_handler)
    add_route(app, "GET", r"/poll/{doc:[\s\S]+}", poll_handler)
    add_route(app, "POST", r"/send/{doc:[\s\S]+}", send_handler)
