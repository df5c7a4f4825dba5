"""The signed session cookie: ``login.expires.signature`` (HMAC-SHA256).

The cookie names the user and when it stops being valid; nothing else is
kept server-side.  It is ``HttpOnly`` (scripts cannot read it),
``SameSite=Lax`` (another site cannot send it with a POST) and ``Path=/``,
so it also goes with the requests to collab mounted under ``/collab/``: the
editor's WebSocket upgrade and its API calls carry it, and collab's
``authenticate`` hook reads it (see ``hooks.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

COOKIE = "notes_session"
#: A week.
LIFETIME = 7 * 24 * 3600


def sign(secret: bytes, login: str, *, now: float | None = None, lifetime: int = LIFETIME) -> str:
    """A cookie value for ``login``, valid ``lifetime`` seconds."""
    expires = int((time.time() if now is None else now) + lifetime)
    payload = f"{_b64(login.encode())}.{expires}"
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: bytes, value: str | None, *, now: float | None = None) -> str | None:
    """The login a cookie value names, or None when it is missing, forged or expired."""
    if not value or value.count(".") != 2:
        return None
    payload, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    login_b64, expires = payload.split(".")
    try:
        if int(expires) < (time.time() if now is None else now):
            return None
        return base64.urlsafe_b64decode(login_b64 + "=" * (-len(login_b64) % 4)).decode()
    except ValueError:
        return None


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
