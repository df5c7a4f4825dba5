"""Who is in a room: the awareness states of its clients and who owns each.

Replaces pycrdt's ``Awareness`` on the server, which parses every state into
Python objects (a third decoding of each frame), records a clock even for the
removal of a client id it never saw, and lets anyone change anyone's state.
Here a state stays the JSON text its client sent (it is validated once, when
the frame is decoded), a removal of an unknown id is dropped, and every
client id belongs to the connection that introduced it: no other connection
may change or remove it while that one is open (a read-only client may set
only its own presence).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from . import protocol
from .protocol import AwarenessEntry


class Owner:
    """One connection's side of presence: the client ids it owns now, and how
    many it ever claimed (a client has one; a connection may claim a few)."""

    __slots__ = ("claims", "ids")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.claims = 0


class Presence:
    """Each client id's newest state (raw JSON), its clock, and its owner.

    ``meta`` keeps the clock of a removed id for one timeout, so that a late
    echo of its last state is recognised as old and does not bring it back.
    """

    __slots__ = ("_encoded", "_owners", "max_owned", "meta", "states")

    def __init__(self, *, max_owned: int = 16) -> None:
        self.states: dict[int, str] = {}
        #: client id -> (clock, last updated in ms), live ids and recently removed ones.
        self.meta: dict[int, tuple[int, float]] = {}
        self._owners: dict[int, Owner] = {}
        self.max_owned = max_owned
        #: The encoding of every live state, shared by joiners and queries until a change.
        self._encoded: bytes | None = None

    def state(self, client_id: int) -> Any:
        """The parsed state of ``client_id`` (None when it has none)."""
        raw = self.states.get(client_id)
        return None if raw is None else json.loads(raw)

    def owner(self, client_id: int) -> Owner | None:
        return self._owners.get(client_id)

    def is_news(self, entry: AwarenessEntry) -> bool:
        """Whether ``entry`` changes anything (y-protocols' rule: a newer clock
        wins, and at an equal clock a removal wins over a live state)."""
        known = self.meta.get(entry.client_id)
        if known is None:
            return not entry.removed  # a removal of an id never seen changes nothing
        return entry.clock > known[0] or (
            entry.clock == known[0] and entry.removed and entry.client_id in self.states
        )

    def apply(
        self, entries: Iterable[AwarenessEntry], owner: Owner | None, now_ms: float
    ) -> list[AwarenessEntry]:
        """Apply what is news and allowed; return the entries applied (to relay).

        ``owner`` is the sending connection's record, None for another server
        process (which checked ownership itself and cannot claim ids here).
        Entries for an id another connection owns are dropped, as are new ids
        beyond ``max_owned`` claims.
        """
        applied = []
        for entry in entries:
            if not self.is_news(entry):
                continue  # an echo (the stock client re-sends what it receives) or stale
            client_id = entry.client_id
            current = self._owners.get(client_id)
            if owner is None:
                if current is not None:
                    continue  # a connection here owns it: another process may not change it
            elif current is None:
                if entry.removed or owner.claims >= self.max_owned:
                    continue
                owner.claims += 1
                owner.ids.append(client_id)
                self._owners[client_id] = owner
            elif current is not owner:
                continue
            self._record(entry, now_ms)
            if entry.removed and owner is not None:
                self._disown(client_id)
            applied.append(entry)
        return applied

    def remove_owned(self, owner: Owner, now_ms: float) -> list[AwarenessEntry]:
        """Remove the states ``owner`` introduced (its connection left)."""
        removed = []
        for client_id in list(owner.ids):
            self._disown(client_id)
            if client_id in self.states:
                clock = self.meta[client_id][0]
                entry = AwarenessEntry(client_id, clock, "null")
                self._record(entry, now_ms)
                removed.append(entry)
        return removed

    def release(self, client_id: int) -> None:
        """Forget who owns ``client_id`` and keep its state (it expires unless renewed):
        its client set it through a connection that ended while the client stays
        (an HTTP POST served without its session, issue #15)."""
        self._disown(client_id)

    def expire(self, now_ms: float, timeout_ms: float) -> list[AwarenessEntry]:
        """Remove states not renewed within ``timeout_ms`` and forget old removals."""
        removed = []
        forget = []
        for client_id, (clock, updated) in self.meta.items():
            if now_ms - updated < timeout_ms:
                continue
            if client_id in self.states:
                removed.append(AwarenessEntry(client_id, clock, "null"))
            else:
                forget.append(client_id)
        for client_id in forget:
            del self.meta[client_id]
        for entry in removed:
            self._disown(entry.client_id)
            self._record(entry, now_ms)
        return removed

    def encode_all(self) -> bytes:
        """An awareness update holding every live state (cached until a change)."""
        if self._encoded is None:
            self._encoded = protocol.encode_awareness_entries(
                AwarenessEntry(client_id, self.meta[client_id][0], state)
                for client_id, state in self.states.items()
            )
        return self._encoded

    def _record(self, entry: AwarenessEntry, now_ms: float) -> None:
        if entry.removed:
            self.states.pop(entry.client_id, None)
        else:
            self.states[entry.client_id] = entry.state
        self.meta[entry.client_id] = (entry.clock, now_ms)
        self._encoded = None

    def _disown(self, client_id: int) -> None:
        owner = self._owners.pop(client_id, None)
        if owner is not None and client_id in owner.ids:
            owner.ids.remove(client_id)
