"""Typed keys for the state kept on the aiohttp ``Application``."""

from __future__ import annotations

from aiohttp import web

from .config import Settings
from .metrics import Metrics
from .rooms import RoomManager
from .store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
MANAGER = web.AppKey("manager", RoomManager)
METRICS = web.AppKey("metrics", Metrics)
