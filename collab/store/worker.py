"""Merging a document's snapshot and log into one update, also in a process of its own.

pycrdt holds the GIL while it applies an update (about 0.1 s per MB of a
document made of small edits), so a big merge in a thread of the server
stalls every other document for that long (issue #18, finding 7).  The
server runs big merges in this module as a child process instead::

    python -P .../collab/store/worker.py

It imports only pycrdt and the standard library, reads requests on stdin and
answers on stdout until stdin closes (the server exited or let it go).

A request: ``u32`` number of parts, then per part ``u32`` label length, the
label (UTF-8), ``u64`` data length, the data.  An answer: ``u8`` status (0
merged, 1 a part cannot be decoded), ``u64`` length, then the merged update
or the message (UTF-8).  Integers are little-endian.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Iterable
from typing import IO, Any

from pycrdt import Doc, merge_updates

MERGED = 0
UNDECODABLE = 1

_COUNT = struct.Struct("<I")
_LABEL = struct.Struct("<I")
_DATA = struct.Struct("<Q")
_ANSWER = struct.Struct("<BQ")

#: Parts merged with ``merge_updates`` before they are applied, at most: yrs
#: spends time in proportion to the document on each update appended to it
#: (issue #16: 5,000 appends of 100 bytes, 0.86 s applied one by one, 0.03 s
#: in groups of 100), while merging many at once is quadratic.
GROUP_PARTS = 64
#: ... and bytes of parts in a group.
GROUP_BYTES = 1024 * 1024


class PartError(ValueError):
    """A part cannot be decoded; the message names it by its label."""


def merge_parts(parts: Iterable[tuple[str, bytes]]) -> bytes | None:
    """Apply ``(label, update)`` parts to a fresh ``Doc`` and encode it as one update.

    Applying to a ``Doc`` is linear in the number of parts but each costs
    time in proportion to the document; ``pycrdt.merge_updates`` over many
    inputs is quadratic (20,000 small updates: seconds instead of tens of
    milliseconds).  So small parts are merged in groups of ``GROUP_PARTS``
    and each group applied at once.  None when there are no parts.
    """
    doc: Doc[Any] | None = None
    group: list[tuple[str, bytes]] = []
    size = 0
    for label, update in parts:
        if doc is None:
            doc = Doc()
        group.append((label, update))
        size += len(update)
        if len(group) >= GROUP_PARTS or size >= GROUP_BYTES:
            _apply_group(doc, group)
            group, size = [], 0
    if doc is not None and group:
        _apply_group(doc, group)
    return None if doc is None else doc.get_update()


def _apply_group(doc: Doc[Any], group: list[tuple[str, bytes]]) -> None:
    if len(group) > 1:
        try:
            merged = merge_updates(*(update for _, update in group))
            doc.apply_update(merged)
            return
        except Exception:
            pass  # find the part at fault, one by one (yrs refuses before it integrates)
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
    for label, update in group:
        _apply_part(doc, label, update)


def _apply_part(doc: Doc[Any], label: str, update: bytes) -> None:
    try:
        doc.apply_update(update)
    except Exception as exc:
        raise PartError(f"{label} cannot be decoded: {exc}") from None
    except BaseException as exc:
        # yrs may panic on crafted bytes; pyo3 raises that as a BaseException.
        if type(exc).__name__ != "PanicException":
            raise
        raise PartError(f"{label} cannot be decoded (panic)") from None


def encode_request(parts: Iterable[tuple[str, bytes]]) -> list[bytes]:
    """The request for ``parts`` as chunks (the data is not copied)."""
    chunks: list[bytes] = []
    count = 0
    for label, data in parts:
        raw = label.encode()
        chunks += [_LABEL.pack(len(raw)), raw, _DATA.pack(len(data)), data]
        count += 1
    return [_COUNT.pack(count), *chunks]


def read_answer(stream: IO[bytes]) -> tuple[int, bytes]:
    """``(status, payload)``; EOFError when the worker is gone."""
    status, length = _ANSWER.unpack(_exact(stream, _ANSWER.size))
    return status, _exact(stream, length)


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer requests until ``requests`` is closed."""
    while True:
        try:
            (count,) = _COUNT.unpack(_exact(requests, _COUNT.size))
        except EOFError:
            return
        parts = []
        for _ in range(count):
            (size,) = _LABEL.unpack(_exact(requests, _LABEL.size))
            label = _exact(requests, size).decode()
            (size,) = _DATA.unpack(_exact(requests, _DATA.size))
            parts.append((label, _exact(requests, size)))
        try:
            status, payload = MERGED, merge_parts(parts) or b""
        except PartError as exc:
            status, payload = UNDECODABLE, str(exc).encode()
        del parts
        answers.write(_ANSWER.pack(status, len(payload)))
        answers.write(payload)
        answers.flush()


def _exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"stream ended after {len(data)} of {size} bytes")
    return data


if __name__ == "__main__":
    # EOFError, BrokenPipeError: the server went away mid-request.
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, sys.stdout.buffer)
