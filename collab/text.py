"""Editing a pycrdt ``Text`` with Python string indices.

pycrdt 0.14 counts ``Text`` positions in UTF-8 bytes (``len(text)`` of
``"a👋b"`` is 6), Yjs in UTF-16 code units and Python in code points.
Passing a Python index straight to pycrdt lands an edit in the wrong place,
or inside a multi-byte character, as soon as the text leaves ASCII.  These
helpers take code-point indices, convert them once, and let yrs translate to
what JavaScript peers count.

``replace`` turns "make the text equal this" into the smallest edits it
finds, so whatever other people type elsewhere in the text at the same time
survives: a whole-text delete-and-insert would erase it.
"""

from __future__ import annotations

from collections.abc import Iterator
from difflib import SequenceMatcher
from typing import NamedTuple

from pycrdt import Text

#: Replaced blocks of lines up to this many characters (old plus new) are
#: refined to a character diff; bigger ones are replaced whole (a character
#: diff costs time quadratic in the block size).
CHAR_DIFF_LIMIT = 4000


class Edit(NamedTuple):
    """Replace ``old[start:end]`` with ``insert`` (code-point indices into the old text)."""

    start: int
    end: int
    insert: str


def utf8_offset(s: str, index: int) -> int:
    """The UTF-8 byte offset of character ``index`` of ``s`` (0 <= index <= len(s))."""
    if not 0 <= index <= len(s):
        raise IndexError(f"index {index} out of range for a text of {len(s)} characters")
    if s.isascii():
        return index
    return len(s[:index].encode("utf-8", "surrogatepass"))


def char_index(s: str, offset: int) -> int:
    """The character index in ``s`` of UTF-8 byte ``offset`` (the inverse of ``utf8_offset``)."""
    data = s.encode("utf-8", "surrogatepass")
    if not 0 <= offset <= len(data):
        raise IndexError(f"offset {offset} out of range for a text of {len(data)} bytes")
    if offset < len(data) and data[offset] & 0xC0 == 0x80:
        raise ValueError(f"offset {offset} falls inside a character")
    return len(data[:offset].decode("utf-8", "surrogatepass"))


def length(text: Text) -> int:
    """The number of characters (code points) of ``text``; ``len(text)`` counts bytes."""
    return len(str(text))


def insert(text: Text, index: int, value: str) -> None:
    """Insert ``value`` before character ``index`` of ``text``."""
    if value:
        text.insert(utf8_offset(str(text), index), value)


def delete(text: Text, index: int, length: int) -> None:
    """Delete ``length`` characters of ``text`` from character ``index`` on."""
    if length < 0:
        raise ValueError(f"length must not be negative, not {length}")
    current = str(text)
    if index + length > len(current):
        raise IndexError(
            f"cannot delete {length} characters at {index} of a text of {len(current)}"
        )
    if length:
        start = utf8_offset(current, index)
        end = start + len(current[index : index + length].encode("utf-8", "surrogatepass"))
        del text[start:end]


def replace(text: Text, new: str) -> None:
    """Make ``text`` equal ``new`` by the edits ``edits`` finds, in one transaction.

    Edits are applied back to front, so each one's offsets, counted in the
    old text, still hold when it is applied.  Pass an origin by opening the
    transaction yourself: ``with doc.transaction(origin=...): replace(...)``.
    """
    old = str(text)
    if old == new:
        return
    changes = edits(old, new)
    # Byte offsets of every edit boundary, in one pass over the old text.
    spans: list[tuple[int, int, str]] = []
    position = offset = 0
    for edit in changes:
        offset += _utf8_len(old[position : edit.start])
        start = offset
        offset += _utf8_len(old[edit.start : edit.end])
        spans.append((start, offset, edit.insert))
        position = edit.end
    with text.doc.transaction():
        for start, end, value in reversed(spans):
            if end > start:
                del text[start:end]
            if value:
                text.insert(start, value)


def edits(old: str, new: str) -> list[Edit]:
    """Edits turning ``old`` into ``new``: ascending, non-overlapping, each one non-empty.

    The common prefix and suffix are kept, the middle is diffed by lines,
    and replaced blocks of lines are refined to characters when small
    enough, so a changed word in a long line costs an edit of that word.
    """
    prefix = _common_prefix(old, new)
    suffix = _common_prefix(old[prefix:][::-1], new[prefix:][::-1])
    a, b = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    if not a or not b:
        return [Edit(prefix, prefix + len(a), b)] if a or b else []
    return list(_line_edits(a, b, prefix))


def _line_edits(a: str, b: str, base: int) -> Iterator[Edit]:
    a_lines, b_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    a_starts, b_starts = _starts(a_lines), _starts(b_lines)
    matcher = SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        a0, a1 = a_starts[i1], a_starts[i2]
        b0, b1 = b_starts[j1], b_starts[j2]
        if tag == "replace" and (a1 - a0) + (b1 - b0) <= CHAR_DIFF_LIMIT:
            yield from _char_edits(a[a0:a1], b[b0:b1], base + a0)
        else:
            yield Edit(base + a0, base + a1, b[b0:b1])


def _char_edits(a: str, b: str, base: int) -> Iterator[Edit]:
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            yield Edit(base + i1, base + i2, b[j1:j2])


def _starts(lines: list[str]) -> list[int]:
    """Start offset of each line, plus the total length at the end."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    # Binary search on slice equality: C-speed comparisons, O(n log n) at worst.
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))
