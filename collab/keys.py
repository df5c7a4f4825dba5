"""Typed keys for the state kept on the aiohttp ``Application``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .config import Settings
from .connection import RateLimits, SendLimits
from .hooks import HookRunner
from .loop import Context
from .metrics import Metrics
from .pubsub import Broker
from .rooms import RoomManager
from .store import Store

if TYPE_CHECKING:
    from .server import Server

#: The ``Server`` that built the application (embedders reach it from a request).
SERVER: web.AppKey[Server] = web.AppKey("server")
HOOKS = web.AppKey("hooks", HookRunner)
#: What every connection loop shares (set once the rooms exist).
LOOP_CONTEXT = web.AppKey("loop_context", Context)
SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
MANAGER = web.AppKey("manager", RoomManager)
METRICS = web.AppKey("metrics", Metrics)
#: One pair of limit objects per server, shared by all its connections.
SEND_LIMITS = web.AppKey("send_limits", SendLimits)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


@dataclass(frozen=True, slots=True)
class BrokerSlot:
    """The broker, or None for a single process (an AppKey needs one type)."""

    broker: Broker | None


BROKER = web.AppKey("broker", BrokerSlot)
