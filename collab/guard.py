"""Cross-site defences in front of every route: Origin and Host checks (issue #18).

A page on ``evil.example`` can make the browser of anyone who visits it
send a "simple" POST (``text/plain``, no preflight) or open a WebSocket to
``127.0.0.1:8080``; the browser only adds an ``Origin`` header naming the
page.  So every state-changing request (anything but GET, HEAD and
OPTIONS) and every upgrade whose ``Origin`` is neither the server's own
nor listed with ``--allowed-origin`` is refused with 403.  Requests without
an ``Origin`` (bots, curl) are not sent by a web page and pass.

DNS rebinding goes further: ``evil.example`` is re-pointed at 127.0.0.1,
the page and the server then share an origin, and even reads work.  The
browser still sends ``Host: evil.example``, so a server without
``--auth-secret`` (where nothing else stands in the way) answers only Hosts
that cannot be rebound: IP addresses, ``localhost`` and ``*.localhost``,
the ``--host`` it listens on, and names listed with ``--allowed-host``
(as webpack-dev-server and Vite do).  A server with a secret checks the
Host only when ``--allowed-host`` is given: a rebinding page has no token.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractView

from .auth import json_error
from .config import Settings
from .keys import METRICS, SETTINGS

log = logging.getLogger("collab.guard")

#: Methods a page may send cross-site without changing anything.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hostname(host: str) -> str:
    """``Host`` header -> lower-case name without port, brackets or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[1:end] if end != -1 else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which ``Host`` names a server answers."""

    names: frozenset[str]
    #: ``.example.com`` entries: the name itself and its subdomains.
    suffixes: tuple[str, ...]
    any: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy | None:
        """The policy, or None where no Host check is needed (a secret, no list)."""
        if settings.auth_secret is not None and not settings.allowed_host:
            return None
        listed = [h.strip().lower().rstrip(".") for h in settings.allowed_host if h.strip()]
        names = {h for h in listed if not h.startswith(".")}
        names.update(("localhost", hostname(settings.host)))
        suffixes = tuple(h for h in listed if h.startswith("."))
        return cls(frozenset(names), suffixes, any="*" in names)

    def allows(self, host: str) -> bool:
        name = hostname(host)
        if self.any or name in self.names or _is_ip(name) or name.endswith(".localhost"):
            return True
        return any(name == s[1:] or name.endswith(s) for s in self.suffixes)


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    """A browser's Origin is the server's own (same Host) or listed; no Origin passes."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed:
        return True
    if origin.rstrip("/").lower() in allowed:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == request.host.lower()


def changes_state(request: web.Request) -> bool:
    """A write, or an upgrade (a WebSocket may write once open)."""
    return request.method not in SAFE_METHODS or "Upgrade" in request.headers


class Guard:
    """The Origin and Host checks of one app, built once from its settings."""

    __slots__ = ("hosts", "open_server", "origins")

    def __init__(self, settings: Settings) -> None:
        self.hosts = HostPolicy.from_settings(settings)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.allowed_origin)
        self.open_server = settings.auth_secret is None

    def check(self, request: web.Request) -> None:
        """Raise a JSON 403 when ``request`` comes from a Host or Origin not allowed."""
        host = request.headers.get("Host")
        hosts = self.hosts
        if hosts is not None and host is not None and not hosts.allows(host):
            hint = "add --allowed-host " + hostname(host)
            if self.open_server:
                hint += " or set --auth-secret"
            _refuse(request, "host", "host_not_allowed", f"host {host!r} is not allowed ({hint})")
        if changes_state(request) and not origin_allowed(request, self.origins):
            origin = request.headers["Origin"]
            _refuse(
                request,
                "origin",
                "origin_not_allowed",
                f"origin {origin!r} is not allowed (add --allowed-origin {origin.rstrip('/')})",
            )


GUARD = web.AppKey("guard", Guard)

#: What a route's handler may be: a coroutine function, or a plain function that
#: returns an awaitable (so that a long-lived request keeps no frame of its own).
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GuardedRoute(AbstractView):
    """A route behind its app's ``Guard``: the checks, then the handler's own awaitable.

    collab's app has no aiohttp middleware: any middleware makes aiohttp keep
    a coroutine suspended beside every request for as long as it lasts, and a
    WebSocket's request lasts as long as the connection (S5: bytes per idle
    connection).  A class-based view awaits as the handler's awaitable itself,
    so a guarded WebSocket costs no frame.
    """

    #: The guard and the handler (set per route by ``guarded``).
    route: ClassVar[tuple[Guard, RouteHandler]]

    def __await__(self) -> Generator[Any, None, web.StreamResponse]:
        request = self.request
        guard, handler = self.route
        guard.check(request)
        return handler(request).__await__()


def guarded(guard: Guard, handler: RouteHandler) -> type[GuardedRoute]:
    """``handler`` as a route behind ``guard``."""
    name = getattr(handler, "__name__", "route")
    return type(name, (GuardedRoute,), {"route": (guard, handler)})


def add_route(
    app: web.Application, method: str, path: str, handler: RouteHandler, **kwargs: Any
) -> web.AbstractRoute:
    """Register ``handler`` behind the app's guard: every collab route goes through here
    (``tests/test_guard.py`` checks that none is left out)."""
    guard = app.get(GUARD)
    if guard is None:  # a part used alone (setup_frontend on a bare app): its settings' checks
        guard = app[GUARD] = Guard(app.get(SETTINGS) or Settings())
    view = guarded(guard, handler)
    if method == "GET":  # as add_get: HEAD too
        return app.router.add_get(path, view, **kwargs)
    return app.router.add_route(method, path, view, **kwargs)


def add_routes(app: web.Application, table: Iterable[web.AbstractRouteDef]) -> None:
    """Register a ``RouteTableDef`` behind the app's guard."""
    for route in table:
        assert isinstance(route, web.RouteDef), route
        add_route(app, route.method, route.path, route.handler, **route.kwargs)


def _refuse(request: web.Request, metric: str, code: str, message: str) -> None:
    metrics = request.app.get(METRICS)
    if metrics is not None:  # None: a part used alone, without the server's metrics
        metrics.refused(metric)
    peer = request.remote or "?"
    log.warning(
        "refused %s %r peer=%s status=403 reason=%s",
        request.method,
        request.path,
        peer,
        message,
        extra={"peer": peer, "code": 403, "reason": code},
    )
    raise json_error(web.HTTPForbidden, code, message)
