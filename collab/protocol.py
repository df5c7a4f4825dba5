"""The Yjs wire protocol (y-protocols), as pure functions over bytes.

A frame is one WebSocket binary message holding exactly one Yjs message:

    sync       [0, 0, varBytes(state vector)]        sync step 1
               [0, 1, varBytes(update)]              sync step 2
               [0, 2, varBytes(update)]              update
    awareness  [1, varBytes(awareness update)]
    auth       [2, 0, varString(reason)]             permission denied
               [2, 1, varUint(bytes)]                sync progress (collab's own)
    query      [3]                                   query awareness

Encoding is delegated to pycrdt; decoding adds the bounds checks pycrdt's
``Decoder`` leaves out, so that every malformed frame ends in a
``ProtocolError`` carrying the close code to answer it with.  Nothing here
does I/O or touches a ``Doc``.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right, insort
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


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """The server's announcement of an answer in pieces: ``total`` bytes of sync
    frames follow, the last one a sync step 2 (issue #16).

    An auth message of a kind y-protocols has not defined: its
    ``readAuthMessage`` ignores it, so the stock client stays silent (a new
    message type would make y-websocket log "Unable to compute message").
    """

    total: int


Message: TypeAlias = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessUpdate
    | QueryAwareness
    | PermissionDenied
    | SyncProgress
)

#: The auth message kinds: y-protocols' permission denied, and collab's progress.
AUTH_PERMISSION_DENIED = 0
AUTH_SYNC_PROGRESS = 1

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
        if auth_kind == AUTH_PERMISSION_DENIED:
            message = PermissionDenied(reader.var_string("auth reason"))
        elif auth_kind == AUTH_SYNC_PROGRESS:
            message = SyncProgress(reader.var_uint("sync bytes"))
        else:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown auth message type {auth_kind}")
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


def covering_update(ends: dict[int, int]) -> bytes:
    """An update of GC ranges covering clocks ``[0, end)`` of each client.

    ``get_update(covering_update(ends), state)`` holds structs exactly when
    ``state`` lacks part of those ranges: yrs compares them, not Python.
    """
    encoder = Encoder()
    encoder.write_var_uint(len(ends))
    for client, end in ends.items():
        for value in (1, client, 0):  # one struct, of this client, from clock 0
            encoder.write_var_uint(value)
        encoder.stream.append(b"\x00")  # a GC range...
        encoder.write_var_uint(end)  # ...this long
    encoder.write_var_uint(0)  # no deletes
    return encoder.to_bytes()


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
    return bytes([MessageType.AUTH, AUTH_PERMISSION_DENIED]) + write_var_uint(len(raw)) + raw


def sync_progress(total: int) -> bytes:
    return bytes([MessageType.AUTH, AUTH_SYNC_PROGRESS]) + write_var_uint(total)


#: The update of an empty document: a sync step 2 carrying it means "nothing new".
EMPTY_UPDATE = b"\x00\x00"


# -- the shape of an update -------------------------------------------------------------

#: Content kinds of the v1 update encoding (y-protocols' ``contentRefs``).
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
#: Type refs that carry a name (XmlElement, XmlHook); 7 (weak link) is refused.
_NAMED_TYPES = (3, 5)
_KNOWN_TYPES = frozenset({0, 1, 2, 3, 4, 5, 6, 9, 15})

#: Where the items of a client sit, for the items nested below the root types:
#: ``(start clock, end clock, level)`` sorted by start; the level of a root
#: type's items is 1, of the items of a type inside it 2, and so on.
Levels: TypeAlias = dict[int, list[tuple[int, int, int]]]


@dataclass(slots=True)
class UpdateShape:
    """What an update would make a document hold, read without applying it."""

    #: Structs (items and GC ranges): each costs a block in memory.
    structs: int = 0
    #: Items that create a shared type (Map, Array, Text, XML...).
    types: int = 0
    #: Items with a map key.
    keyed: int = 0
    #: Bytes of content (strings, JSON, binary, values).
    content: int = 0
    #: Deepest nesting of a JSON or Any value (0 for scalars).
    value_depth: int = 0
    #: Deepest level of an item (1: in a root type).
    level: int = 1
    #: The update's own items below the root types (see ``Levels``).
    levels: Levels = field(default_factory=dict)
    #: Each client's clock after its last struct, and where the delete set starts.
    ends: dict[int, int] = field(default_factory=dict)
    end: int = 0

    def memory(self) -> int:
        """An estimate of the bytes a document allocates to hold this update.

        Measured with glibc's mallinfo2 around ``apply_update`` (pycrdt 0.14):
        about 215 bytes per item of text, 400 per map entry and 545 per
        nested map, plus the content; rounded up so that it bounds them
        (a flat map of 41 MB is ~1 GiB in memory, a text of 41 MB ~100 MB).
        """
        runs = sum(len(r) for r in self.levels.values())
        return (
            256 * self.structs + 256 * self.keyed + 384 * self.types + 2 * self.content + 128 * runs
        )


def level_in(levels: Levels, client: int, clock: int) -> int:
    """The level of item ``(client, clock)`` in ``levels``; 1 (a root type's) when absent."""
    runs = levels.get(client)
    if runs:
        i = bisect_right(runs, (clock, _INF, _INF)) - 1
        if i >= 0 and clock < runs[i][1]:
            return runs[i][2]
    return 1


def add_levels(levels: Levels, more: Levels) -> None:
    """Merge the runs of ``more`` into ``levels``."""
    for client, runs in more.items():
        mine = levels.get(client)
        if mine is None:
            levels[client] = list(runs)
            continue
        for run in runs:
            last = mine[-1]
            if run[0] >= last[1]:
                if run[0] == last[1] and run[2] == last[2]:
                    mine[-1] = (last[0], run[1], last[2])
                else:
                    mine.append(run)
            else:
                insort(mine, run)


_INF = float("inf")
#: What a value inside Any content costs in memory beyond its bytes (yrs's
#: ``Any`` and, for objects, a hash map entry).
_ANY_VALUE = 64
#: One varuint: continuation bytes, then a last byte.
_VARINT = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]", re.DOTALL)


def scan_update(
    update: bytes, known: Levels | None = None, max_depth: int = MAX_DEPTH
) -> UpdateShape:
    """Read the structs of a v1 update: what it holds and how deeply it nests.

    ``known`` gives the levels of the document's items (an item names its
    parent type, or an item beside it, by id).  Raises ``ProtocolError``
    (1007) for an item or a JSON/Any value nested deeper than ``max_depth``,
    for content kinds collab does not accept (weak links, moves) and for an
    update that does not parse.  About a microsecond per struct: strings
    are skipped, not decoded, and a run of typing resolves its level once.
    """
    shape = UpdateShape()
    try:
        _scan_structs(update, shape, known or {}, max_depth)
    except (IndexError, ValueError):
        raise ProtocolError(CloseCode.INVALID_DATA, "update does not parse") from None
    if shape.level > max_depth:
        raise ProtocolError(
            CloseCode.INVALID_DATA, f"shared types nested deeper than {max_depth} levels"
        )
    return shape


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(_MAX_VARUINT_BYTES):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("oversized varint")


def _scan_structs(data: bytes, shape: UpdateShape, known: Levels, max_depth: int) -> None:
    uint = _uint
    own = shape.levels
    # Items whose reference was not known when they were read: it may name
    # an item that comes later in the update (another client's block).
    unresolved: list[tuple[int, int, int, bool, int, int, bool]] = []
    clients_seen: set[int] = set()
    structs = keyed = types = content = 0
    top = 1

    def level_of(client: int, clock: int) -> int:
        if client in own:
            level = level_in(own, client, clock)
            if level > 1:
                return level
        return level_in(known, client, clock)

    ids: dict[bytes, int] = {}
    match_varint = _VARINT.match

    def client_id(pos: int) -> tuple[int, int]:
        """A client id (8 bytes or so, repeated throughout): decoded once."""
        found = match_varint(data, pos)
        if found is None:
            raise ValueError("oversized varint")
        end = found.end()
        raw = data[pos:end]
        value = ids.get(raw)
        if value is None:
            value = ids[raw] = uint(data, pos)[0]
        return value, end

    def record(client: int, start: int, end: int, level: int) -> None:
        runs = own.get(client)
        if runs is None:
            own[client] = [(start, end, level)]
        elif runs[-1][1] == start and runs[-1][2] == level:
            runs[-1] = (runs[-1][0], end, level)
        else:
            runs.append((start, end, level))

    clients, pos = uint(data, 0)
    for _ in range(clients):
        count, pos = uint(data, pos)
        client, pos = client_id(pos)
        clock, pos = uint(data, pos)
        clients_seen.add(client)
        prev_end = -1
        prev_level = 1
        for _ in range(count):
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (_GC, _SKIP):
                length, pos = uint(data, pos)
                clock += length
                structs += ref == _GC
                prev_end = -1
                continue
            level = 1
            beside = False
            rc = rk = -1
            if info & 0x80:  # origin: the item sits beside it
                rc, pos = client_id(pos)
                rk = data[pos]
                if rk < 0x80:
                    pos += 1
                else:
                    rk, pos = uint(data, pos)
                beside = True
            if info & 0x40:  # right origin
                right_client, pos = client_id(pos)
                right_clock, pos = uint(data, pos)
                if not beside:
                    rc, rk, beside = right_client, right_clock, True
            in_type = False
            if not info & 0xC0:
                parent_info, pos = uint(data, pos)
                if parent_info == 1:  # a root type, by name
                    size, pos = uint(data, pos)
                    pos += size
                else:
                    rc, pos = client_id(pos)
                    rk, pos = uint(data, pos)
                    in_type = True
                if info & 0x20:  # a map key
                    size, pos = uint(data, pos)
                    pos += size
                    keyed += 1
            length = 1
            is_type = False
            if ref == _STRING:
                size = data[pos]
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = uint(data, pos)
                raw = data[pos : pos + size]
                pos += size
                content += size
                length = size if raw.isascii() else len(raw.decode().encode("utf-16-le")) // 2
            elif ref == _DELETED:
                length, pos = uint(data, pos)
            elif ref == _ANY:
                length, pos = uint(data, pos)
                for _ in range(length):
                    pos = _scan_any(data, pos, shape, max_depth)
            elif ref in (_JSON, _EMBED, _FORMAT):
                if ref == _JSON:
                    length, pos = uint(data, pos)
                elif ref == _FORMAT:
                    size, pos = uint(data, pos)
                    pos += size
                for _ in range(length):
                    size, pos = uint(data, pos)
                    text = data[pos : pos + size]
                    pos += size
                    content += size
                    if text.count(b"[") + text.count(b"{") > max_depth and text != b"undefined":
                        check_json(text.decode(), max_depth, "a JSON value in the update")
            elif ref == _TYPE:
                kind, pos = uint(data, pos)
                if kind not in _KNOWN_TYPES:
                    raise ProtocolError(CloseCode.INVALID_DATA, f"unsupported shared type {kind}")
                if kind in _NAMED_TYPES:
                    size, pos = uint(data, pos)
                    pos += size
                is_type = True
                types += 1
            elif ref == _BINARY:
                size, pos = uint(data, pos)
                pos += size
                content += size
            elif ref == _DOC:
                size, pos = uint(data, pos)
                pos += size
                pos = _scan_any(data, pos, shape, max_depth)
            else:
                raise ProtocolError(CloseCode.INVALID_DATA, f"unsupported content kind {ref}")
            if in_type:
                level = level_of(rc, rk) + 1
            elif beside:
                # Typing: the origin is this client's previous item, same level.
                level = prev_level if rc == client and rk == prev_end - 1 else level_of(rc, rk)
            # Only a reference forward (another client's block, or later in
            # this one) may not be known yet.
            if (beside or in_type) and level == 1 + in_type and (rc != client or rk >= clock):
                unresolved.append((client, clock, clock + length, in_type, rc, rk, is_type))
            end = clock + length
            if level > 1:
                record(client, clock, end, level)
            if level + is_type > top:
                top = level + is_type
                if top > max_depth:
                    shape.level = top  # refused by scan_update: read no further
                    return
            prev_end = end
            prev_level = level
            clock = end
            structs += 1
        shape.ends[client] = clock
    # References to items that came later in the update (rare): resolve them
    # until nothing changes.
    pending = [u for u in unresolved if u[4] in clients_seen]
    changed = bool(pending)
    rounds = 0
    while changed and rounds <= len(pending):
        changed = False
        rounds += 1
        for client, start, end, in_type, rc, rk, is_type in pending:
            level = level_of(rc, rk) + in_type
            if level > level_in(own, client, start):
                add_levels(own, {client: [(start, end, level)]})
                top = max(top, level + is_type)
                changed = True
        if top > max_depth:
            break
    shape.end = pos
    shape.structs = structs
    shape.types = types
    shape.keyed = keyed
    shape.content = content
    shape.level = top


def _scan_any(data: bytes, pos: int, shape: UpdateShape, max_depth: int) -> int:
    """Skip one lib0 ``Any`` value, iteratively, checking how deeply it nests."""
    uint = _uint
    # Per open level: values still to read, and whether each comes after a key.
    counts = [1]
    keyed = [False]
    while counts:
        if counts[-1] == 0:
            counts.pop()
            keyed.pop()
            continue
        counts[-1] -= 1
        if keyed[-1]:  # an object's key: a string without a tag
            size, pos = uint(data, pos)
            pos += size
        shape.content += _ANY_VALUE
        tag = data[pos]
        pos += 1
        if tag == 119 or tag == 116:  # string, bytes
            size, pos = uint(data, pos)
            pos += size
            shape.content += size
        elif tag == 125:  # varint
            while data[pos] >= 0x80:
                pos += 1
            pos += 1
        elif tag == 124:
            pos += 4
        elif tag == 123 or tag == 122:
            pos += 8
        elif tag == 118 or tag == 117:  # object or array
            size, pos = uint(data, pos)
            counts.append(size)
            keyed.append(tag == 118)
            depth = len(counts) - 1
            if depth > max_depth:
                raise ProtocolError(
                    CloseCode.INVALID_DATA, f"a value nested deeper than {max_depth} levels"
                )
            if depth > shape.value_depth:
                shape.value_depth = depth
        elif tag < 116:
            raise ValueError(f"unknown Any tag {tag}")
    return pos
