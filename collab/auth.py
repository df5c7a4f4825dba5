"""Tokens and the token check made before any socket or room exists.

A token is a JWT signed with HS256 carrying ``mode`` (``read`` or
``write``), ``exp``, and the documents it opens: ``doc``, one document
named exactly, and/or ``doc_pattern``, a glob such as ``team-*``.  Browsers
cannot set headers on a WebSocket, so ``?token=`` is accepted as well as
``Authorization: Bearer``.

``doc`` is always a literal name (issue #18): a token for ``report[1]``
opens ``report[1]`` and nothing else.  Tokens minted before ``doc_pattern``
existed, whose ``doc`` held a glob such as ``team-*``, now open only the
document spelled exactly that way: mint them again with a pattern.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from aiohttp import web

from .closecodes import CloseCode
from .hooks import (
    ANONYMOUS,
    ConnectRequest,
    HookFailed,
    HookRunner,
    Hooks,
    Principal,
    Reject,
    Transport,
)
from .metrics import Metrics

Mode = Literal["read", "write"]
ALGORITHM = "HS256"

#: Characters that made a ``doc`` claim a glob before ``doc_pattern`` existed.
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: ``doc`` exactly and documents matching ``pattern``."""

    doc: str | None
    mode: Mode
    pattern: str | None = None
    #: When the token expires (Unix seconds); open sockets close then.
    expires: float | None = None
    #: Who the token was minted for (the optional ``sub`` and ``name`` claims).
    sub: str | None = None
    name: str | None = None

    @property
    def can_write(self) -> bool:
        return self.mode == "write"

    def covers(self, name: str) -> bool:
        if name == self.doc:
            return True
        # fnmatchcase: "Team-*" must not match "team-a" on any platform.
        return self.pattern is not None and fnmatch.fnmatchcase(name, self.pattern)


#: Without a secret the server is open: everyone may read and write everything.
OPEN = Grant(None, "write", pattern="*")


class AuthError(Exception):
    """Why a request was refused; ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(
        self, status: int, reason: str, metric: str, code: str, *, close_code: int | None = None
    ) -> None:
        super().__init__(reason)
        #: For a WebSocket: refuse by closing with this code after the upgrade.
        self.close_code = close_code
        self.status = status
        self.reason = reason
        #: Short label for the refused-requests metric.
        self.metric = metric
        #: Stable machine-readable code of the JSON error body.
        self.code = code

    def http(self) -> web.HTTPException:
        """The refusal as an HTTP response with a JSON ``{"error", "message"}`` body."""
        cls = _HTTP_ERRORS.get(self.status, web.HTTPForbidden)
        headers = {"WWW-Authenticate": 'Bearer realm="collab"'} if self.status == 401 else None
        return json_error(cls, self.code, self.reason, headers=headers)

    def report(self, log: logging.Logger, metrics: Metrics, doc: str, peer: str) -> None:
        """Count the refusal and log its one line (the same for every transport)."""
        metrics.refused(self.metric)
        log.warning(
            "refused doc=%r peer=%s status=%d reason=%s",
            doc,
            peer,
            self.status,
            self.reason,
            extra={"doc": doc, "peer": peer, "code": self.status, "reason": self.reason},
        )


_HTTP_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


def json_error(
    cls: type[web.HTTPException],
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": code, "message": message}``."""
    return cls(
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


def issue_token(
    secret: str,
    doc: str,
    mode: Mode,
    ttl: float,
    *,
    glob: bool = False,
    sub: str | None = None,
    name: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token valid for ``ttl`` seconds for the document ``doc``.

    With ``glob=True``, ``doc`` is a pattern (``team-*``, ``*``) carried in
    the ``doc_pattern`` claim; ``[`` opens a character class there, so
    ``[[]`` matches a literal ``[``.  ``sub`` (a user id) and ``name`` (a
    display name) say who acts: they appear in logs, hooks and webhooks.
    """
    if mode not in ("read", "write"):
        raise ValueError(f"mode must be read or write, not {mode!r}")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"mode": mode, "iat": issued, "exp": issued + int(ttl)}
    claims["doc_pattern" if glob else "doc"] = doc
    if sub is not None:
        claims["sub"] = sub
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Grant:
    """The grant a token carries, or ``AuthError`` saying what is wrong with it."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired", "expired", "token_expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError(
            401, "token signature is invalid", "bad_signature", "token_invalid"
        ) from None
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"token is invalid: {exc}", "bad_token", "token_invalid") from None
    doc, pattern, mode = claims.get("doc"), claims.get("doc_pattern"), claims.get("mode")
    if (
        not isinstance(doc, str | None)
        or not isinstance(pattern, str | None)
        or (doc is None and pattern is None)
        or mode not in ("read", "write")
    ):
        raise AuthError(
            401,
            "token claims must be doc: str and/or doc_pattern: str, and mode: read|write",
            "bad_token",
            "token_invalid",
        )
    sub, name = claims.get("sub"), claims.get("name")
    if not isinstance(sub, str | None) or not isinstance(name, str | None):
        raise AuthError(
            401, "token claims sub and name must be strings", "bad_token", "token_invalid"
        )
    return Grant(doc, mode, pattern, float(claims["exp"]), sub, name)


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
        raise AuthError(
            401,
            "a token is required (?token= or Authorization: Bearer)",
            "no_token",
            "token_required",
        )
    grant = verify_token(secret, token)
    if doc is not None and not grant.covers(doc):
        reason = f"token does not cover document {doc!r}"
        if grant.doc is not None and _GLOB_CHARS & set(grant.doc):
            reason += (
                f" (its doc {grant.doc!r} names one document exactly; "
                "a glob goes in doc_pattern: collab token --pattern)"
            )
        raise AuthError(403, reason, "wrong_doc", "document_not_allowed")
    if write and not grant.can_write:
        raise AuthError(403, "token is read-only", "read_only", "read_only")
    return grant


# -- the built-in authenticate hook, and the check every route makes ----------------


def principal_of(grant: Grant) -> Principal:
    """The principal a verified token stands for."""
    return Principal(
        grant.sub or "token",
        grant.name,
        grant.can_write,
        frozenset({grant.doc}) if grant.doc is not None else frozenset(),
        (grant.pattern,) if grant.pattern is not None else (),
        grant.expires,
    )


class TokenAuth(Hooks):
    """The JWT tokens of ``--auth-secret`` as an ``authenticate`` hook."""

    name = "tokens"

    def __init__(self, secret: str) -> None:
        self._secret = secret

    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        if not request.token:
            raise Reject(
                CloseCode.UNAUTHORIZED,
                "a token is required (?token= or Authorization: Bearer)",
                error="token_required",
                metric="no_token",
            )
        try:
            grant = verify_token(self._secret, request.token)
        except AuthError as exc:
            raise Reject(
                CloseCode.UNAUTHORIZED, exc.reason, error=exc.code, metric=exc.metric
            ) from None
        if request.doc is not None and not grant.covers(request.doc):
            reason = f"token does not cover document {request.doc!r}"
            if grant.doc is not None and _GLOB_CHARS & set(grant.doc):
                reason += (
                    f" (its doc {grant.doc!r} names one document exactly; "
                    "a glob goes in doc_pattern: collab token --pattern)"
                )
            raise Reject(
                CloseCode.FORBIDDEN, reason, error="document_not_allowed", metric="wrong_doc"
            )
        return principal_of(grant)


class _Cookies(Mapping[str, str]):
    """The request's cookies, parsed only if a hook reads them: aiohttp keeps a parsed
    copy for the life of the request, which for a WebSocket is the connection's."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    def __getitem__(self, key: str) -> str:
        return self._request.cookies[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._request.cookies)

    def __len__(self) -> int:
        return len(self._request.cookies)


def request_of(
    request: web.Request, doc: str | None, *, write: bool, transport: Transport = "http"
) -> ConnectRequest:
    """What ``authenticate`` hooks see of an aiohttp request."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return ConnectRequest(
        doc=doc,
        token=token_of(request),
        headers=request.headers,
        cookies=_Cookies(request),
        query=request.query,
        peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(request.remote or "?"),
        transport=transport,
        write=write,
        request=request,
    )


async def authenticate(
    hooks: HookRunner,
    request: ConnectRequest,
) -> Principal:
    """Run the ``authenticate`` hooks and check the principal against the request.

    No hook at all means an open server (everyone may read and write); hooks
    that all abstain mean nobody was recognised (401).  Raises ``AuthError``.
    """
    try:
        principal = await hooks.authenticate(request)
    except Reject as exc:
        raise AuthError(
            exc.status,
            exc.reason,
            exc.metric,
            exc.error,
            close_code=exc.code if exc.close else None,
        ) from None
    except HookFailed as exc:
        raise AuthError(503, str(exc), "hook_failed", "auth_unavailable") from None
    if principal is None:
        if hooks.wants("authenticate"):
            raise AuthError(401, "not signed in", "unauthenticated", "unauthenticated")
        principal = ANONYMOUS
    if request.doc is not None and not principal.covers(request.doc):
        raise AuthError(
            403,
            f"{principal.label} may not open document {request.doc!r}",
            "wrong_doc",
            "document_not_allowed",
        )
    if request.write and not principal.can_write:
        raise AuthError(403, f"{principal.label} may only read", "read_only", "read_only")
    return principal
