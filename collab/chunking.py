"""Splitting a big update into several valid updates, for a chunked initial sync.

A joiner of a 70 MB document used to get one 70 MB sync step 2.  The stock
y-websocket client closes a socket that received nothing for 30 s, and a
WebSocket message arrives whole or not at all, so over a link slower than
~2.3 MB/s it never synced: it reconnected and the transfer restarted from
byte 0 (y-websocket #203).  Sent as pieces of ``limit`` bytes, each piece
refreshes that timer, is integrated on arrival (so the client's state vector
moves on and a reconnect asks only for the rest), and leaves the socket free
for awareness and live updates in between (design notes, section 4).

``split_update`` reads the v1 encoding (``numClients``, then per client
``numStructs, client, clock`` and its structs, then the delete set; the
layout of ``YJS src/utils/encoding.js readClientsStructRefs``) and cuts it at
struct boundaries.  Both splits of the design notes are this one walk: small
clients are packed together into one piece (the per-client split) and a
client holding most of the bytes is cut into clock ranges (the struct-range
split).  Invariants, pinned by ``tests/test_chunking.py``:

- every piece is a valid update, and the pieces merge back to the input;
- a client appears at most once per piece (Yjs keys a piece's structs by
  client: a second run would overwrite the first), with its structs in
  clock order;
- pieces come in causal order: a struct's origin, right origin and parent
  are in an earlier piece, in the same piece, or not in the update at all
  (the receiver has them), so each piece integrates as it arrives instead
  of waiting in the receiver's pending store;
- the delete set comes only in the last pieces;
- a piece is at most ``limit`` bytes unless it holds one struct bigger
  than that (an item is never sliced).

Pure Python, about a microsecond per struct: big documents are split in a
thread (``Room`` does that).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

#: Content kinds of the v1 encoding (y-protocols' ``contentRefs``).
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
#: Type refs followed by a name (XmlElement, XmlHook).
_NAMED_TYPES = (3, 5)
#: Bytes a piece's header may take per client (three varuints).
_HEADER = 3 * 10
#: What a piece without a delete set ends with: no deletes.
_NO_DELETES = b"\x00"


class SplitError(ValueError):
    """The input is not a v1 update this module can read."""


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 70:
            raise SplitError("oversized varint")


def _skip_string(data: bytes, pos: int) -> int:
    size, pos = _uint(data, pos)
    return pos + size


def _skip_any(data: bytes, pos: int) -> int:
    """Skip one lib0 ``Any`` value (iteratively: no recursion limit to hit)."""
    todo = 1
    stack: list[tuple[int, bool]] = []
    keyed = False
    while True:
        while todo == 0:
            if not stack:
                return pos
            todo, keyed = stack.pop()
        todo -= 1
        if keyed:
            pos = _skip_string(data, pos)
        tag = data[pos]
        pos += 1
        if tag == 119 or tag == 116:  # string, bytes
            pos = _skip_string(data, pos)
        elif tag == 125:  # varint
            while data[pos] >= 0x80:
                pos += 1
            pos += 1
        elif tag == 124:  # float32
            pos += 4
        elif tag == 123 or tag == 122:  # float64, bigint
            pos += 8
        elif tag == 118 or tag == 117:  # object, array
            size, pos = _uint(data, pos)
            stack.append((todo, keyed))
            todo, keyed = size, tag == 118
        elif tag < 116:
            raise SplitError(f"unknown Any tag {tag}")


def write_uint(value: int) -> bytes:
    """A lib0 varuint."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(slots=True)
class _Block:
    """One client's structs in the update: where each starts, in bytes and in clock."""

    client: int
    #: What ``offsets`` index: the update, or this block's structs re-encoded
    #: (when long strings were sliced).
    data: bytes = b""
    #: Byte offset of each struct, then the end of the last one.
    offsets: array[int] = field(default_factory=lambda: array("q"))
    #: Clock of each struct, then the clock after the last one.
    clocks: array[int] = field(default_factory=lambda: array("q"))
    #: Struct index -> ids of other clients it needs (origin, right origin, parent).
    deps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.offsets) - 1


def _read(update: bytes, piece: int) -> tuple[list[_Block], int]:
    """The blocks of ``update`` and where its delete set starts; strings longer
    than ``piece`` bytes are sliced into several items (see ``_slice``)."""
    data = update
    uint = _uint
    blocks: list[_Block] = []
    clients, pos = uint(data, 0)
    for _ in range(clients):
        count, pos = uint(data, pos)
        client, pos = uint(data, pos)
        clock, pos = uint(data, pos)
        block = _Block(client, data)
        offsets, clocks, deps = block.offsets, block.clocks, block.deps
        long: list[_Long] = []
        for index in range(count):
            offsets.append(pos)
            clocks.append(clock)
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (_GC, _SKIP):
                length, pos = uint(data, pos)
                clock += length
                continue
            right = b""
            needs: list[tuple[int, int]] | None = None
            if info & 0x80:  # origin
                oc, pos = uint(data, pos)
                ok, pos = uint(data, pos)
                if oc != client:
                    needs = [(oc, ok)]
            if info & 0x40:  # right origin
                right_at = pos
                rc, pos = uint(data, pos)
                rk, pos = uint(data, pos)
                right = data[right_at:pos]
                if rc != client:
                    needs = [(rc, rk)] if needs is None else [*needs, (rc, rk)]
            if not info & 0xC0:
                parent_info, pos = uint(data, pos)
                if parent_info == 1:  # a root type, by name
                    pos = _skip_string(data, pos)
                else:
                    pc, pos = uint(data, pos)
                    pk, pos = uint(data, pos)
                    if pc != client:
                        needs = [(pc, pk)]
                if info & 0x20:  # a map key
                    pos = _skip_string(data, pos)
            if needs is not None:
                deps[index] = needs
            length = 1
            if ref == _STRING:
                content_at = pos
                size, pos = uint(data, pos)
                raw = data[pos : pos + size]
                pos += size
                if len(raw) != size:
                    raise SplitError("truncated string")
                length = size if raw.isascii() else _utf16_length(raw)
                if size > piece:
                    long.append(_Long(index, content_at, pos - size, pos, info, right))
            elif ref == _DELETED:
                length, pos = uint(data, pos)
            elif ref == _ANY:
                length, pos = uint(data, pos)
                for _ in range(length):
                    pos = _skip_any(data, pos)
            elif ref == _JSON:
                length, pos = uint(data, pos)
                for _ in range(length):
                    pos = _skip_string(data, pos)
            elif ref == _EMBED:
                pos = _skip_string(data, pos)
            elif ref == _FORMAT:
                pos = _skip_string(data, _skip_string(data, pos))
            elif ref == _TYPE:
                kind, pos = uint(data, pos)
                if kind in _NAMED_TYPES:
                    pos = _skip_string(data, pos)
            elif ref == _BINARY:
                pos = _skip_string(data, pos)
            elif ref == _DOC:
                pos = _skip_any(data, _skip_string(data, pos))
            else:
                raise SplitError(f"unknown content kind {ref}")
            clock += length
        offsets.append(pos)
        clocks.append(clock)
        if pos > len(data):
            raise SplitError("truncated update")
        blocks.append(_slice(block, long, piece) if long else block)
    return blocks, pos


def _utf16_length(raw: bytes) -> int:
    """The length of a UTF-8 string in UTF-16 units: Yjs clocks count those."""
    return len(raw.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True, slots=True)
class _Long:
    """A string item too long for one piece: where its parts are."""

    index: int
    #: Where its content (the string's length, then the string) starts.
    content: int
    text: int
    end: int
    info: int
    #: The encoded right origin, if it has one.
    right: bytes


def _slice(block: _Block, long: list[_Long], piece: int) -> _Block:
    """``block`` with each long string item cut into items of about ``piece`` bytes.

    The first part keeps the item's header (origins, parent); every later
    part is an item whose origin is the last character before it and whose
    right origin is the item's, which is how Yjs itself splits an item
    (``splitItem``) and how yrs trims the first block of a diff.  Cuts fall
    between characters, never inside a UTF-8 sequence or a surrogate pair.
    """
    data = block.data
    out = _Block(block.client)
    body = bytearray()
    by_index = {item.index: item for item in long}
    client = write_uint(block.client)
    for index in range(block.count):
        start, stop = block.offsets[index], block.offsets[index + 1]
        clock = block.clocks[index]
        needs = block.deps.get(index)
        item = by_index.get(index)
        if item is None:
            out.offsets.append(len(body))
            out.clocks.append(clock)
            if needs is not None:
                out.deps[len(out.offsets) - 1] = needs
            body += data[start:stop]
            continue
        at = item.text
        first = True
        while at < item.end:
            cut = min(at + piece, item.end)
            while cut < item.end and data[cut] & 0xC0 == 0x80:
                cut -= 1  # not inside a UTF-8 sequence
            text = data[at:cut]
            out.offsets.append(len(body))
            out.clocks.append(clock)
            if needs is not None:
                out.deps[len(out.offsets) - 1] = needs
            if first:
                body += data[start : item.content]
            else:
                body.append(0x80 | (item.info & 0x40) | _STRING)
                body += client + write_uint(clock - 1) + item.right
            body += write_uint(len(text)) + text
            clock += len(text) if text.isascii() else _utf16_length(text)
            at = cut
            first = False
    out.offsets.append(len(body))
    out.clocks.append(block.clocks[-1])
    out.data = bytes(body)
    return out


def _split_delete_set(data: bytes, start: int, limit: int) -> list[bytes]:
    """The delete set ``data[start:]`` as delete sets of at most ``limit`` bytes
    (a client's ranges may be spread over several), each in the encoding that
    follows the structs."""
    uint = _uint
    clients, pos = uint(data, start)
    pieces: list[bytes] = []
    current: list[bytes] = []  # encoded (client, ranges) entries
    size = 0
    for _ in range(clients):
        client, pos = uint(data, pos)
        count, pos = uint(data, pos)
        head = write_uint(client)
        ranges: list[bytes] = []
        for _ in range(count):
            begin = pos
            _, pos = uint(data, pos)
            _, pos = uint(data, pos)
            ranges.append(data[begin:pos])
        taken = 0
        while taken < len(ranges):
            # As many of this client's ranges as fit into the current piece
            # (room for the piece's client count and this entry's range count).
            room = limit - 12 - size - len(head)
            n = used = 0
            while taken + n < len(ranges) and used + len(ranges[taken + n]) <= room:
                used += len(ranges[taken + n])
                n += 1
            if n == 0:
                if current:  # start another piece
                    pieces.append(write_uint(len(current)) + b"".join(current))
                    current, size = [], 0
                    continue
                n = 1  # a limit smaller than one range: one range per piece
            entry = head + write_uint(n) + b"".join(ranges[taken : taken + n])
            current.append(entry)
            size += len(entry)
            taken += n
    if current or not pieces:
        pieces.append(write_uint(len(current)) + b"".join(current))
    return pieces


def split_update(update: bytes, limit: int) -> list[bytes]:
    """``update`` as valid updates of at most ``limit`` bytes each (see the module
    docstring); ``[update]`` when it is that small already.  ``SplitError`` when
    it cannot be read."""
    if len(update) <= limit:
        return [update]
    try:
        blocks, ds_start = _read(update, max(limit - 2 * _HEADER, 16))
        deletes = _split_delete_set(update, ds_start, limit)
    except IndexError:
        raise SplitError("truncated update") from None
    # How far each client is sent: its clock after the pieces so far.
    sent: dict[int, int] = {b.client: b.clocks[0] for b in blocks}
    starts = dict(sent)
    index = {b.client: 0 for b in blocks}  # next struct of each block
    pieces: list[bytes] = []

    def ready(client: int, clock: int) -> bool:
        """Whether the receiver will have ``(client, clock)``: sent, or not ours to send."""
        start = starts.get(client)
        return start is None or clock < start or clock < sent[client]

    remaining = [b for b in blocks if b.count]
    while remaining:
        budget = limit
        parts: dict[int, tuple[_Block, int, int]] = {}
        full = False
        progress = True
        while progress and not full:
            progress = False
            for block in remaining:
                client = block.client
                i = first = index[client]
                n = block.count
                if i >= n:
                    continue
                offsets, clocks, deps = block.offsets, block.clocks, block.deps
                header = 0 if client in parts else _HEADER
                while i < n:
                    needs = deps.get(i)
                    if needs is not None and not all(ready(c, k) for c, k in needs):
                        break
                    size = offsets[i + 1] - offsets[i] + (header if i == first else 0)
                    if size > budget and (parts or i > first):
                        full = True
                        break
                    budget -= size
                    i += 1
                    sent[client] = clocks[i]
                if i > first:
                    begin = parts[client][1] if client in parts else first
                    parts[client] = (block, begin, i)
                    index[client] = i
                    progress = True
                if full:
                    break
        if not parts:
            # Every next struct waits for one not sent yet: impossible in a
            # document yrs encoded, so this is a crafted update. Any order
            # still converges (the receiver keeps it pending): send one on.
            block = remaining[0]
            i = index[block.client]
            parts[block.client] = (block, i, i + 1)
            index[block.client] = i + 1
            sent[block.client] = block.clocks[i + 1]
        out = [write_uint(len(parts))]
        for block, begin, end in parts.values():
            out.append(write_uint(end - begin))
            out.append(write_uint(block.client))
            out.append(write_uint(block.clocks[begin]))
            out.append(block.data[block.offsets[begin] : block.offsets[end]])
        out.append(_NO_DELETES)
        pieces.append(b"".join(out))
        remaining = [b for b in remaining if index[b.client] < b.count]
    # The delete set last: with the last structs when it fits.
    first_ds = deletes[0]
    if pieces and len(pieces[-1]) - 1 + len(first_ds) <= limit:
        pieces[-1] = pieces[-1][:-1] + first_ds
        deletes = deletes[1:]
    pieces.extend(b"\x00" + ds for ds in deletes)
    return pieces
