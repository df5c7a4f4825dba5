"""``POST /api/tokens``: a token holder mints share links for its own documents, never wider.

The new token copies every claim of the caller's token that says which
documents it opens (``doc``, ``doc_pattern``, and any claim a later version
adds), so it opens exactly what the caller's opens.  Its mode is at most
the caller's (a read token cannot mint a write token) and it expires no
later than the caller's.  On an open server (no ``--auth-secret``) there is
nothing to mint: 404 ``auth_disabled`` tells the editor that links need no
token.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jwt
from aiohttp import web

from .apierror import ApiError, json_object
from .auth import ALGORITHM, AuthError, authorize, token_of
from .keys import METRICS, SETTINGS

routes = web.RouteTableDef()

#: Claims the new token sets itself; every other claim is copied.
_OWN_CLAIMS = frozenset({"mode", "iat", "exp", "nbf"})


@routes.post("/api/tokens")
async def mint_token(request: web.Request) -> web.Response:
    secret = request.app[SETTINGS].auth_secret
    if secret is None:
        raise ApiError(
            404, "auth_disabled", "this server has no --auth-secret: links need no token"
        )
    try:
        grant = authorize(request, secret, None, write=False)
    except AuthError as exc:
        request.app[METRICS].refused(exc.metric)
        raise exc.http() from None
    body = await json_object(request)
    mode = body.get("mode")
    if mode not in ("read", "write"):
        raise ApiError(400, "invalid_mode", "mode must be read or write")
    if mode == "write" and not grant.can_write:
        raise ApiError(403, "read_only", "a read-only token cannot mint a write token")
    ttl = body.get("ttl")
    if ttl is not None and (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not math.isfinite(ttl)
        or ttl <= 0
    ):
        raise ApiError(400, "invalid_ttl", "ttl must be a positive number of seconds")
    token = token_of(request)
    assert token is not None  # authorize() refused a request without one
    # Verified by authorize() just now; read again for the claims Grant does not keep.
    claims: dict[str, Any] = jwt.decode(token, secret, algorithms=[ALGORITHM])
    now = int(time.time())
    expires = int(claims["exp"])  # never later than the caller's (rounded down)
    if ttl is not None:
        expires = min(expires, now + int(ttl))
    minted = {k: v for k, v in claims.items() if k not in _OWN_CLAIMS}
    minted.update(mode=mode, iat=now, exp=expires)
    return web.json_response(
        {
            "token": jwt.encode(minted, secret, algorithm=ALGORITHM),
            "mode": mode,
            "doc": claims.get("doc"),
            "doc_pattern": claims.get("doc_pattern"),
            "expires_at": expires,
        }
    )
