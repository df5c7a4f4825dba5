"""A token bucket per API client, so one client cannot starve the others (issue #18, finding 4).

A client is its token when it sends a valid one (people behind one proxy
or NAT then do not share a budget), else its address: an invalid token
must not buy a fresh bucket.  Each request costs one, and a response costs
one more per MiB of body, charged after it is built (the bucket may go into
debt), so reading big documents in a loop runs dry sooner than polling a
small one.  Refused requests get 429 with ``Retry-After``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from .apierror import ApiError
from .auth import AuthError, token_of, verify_token
from .keys import METRICS

#: A response costs one extra request per this many bytes of body.
BYTES_PER_REQUEST = 1024 * 1024
#: Buckets kept before full (idle) ones are forgotten.
MAX_CLIENTS = 10_000


class ClientLimiter:
    """Buckets of ``rate`` requests per second, ``burst`` deep, one per client key."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        #: key -> (level, time of the level); insertion order is age.
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        level, stamp = self._buckets.get(key, (self.burst, now))
        return min(self.burst, level + (now - stamp) * self.rate)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend ``cost``; 0 when allowed, else the seconds until it would be."""
        now = self._clock()
        level = self._level(key, now)
        if level < cost:
            self._buckets[key] = (level, now)
            return (cost - level) / self.rate
        self._buckets.pop(key, None)  # re-insert: most recent last
        self._buckets[key] = (level - cost, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._forget(now)
        return 0.0

    def charge(self, key: str, cost: float) -> None:
        """Spend ``cost`` after the fact; the bucket may go below zero."""
        now = self._clock()
        self._buckets[key] = (self._level(key, now) - cost, now)

    def _forget(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > MAX_CLIENTS:  # all busy: drop the longest idle
            del self._buckets[next(iter(self._buckets))]


def client_key(request: web.Request, secret: str | None) -> str:
    token = token_of(request) if secret is not None else None
    if token:
        try:
            verify_token(secret, token)  # type: ignore[arg-type]
        except AuthError:
            pass
        else:
            return "token:" + token
    return "addr:" + (request.remote or "?")


def rate_limit(rate: float, secret: str | None) -> Callable[[Handler], Handler]:
    """A decorator putting handlers behind one shared per-client limit of ``rate``
    requests per second (bursts of twice that); ``rate`` 0 turns the limit off."""
    if rate <= 0:
        return lambda handler: handler
    limiter = ClientLimiter(rate, burst=max(1.0, 2 * rate))
    return functools.partial(_limited, limiter=limiter, rate=rate, secret=secret)


def _limited(
    handler: Handler, *, limiter: ClientLimiter, rate: float, secret: str | None
) -> Handler:
    @functools.wraps(handler)
    async def limited(request: web.Request) -> web.StreamResponse:
        key = client_key(request, secret)
        wait = limiter.take(key)
        if wait > 0:
            request.app[METRICS].refused("api_rate")
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "rate_limited",
                f"too many API requests: at most {rate:g} per second, try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        response = await handler(request)
        body = getattr(response, "body", None)
        if isinstance(body, bytes) and len(body) >= BYTES_PER_REQUEST:
            limiter.charge(key, len(body) / BYTES_PER_REQUEST)
        return response

    return limited
