"""The Python client's transports: a WebSocket, or HTTP where WebSockets are blocked.

A *link* carries the frames of one connection: ``send_all`` hands frames to
the server, ``receive`` returns the next frame or None once the link is
closed (``close_code`` / ``close_reason`` say how).  The session
(``client.py``) runs the Yjs protocol over whichever link it got; the wire
format of the HTTP tiers is in ``docs/transports.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import aiohttp

from .closecodes import CloseCode
from .framing import FramingError, decode_frames, encode_frames

log = logging.getLogger("collab.client")

#: Seconds the stream's ``open`` event may take before the stream is deemed
#: buffered by a proxy (the long-poll tier is used then).
OPEN_TIMEOUT = 5.0
#: Times a POST or a poll is retried after a network error before the link is given up.
RETRIES = 4
#: Seconds a POST may take.
POST_TIMEOUT = 30.0
#: A stream silent for this many heartbeats is dead (the server sends one every 10 s).
SILENT_HEARTBEATS = 2.5


class Link(Protocol):
    close_code: int | None
    close_reason: str

    @property
    def closed(self) -> bool: ...

    async def send_all(self, frames: Sequence[bytes]) -> None: ...

    async def receive(self) -> bytes | None: ...

    async def close(self) -> None: ...


class HttpRefused(Exception):
    """The server refused an HTTP request of the fallback transport."""

    def __init__(self, status: int, message: str, close_code: int | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.close_code = close_code


class Buffered(Exception):
    """The stream's ``open`` event did not come in time: a proxy buffers it."""


def http_urls(ws_url: str) -> tuple[str, str] | None:
    """(document path prefix ``http(s)://H/P/``, the name part) of a ``ws(s)://H/P/ws/NAME`` URL."""
    scheme, sep, rest = ws_url.partition("://")
    if not sep or scheme not in ("ws", "wss"):
        return None
    at = rest.rfind("/ws/")
    if at == -1:
        return None
    http = "http" if scheme == "ws" else "https"
    return f"{http}://{rest[: at + 1]}", rest[at + 4 :]


class WebSocketLink:
    """aiohttp's client WebSocket as a link."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send_all(self, frames: Sequence[bytes]) -> None:
        for frame in frames:
            await self._ws.send_bytes(frame)

    async def receive(self) -> bytes | None:
        ws = self._ws
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                return data
            if msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_reason = msg.extra if isinstance(msg.extra, str) else ""
                await ws.close()
                break
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        self.close_code = ws.close_code
        return None

    async def close(self) -> None:
        await self._ws.close()
        self.close_code = self._ws.close_code


async def _refusal(response: aiohttp.ClientResponse) -> HttpRefused:
    try:
        body = json.loads(await response.text())
    except (ValueError, aiohttp.ClientError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    close_code = body.get("close_code")
    message = str(body.get("message") or response.reason or "")
    return HttpRefused(
        response.status, message, close_code if isinstance(close_code, int) else None
    )


class HttpLink:
    """The HTTP fallback: frames down by a stream (``sse``) or long-polls (``poll``),
    up by POSTs with a ``Collab-Seq``; a dropped stream resumes with Last-Event-ID."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base: str,
        name: str,
        tier: str,
        headers: Mapping[str, str],
    ) -> None:
        self._http = http
        self._base = base
        self._name = name
        self.tier = tier
        self._headers = dict(headers)
        self._frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0
        self._last = 0
        self.sid = ""
        self.heartbeat = 10.0
        self.close_code: int | None = None
        self.close_reason = ""
        self._closed = False
        #: How often the stream was resumed, and whether it is open now.
        self.resumes = 0
        self.streaming = False

    def _url(self, kind: str) -> str:
        return f"{self._base}{kind}/{self._name}"

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        ws_url: str,
        tier: str,
        headers: Mapping[str, str],
        open_timeout: float = OPEN_TIMEOUT,
    ) -> HttpLink:
        """A link of ``tier`` ("sse" or "poll"); ``Buffered`` when the stream does not open."""
        urls = http_urls(ws_url)
        if urls is None:
            raise ValueError(f"{ws_url} has no /ws/ segment to map to HTTP")
        link = cls(http, *urls, tier, headers)
        if tier == "sse":
            await link._open_stream(open_timeout)
        else:
            await link._open_poll()
        return link

    # -- down ------------------------------------------------------------------

    async def _open_stream(self, open_timeout: float) -> None:
        response: aiohttp.ClientResponse | None = None
        try:
            # The headers count too: a buffering proxy holds them with the events.
            async with asyncio.timeout(open_timeout):
                response = await self._http.get(
                    self._url("sse"),
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                )
                if response.status != 200:
                    raise await _refusal(response)
                events = _events(response)
                name, data = await anext(events)
        except TimeoutError:
            if response is not None:
                response.close()
            raise Buffered(f"no open event within {open_timeout:g} s") from None
        except BaseException:
            if response is not None:
                response.close()
            raise
        if name == "close":
            response.close()
            self._end_with(data)
            raise _Expired()
        hello = json.loads(data)
        self.sid = hello["sid"]
        self.heartbeat = hello.get("heartbeat_ms", 10000) / 1000
        self._reader = asyncio.create_task(self._stream(response, events))

    async def _stream(self, response: aiohttp.ClientResponse, events: Any) -> None:
        """Read the stream; when it breaks, resume it from the last event id."""
        failures = 0
        self.streaming = True
        try:
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat * SILENT_HEARTBEATS):
                        name, data = await anext(events)
                    failures = 0
                except (StopAsyncIteration, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    response.close()
                    self.streaming = False
                    failures += 1
                    if failures > RETRIES:
                        self._end(1006, f"stream lost: {exc!r}")
                        return
                    await asyncio.sleep(0.1 * 2**failures)
                    try:
                        response, events = await self._resume()
                        self.streaming = True
                    except _Expired:
                        return
                    except (aiohttp.ClientError, OSError, TimeoutError, Buffered):
                        continue
                    except HttpRefused as refused:
                        self._end(refused.close_code or 1006, refused.message)
                        return
                    continue
                if name == "close":
                    self._end_with(data)
                    return
                if name == "message":
                    frame_id, payload = data
                    if frame_id:
                        self._last = int(frame_id)
                    self._frames.put_nowait(base64.b64decode(payload))
        finally:
            self.streaming = False
            response.close()

    async def _resume(self) -> tuple[aiohttp.ClientResponse, Any]:
        headers = {**self._headers, "Last-Event-ID": str(self._last)}
        response = await self._http.get(
            self._url("sse"),
            params={"sid": self.sid},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        try:
            if response.status != 200:
                raise await _refusal(response)
            events = _events(response)
            async with asyncio.timeout(OPEN_TIMEOUT):
                name, data = await anext(events)
        except BaseException:
            response.close()
            raise
        if name == "close":
            response.close()
            self._end_with(data)
            raise _Expired()
        self.resumes += 1
        return response, events

    async def _open_poll(self) -> None:
        body = await self._poll({})
        self.sid = body["sid"]
        self.heartbeat = body.get("heartbeat_ms", 10000) / 1000
        self._take(body)
        if self.close_code is None:
            self._reader = asyncio.create_task(self._polls())

    async def _poll(self, params: Mapping[str, str]) -> dict[str, Any]:
        async with self._http.get(
            self._url("poll"),
            params=params,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
        ) as response:
            if response.status != 200:
                raise await _refusal(response)
            body: dict[str, Any] = await response.json()
            return body

    async def _polls(self) -> None:
        failures = 0
        while self.close_code is None:
            try:
                body = await self._poll({"sid": self.sid, "after": str(self._last)})
            except HttpRefused as refused:
                self._end(refused.close_code or 1006, refused.message)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                failures += 1
                if failures > RETRIES:
                    self._end(1006, f"poll failed: {exc!r}")
                    return
                await asyncio.sleep(0.1 * 2**failures)
                continue
            failures = 0
            self._take(body)

    def _take(self, body: dict[str, Any]) -> None:
        for number, payload in body.get("frames") or ():
            self._last = max(self._last, int(number))
            self._frames.put_nowait(base64.b64decode(payload))
        close = body.get("close")
        if close:
            self._end(int(close.get("code", 1006)), str(close.get("reason", "")))

    def _end_with(self, data: str) -> None:
        try:
            close = json.loads(data)
            self._end(int(close["code"]), str(close.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            self._end(1006, "bad close event")

    def _end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._frames.put_nowait(None)

    # -- up --------------------------------------------------------------------

    async def send_all(self, frames: Sequence[bytes]) -> None:
        """POST the frames (retried with the same Collab-Seq); queue the replies."""
        if self.close_code is not None:
            raise ConnectionError("link closed")
        self._seq += 1
        headers = {
            **self._headers,
            "Collab-Seq": str(self._seq),
            "Content-Type": "application/octet-stream",
        }
        body = encode_frames(frames)
        failures = 0
        while True:
            try:
                async with self._http.post(
                    self._url("send"),
                    params={"sid": self.sid},
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT),
                ) as response:
                    if response.status != 200:
                        refused = await _refusal(response)
                        if response.status >= 500 and failures < RETRIES:
                            failures += 1
                            await asyncio.sleep(0.1 * 2**failures)
                            continue
                        self._end(refused.close_code or CloseCode.PROTOCOL_ERROR, refused.message)
                        raise ConnectionError(str(refused))
                    replies = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                failures += 1
                if failures > RETRIES or self.close_code is not None:
                    raise
                await asyncio.sleep(0.1 * 2**failures)
                continue
            try:
                for frame in decode_frames(replies):
                    self._frames.put_nowait(frame)
            except FramingError as exc:
                log.warning("bad POST answer from %s: %s", self._base, exc)
            return

    # -- the link ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def receive(self) -> bytes | None:
        return await self._frames.get()

    async def close(self) -> None:
        if self.close_code is None and self.sid:
            # Say goodbye, so the server drops our presence now rather than
            # when the session expires; best effort (we may be offline).
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self._http.post(
                    self._url("send"),
                    params={"sid": self.sid, "close": "1"},
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=2),
                ):
                    pass
        self._end(CloseCode.NORMAL, "")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class _Expired(ConnectionError):
    """The session is gone (4410): the link ended; the session starts a new one."""


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Server-Sent Events of ``response``: ("open"|"close", data) or ("message", (id, data))."""
    buffer = b""
    content = response.content
    while True:
        while b"\n\n" not in buffer:
            chunk = await content.readany()
            if not chunk:
                return
            buffer += chunk
        raw, buffer = buffer.split(b"\n\n", 1)
        name, frame_id, data = "message", "", []
        for line in raw.decode().split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                frame_id = value
            elif field == "data":
                data.append(value)
        if not data and name == "message":
            continue  # a comment
        text = "\n".join(data)
        yield (name, (frame_id, text) if name == "message" else text)
