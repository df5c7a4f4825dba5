"""A live document opened by server code: ``async with server.open_document(...)``.

The handle joins the same room the sockets use, so its edits merge with
whatever clients type meanwhile, and it keeps the room loaded while open.
Every change made through it (or directly on ``handle.doc``) is broadcast,
replicated to other processes and stored: the room treats an edit that
comes from nowhere it knows as the server's own, never as a load.  Leaving
the block waits until the edits are committed to the store (unless
``durable=False``).

pycrdt counts ``Text`` positions in UTF-8 bytes; the ``insert``,
``delete`` and ``replace`` helpers here take Python character indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from . import text as text_ops
from .origins import ServerOrigin

if TYPE_CHECKING:
    from .room import Room


class DocumentHandle:
    """Server code's view of one open document (see the module docstring)."""

    def __init__(self, room: Room, origin: ServerOrigin) -> None:
        self._room = room
        self.origin = origin

    @property
    def name(self) -> str:
        return self._room.name

    @property
    def doc(self) -> Doc[Any]:
        """The live pycrdt document; edits to it are broadcast and stored."""
        return self._room.doc

    def text(self, root: str = "text") -> Text:
        """The ``Text`` root named ``root`` (the browser editor uses ``text``)."""
        text: Text = self.doc.get(root, type=Text)
        return text

    def map(self, root: str) -> Map[Any]:
        value: Map[Any] = self.doc.get(root, type=Map)
        return value

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group edits into one update attributed to this handle's origin."""
        with self.doc.transaction(origin=self.origin):
            yield

    def insert(self, index: int, value: str, *, root: str = "text") -> None:
        """Insert ``value`` at character ``index`` of the ``root`` text."""
        with self.transaction():
            text_ops.insert(self.text(root), index, value)

    def delete(self, index: int, length: int, *, root: str = "text") -> None:
        """Delete ``length`` characters from character ``index`` of the ``root`` text."""
        with self.transaction():
            text_ops.delete(self.text(root), index, length)

    def replace(self, value: str, *, root: str = "text") -> None:
        """Make the ``root`` text equal ``value`` by a minimal diff (concurrent typing survives)."""
        with self.transaction():
            text_ops.replace(self.text(root), value)

    def append(self, value: str, *, root: str = "text") -> None:
        """Add ``value`` at the end of the ``root`` text."""
        with self.transaction():
            text = self.text(root)
            text_ops.insert(text, len(str(text)), value)

    def __str__(self) -> str:
        return str(self.text())
