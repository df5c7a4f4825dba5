"""How the notes app plugs into collab: its users decide who opens what; edits are counted.

``authenticate`` runs for every WebSocket upgrade and every HTTP API call
collab answers (the browser editor makes both).  It reads the app's own
session cookie, so the editor needs no token: the cookie goes with every
same-origin request to ``/collab/...``.

``on_change`` is an observing hook: collab hands it each document's changes
through a queue of its own, so counting words never slows typing down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

import collab
from collab import Change, ConnectRequest, Principal, Reject

from . import sessions
from .db import AppDB

#: A principal's ``documents`` left empty means *every* document, so a user
#: with none gets this name, which collab never opens (names are not empty).
NO_DOCUMENT = ""


def count_words(text: str) -> int:
    """Runs of non-space characters, as collab's editor counts them (same number on the page)."""
    return len(text.split())


@dataclass
class WordCount:
    words: int
    characters: int
    updated_at: float
    #: Who made the last change (principal ids, or "server:assistant").
    authors: tuple[str, ...] = ()
    #: Changes counted since the app started.
    changes: int = 0


class AppHooks(collab.Hooks):
    """The notes app's hooks: sign-in by session cookie, access by the app's table, word counts."""

    #: authenticate runs a query or two in a thread: 5 s is plenty.
    timeout = 5.0

    def __init__(self, db: AppDB, secret: bytes) -> None:
        self.db = db
        self.secret = secret
        #: The latest count per document, kept by ``on_change``.
        self.counts: dict[str, WordCount] = {}
        self._server: collab.Server | None = None
        self._stopping = False

    def bind(self, server: collab.Server) -> None:
        """The server these hooks belong to (``on_change`` reads documents through it)."""
        self._server = server

    def stop(self) -> None:
        """The app is shutting down: count no more (that would load rooms into a closing server)."""
        self._stopping = True

    # -- gating -----------------------------------------------------------------

    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        login = sessions.verify(self.secret, request.cookies.get(sessions.COOKIE))
        user = await self.db.user(login) if login else None
        if user is None:
            # close=True: a browser sees a close code, never the status of a failed upgrade.
            raise Reject(collab.CloseCode.UNAUTHORIZED, "sign in first", close=True)
        roles = await self.db.roles(user.login)
        if request.doc is not None and request.doc not in roles:
            raise Reject(
                collab.CloseCode.FORBIDDEN,
                f"{user.login} has no access to {request.doc!r}",
                close=True,
            )
        role = roles.get(request.doc) if request.doc is not None else None
        if role != "owner" and _deletes(request):
            # collab lets every writer delete; in this app only the owner does.
            raise Reject(collab.CloseCode.FORBIDDEN, "only the owner deletes a note")
        return Principal(
            user.login,
            user.name,
            # A listing (doc None) writes nothing; a viewer's connection is read-only.
            can_write=role in ("owner", "editor") if request.doc is not None else False,
            documents=frozenset(roles) or frozenset({NO_DOCUMENT}),
            data={"role": role},
        )

    # -- observing --------------------------------------------------------------

    async def on_change(self, event: Change) -> None:
        if not self._stopping:
            await self.recount(event.doc, authors=event.authors)

    async def recount(self, doc: str, *, authors: tuple[str, ...] = ()) -> WordCount:
        """Count the words of ``doc`` as it is now (its live room, loaded if need be)."""
        if self._server is None:
            raise RuntimeError("AppHooks.bind(server) was not called")
        # durable=False: only reading, nothing to wait for.
        async with self._server.open_document(doc, durable=False) as handle:
            text = str(handle)
        # Counting a long document is CPU work: off the event loop.
        words = (
            await asyncio.to_thread(count_words, text) if len(text) > 50_000 else count_words(text)
        )
        before = self.counts.get(doc)
        count = WordCount(
            words=words,
            characters=len(text),
            updated_at=time.time(),
            authors=authors or (before.authors if before else ()),
            changes=(before.changes if before else 0) + (1 if authors else 0),
        )
        self.counts[doc] = count
        return count


def _deletes(request: ConnectRequest) -> bool:
    """An HTTP ``DELETE`` of a document (``ConnectRequest`` says "write", not which)."""
    http = request.request
    return request.transport == "http" and isinstance(http, web.Request) and http.method == "DELETE"
