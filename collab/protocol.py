"""The Yjs wire protocol (y-protocols), as pure functions over bytes.

A frame is one WebSocket binary message holding exactly one Yjs message:

    sync       [0, 0, varBytes(state vector)]        sync step 1
               [0, 1, varBytes(update)]              sync step 2
               [0, 2, varBytes(update)]              update
    awareness  [1, varBytes(awareness update)]
    auth       [2, 0, varString(reason)]             permission denied
    query      [3]                                   query awareness

Encoding is delegated to pycrdt; decoding adds the bounds checks pycrdt's
``Decoder`` leaves out, so that every malformed frame ends in a
``ProtocolError`` carrying the close code to answer it with.  Nothing here
does I/O or touches a ``Doc``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeAlias

from pycrdt import (
    Decoder,
    Encoder,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_update_message,
    write_var_uint,
)
from pycrdt._sync import create_sync_step1_message, create_sync_step2_message

from .closecodes import CloseCode


class MessageType(IntEnum):
    """Top-level message kinds of y-protocols (y-websocket's numbering)."""

    SYNC = YMessageType.SYNC
    AWARENESS = YMessageType.AWARENESS
    AUTH = 2
    QUERY_AWARENESS = 3


class ProtocolError(Exception):
    """A frame that cannot be accepted; ``code`` is how to close the socket."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    payload: bytes
    #: The parsed records (decoding validates them anyway; the room reuses them).
    entries: tuple[AwarenessEntry, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    reason: str


Message: TypeAlias = (
    SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | QueryAwareness | PermissionDenied
)

#: A varuint longer than this cannot be a length or client id we accept.
_MAX_VARUINT_BYTES = 10

#: Nesting of JSON (awareness states, embeds, formats) and of values inside a
#: document, beyond which readers recurse too deep: pycrdt's ``to_py`` raises
#: RecursionError past ~1,000 levels and yrs's ``to_json`` overflows the stack
#: (the process dies) past ~100,000.  Real documents nest a few levels.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class AwarenessBounds:
    """What one awareness frame from a client may hold.

    A real awareness state is a few hundred bytes and a client sends its own
    (plus, for the stock y-websocket client, an echo of the states it was
    sent: at most one per person in the room).  The count is read before any
    entry, so a frame announcing 1.5 M entries costs nothing to refuse.
    """

    #: Payload bytes; beyond it the socket is closed with 1009.
    max_bytes: int = 1024 * 1024
    #: Entries; beyond it the socket is closed with 1008.
    max_entries: int = 2048
    #: One state's JSON text; beyond it the socket is closed with 1009.
    max_state_bytes: int = 64 * 1024
    #: JSON nesting of one state; beyond it the socket is closed with 1007.
    max_depth: int = 32


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's record inside an awareness update; ``state`` is raw JSON."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


class _Reader:
    """pycrdt's ``Decoder`` with the truncation checks it does not make."""

    def __init__(self, data: bytes) -> None:
        self._decoder = Decoder(data)

    @property
    def remaining(self) -> int:
        return self._decoder.length

    def var_uint(self, what: str) -> int:
        # Bounded, unlike pycrdt's read_var_uint: a frame of 16 MiB of 0x80
        # bytes must not keep the event loop busy for seconds.
        d = self._decoder
        value = shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if d.length <= 0:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"truncated {what}")
            byte = d.stream[d.i0]
            d.i0 += 1
            d.length -= 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"oversized varint in {what}")

    def var_bytes(self, what: str) -> bytes:
        length = self.var_uint(f"{what} length")
        if length > self.remaining:
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR,
                f"truncated {what}: {length} bytes announced, {self.remaining} present",
            )
        start = self._decoder.i0
        self._decoder.i0 += length
        self._decoder.length -= length
        return bytes(self._decoder.stream[start : start + length])

    def var_string(self, what: str) -> str:
        raw = self.var_bytes(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, f"{what} is not UTF-8") from None

    def end(self, what: str) -> None:
        if self.remaining:
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR, f"{self.remaining} trailing bytes after {what}"
            )


def decode(frame: bytes, *, awareness_bounds: AwarenessBounds | None = None) -> Message:
    """Parse one frame into a typed message, or raise ``ProtocolError``.

    ``awareness_bounds`` limits what an awareness update may hold (the server
    passes them for frames from clients; without them only JSON depth is bounded).
    """
    if not frame:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "empty frame")
    reader = _Reader(frame)
    kind = reader.var_uint("message type")
    message: Message
    if kind == MessageType.SYNC:
        sync_kind = reader.var_uint("sync message type")
        payload = reader.var_bytes("sync payload")
        if sync_kind == YSyncMessageType.SYNC_STEP1:
            message = SyncStep1(payload)
        elif sync_kind == YSyncMessageType.SYNC_STEP2:
            message = SyncStep2(payload)
        elif sync_kind == YSyncMessageType.SYNC_UPDATE:
            message = SyncUpdate(payload)
        else:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown sync message type {sync_kind}")
    elif kind == MessageType.AWARENESS:
        payload = reader.var_bytes("awareness update")
        # Parsing validates before anyone applies it.
        message = AwarenessUpdate(payload, tuple(decode_awareness(payload, awareness_bounds)))
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MessageType.AUTH:
        auth_kind = reader.var_uint("auth message type")
        if auth_kind != 0:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown auth message type {auth_kind}")
        message = PermissionDenied(reader.var_string("auth reason"))
    else:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown message type {kind}")
    reader.end(type(message).__name__)
    return message


def decode_awareness(payload: bytes, bounds: AwarenessBounds | None = None) -> list[AwarenessEntry]:
    """Parse an awareness update, checking that every state is JSON of bounded depth.

    With ``bounds``, an oversized payload or state ends in 1009 and too many
    entries in 1008, both checked before the entries are parsed.
    """
    max_depth = MAX_DEPTH if bounds is None else bounds.max_depth
    max_state = len(payload) if bounds is None else bounds.max_state_bytes
    if bounds is not None and len(payload) > bounds.max_bytes:
        raise ProtocolError(
            CloseCode.MESSAGE_TOO_BIG,
            f"awareness update of {len(payload)} bytes (at most {bounds.max_bytes})",
        )
    reader = _Reader(payload)
    count = reader.var_uint("awareness client count")
    if bounds is not None and count > bounds.max_entries:
        raise ProtocolError(
            CloseCode.POLICY_VIOLATION,
            f"awareness update of {count} entries (at most {bounds.max_entries})",
        )
    # Every entry takes at least three bytes: a count beyond that is a lie.
    if count * 3 > reader.remaining:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"truncated awareness update of {count}")
    entries = []
    for _ in range(count):
        client_id = reader.var_uint("awareness client id")
        clock = reader.var_uint("awareness clock")
        state = reader.var_string("awareness state")
        if state != "null":
            if len(state) > max_state:
                raise ProtocolError(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"awareness state of {client_id} has {len(state)} characters "
                    f"(at most {max_state})",
                )
            check_json(state, max_depth, f"awareness state of {client_id}")
        entries.append(AwarenessEntry(client_id, clock, state))
    reader.end("awareness update")
    return entries


def check_json(text: str, max_depth: int = MAX_DEPTH, what: str = "JSON") -> None:
    """Raise ``ProtocolError`` (1007) unless ``text`` is JSON nested at most ``max_depth`` deep.

    Counting brackets is a fast upper bound of the depth, so ordinary values
    are parsed once; only a text with many brackets has its depth measured.
    """
    try:
        value = json.loads(text)
    except ValueError:
        raise ProtocolError(CloseCode.INVALID_DATA, f"{what} is not JSON") from None
    except RecursionError:  # about 1,000 levels: far beyond any bound
        raise ProtocolError(
            CloseCode.INVALID_DATA, f"{what} is nested deeper than {max_depth} levels"
        ) from None
    if text.count("[") + text.count("{") > max_depth and json_depth(value) > max_depth:
        raise ProtocolError(
            CloseCode.INVALID_DATA, f"{what} is nested deeper than {max_depth} levels"
        )


def json_depth(value: object) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar), without recursion."""
    depth = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            level += 1
            depth = max(depth, level)
            stack.extend((child, level) for child in item if isinstance(child, (list, dict)))
    return depth


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Client id -> clock, from an encoded state vector."""
    reader = _Reader(state_vector)
    count = reader.var_uint("state vector length")
    clocks = {}
    for _ in range(count):
        client = reader.var_uint("state vector client")
        clocks[client] = reader.var_uint("state vector clock")
    reader.end("state vector")
    return clocks


def encode_awareness_entries(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode awareness records as an awareness update payload."""
    items = list(entries)
    encoder = Encoder()
    encoder.write_var_uint(len(items))
    for entry in items:
        encoder.write_var_uint(entry.client_id)
        encoder.write_var_uint(entry.clock)
        raw = entry.state.encode()
        encoder.write_var_uint(len(raw))
        encoder.stream.append(raw)
    return encoder.to_bytes()


def merge_awareness(payloads: Iterable[bytes]) -> bytes:
    """Collapse awareness updates into one that keeps each client's newest record.

    Applying the result has the same effect as applying the inputs in order,
    which lets a lagging connection skip the intermediate cursor positions.
    """
    newest: dict[int, AwarenessEntry] = {}
    for payload in payloads:
        for entry in decode_awareness(payload):
            known = newest.get(entry.client_id)
            # Same rule as y-protocols: a newer clock wins, and at equal clocks
            # a removal wins over a state.
            if (
                known is None
                or entry.clock > known.clock
                or (entry.clock == known.clock and entry.removed)
            ):
                newest[entry.client_id] = entry
    return encode_awareness_entries(newest.values())


def sync_step1(state_vector: bytes) -> bytes:
    return create_sync_step1_message(state_vector)


def sync_step2(update: bytes) -> bytes:
    return create_sync_step2_message(update)


def sync_update(update: bytes) -> bytes:
    return create_update_message(update)


def awareness(payload: bytes) -> bytes:
    return create_awareness_message(payload)


def query_awareness() -> bytes:
    return bytes([MessageType.QUERY_AWARENESS])


def permission_denied(reason: str) -> bytes:
    raw = reason.encode()
    return bytes([MessageType.AUTH, 0]) + write_var_uint(len(raw)) + raw


#: The update of an empty document: a sync step 2 carrying it means "nothing new".
EMPTY_UPDATE = b"\x00\x00"
