"""Tokens and the checks made at the HTTP upgrade, before any socket or room exists.

A token is a JWT signed with HS256 carrying ``doc`` (a document name or a
glob such as ``team-*``), ``mode`` (``read`` or ``write``) and ``exp``.
Browsers cannot set headers on a WebSocket, so ``?token=`` is accepted as
well as ``Authorization: Bearer``.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import jwt
from aiohttp import web

Mode = Literal["read", "write"]
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: documents matching ``doc``, in ``mode``."""

    doc: str
    mode: Mode

    @property
    def can_write(self) -> bool:
        return self.mode == "write"

    def covers(self, name: str) -> bool:
        # fnmatchcase: "Team-*" must not match "team-a" on any platform.
        return fnmatch.fnmatchcase(name, self.doc)


#: Without a secret the server is open: everyone may read and write everything.
OPEN = Grant("*", "write")


class AuthError(Exception):
    """Why a request was refused; ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: Short label for the refused-requests metric.
        self.metric = metric

    def http(self) -> web.HTTPException:
        cls = web.HTTPUnauthorized if self.status == 401 else web.HTTPForbidden
        headers = {"WWW-Authenticate": 'Bearer realm="collab"'} if self.status == 401 else None
        return cls(text=self.reason, headers=headers)


def issue_token(secret: str, doc: str, mode: Mode, ttl: float, *, now: float | None = None) -> str:
    """Sign a token for ``doc`` (name or glob) valid for ``ttl`` seconds."""
    if mode not in ("read", "write"):
        raise ValueError(f"mode must be read or write, not {mode!r}")
    issued = int(now if now is not None else time.time())
    claims = {"doc": doc, "mode": mode, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Grant:
    """The grant a token carries, or ``AuthError`` saying what is wrong with it."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "doc", "mode"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired", "expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "token signature is invalid", "bad_signature") from None
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"token is invalid: {exc}", "bad_token") from None
    doc, mode = claims["doc"], claims["mode"]
    if not isinstance(doc, str) or mode not in ("read", "write"):
        raise AuthError(401, "token claims must be doc: str and mode: read|write", "bad_token")
    return Grant(doc, mode)


def token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token")


def authorize(request: web.Request, secret: str | None, doc: str | None, *, write: bool) -> Grant:
    """Check the request's token for ``doc`` (None: any document); raise ``AuthError``."""
    if secret is None:
        return OPEN
    token = token_of(request)
    if not token:
        raise AuthError(401, "a token is required (?token= or Authorization: Bearer)", "no_token")
    grant = verify_token(secret, token)
    if doc is not None and not grant.covers(doc):
        raise AuthError(403, f"token does not cover document {doc!r}", "wrong_doc")
    if write and not grant.can_write:
        raise AuthError(403, "token is read-only", "read_only")
    return grant


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """Refuse cross-site WebSocket hijacking: a browser's Origin must be ours or allowed.

    Requests without an Origin (bots, curl) are not from a browser page and
    pass; the same origin as the Host header always passes.
    """
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed:
        return
    parts = urlsplit(origin)
    if parts.netloc and parts.netloc == request.host:
        return
    if origin.rstrip("/") in allowed:
        return
    raise AuthError(403, f"origin {origin!r} is not allowed", "origin")
