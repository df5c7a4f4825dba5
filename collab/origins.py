"""Who caused a change to a room's document.

The room tags every mutation with one of these (or with the ``Connection``
the update came from) and decides from it whom to send the change to and
whether to store it: a change is never echoed to the connection it came
from, and what was just loaded from the store is not written back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreOrigin:
    """Loaded from the store: broadcast nothing, store nothing."""


@dataclass(frozen=True, slots=True)
class LocalOrigin:
    """Made by the server itself (HTTP API, CLI import): broadcast and store."""


@dataclass(frozen=True, slots=True)
class PeerOrigin:
    """From another server process through the broker: broadcast locally only.

    The process that received it from a client stores and publishes it;
    doing so again here would store it once per process.
    """


@dataclass(frozen=True, slots=True)
class ServerOrigin:
    """Made by the application's own code (``Server.open_document``): broadcast and store.

    ``name`` says which part of the application (``"assistant"``,
    ``"importer"``); it is the change's author in hooks, webhooks and logs.
    """

    name: str = "server"

    @property
    def author(self) -> str:
        return f"server:{self.name}"


STORE = StoreOrigin()
PEER = PeerOrigin()
LOCAL = LocalOrigin()
