"""Signed, durable webhooks (Standard Webhooks 1.0).

The store writes an event row in the same transaction as the updates it
reports (``doc.persisted``, ``doc.created``, ``doc.deleted``), so a crash
can never lose one.  A dispatcher per endpoint turns events into
deliveries, durably as well:

* ``doc.persisted`` is debounced per document: events merge into the
  document's delivery until its first attempt, which is made ``debounce``
  seconds after its first event and at least ``debounce`` seconds after the
  previous delivery of that document; a burst of edits becomes one or two
  deliveries, never one per keystroke.
* A delivery keeps its ``webhook-id`` and body across retries, which follow
  the Standard Webhooks schedule with jitter; ``Retry-After`` is honoured;
  ``410 Gone`` disables the endpoint.
* With several processes, one of them dispatches (the store elects it), so
  every event is delivered once per cluster.

Receivers verify ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key,
"{webhook-id}.{webhook-timestamp}.{body}")) with ``verify``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import aiohttp

from .hooks import Hooks, Persisted

log = logging.getLogger("collab.webhooks")

EVENTS = ("doc.persisted", "doc.created", "doc.deleted", "doc.restored")
#: Seconds between attempts (Standard Webhooks' suggested schedule), each +-20% jitter.
RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: The longest ``Retry-After`` honoured (a day); longer answers are capped.
MAX_RETRY_AFTER = 86400.0
#: JSON content included in a payload (opt-in) is cut off beyond this size.
CONTENT_CAP = 256 * 1024
#: Seconds a receiver has to answer.
REQUEST_TIMEOUT = 15.0
#: A timestamp further than this from now fails verification.
TOLERANCE = 300


class WebhookVerificationError(Exception):
    """A webhook request's signature or timestamp does not verify."""


def _key(secret: str) -> bytes:
    # Standard Webhooks secrets are "whsec_" + base64; any other string is used as it is.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; several secrets sign side by side (rotation)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a request as a receiver must; the parsed payload, or ``WebhookVerificationError``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        stamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook headers") from None
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        raise WebhookVerificationError("timestamp too old or too new")
    expected = sign(secret, msg_id, stamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise WebhookVerificationError("no matching signature")
    payload: dict[str, Any] = json.loads(body)
    return payload


# -- what the store keeps -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the store's event log, written with the updates it reports."""

    id: int
    type: str
    doc: str
    seq_from: int
    seq_to: int
    authors: tuple[str, ...]
    updates: int
    size: int
    at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request to make, kept by the store until it succeeds or gives up.

    ``body`` is empty until the first attempt freezes it; until then, new
    events of the same document merge into it.
    """

    id: str
    endpoint: str
    type: str
    doc: str
    seq_from: int
    seq_to: int
    authors: tuple[str, ...]
    updates: int
    size: int
    first_at: float
    next_at: float
    attempts: int = 0
    body: bytes = b""
    status: str = "pending"  # pending | delivered | failed
    last_error: str = ""


@runtime_checkable
class Outbox(Protocol):
    """The durable part of webhooks; the SQLite and PostgreSQL stores implement it."""

    async def events_after(self, after: int, limit: int) -> list[StoredEvent]:
        """Events with an id above ``after``, oldest first."""

    async def webhook_cursor(self, endpoint: str) -> int:
        """The last event id turned into deliveries for ``endpoint`` (0 at first)."""

    async def webhook_absorb(self, endpoint: str, cursor: int, upserts: Sequence[Delivery]) -> None:
        """In one transaction: insert or replace ``upserts`` and move the cursor."""

    async def webhook_pending(self, endpoint: str) -> list[Delivery]:
        """The endpoint's deliveries with status ``pending``, by ``next_at``."""

    async def webhook_update(self, delivery: Delivery) -> None:
        """Record an attempt's outcome (replaces the row with the same id)."""

    async def webhook_disabled(self, endpoint: str) -> bool: ...

    async def webhook_disable(self, endpoint: str, reason: str) -> None: ...

    async def try_lead(self, key: str) -> bool:
        """Whether this process dispatches for ``key`` (one per cluster)."""


def endpoint_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


# -- the dispatcher ---------------------------------------------------------------


ContentReader = Callable[[str], Awaitable[dict[str, Any] | None]]


class Webhook(Hooks):
    """A built-in hook: deliver the store's document events to ``url``, signed.

    ``events`` filters the event types; ``include_content`` adds the
    document's JSON (cut off past ``CONTENT_CAP`` bytes) to ``doc.persisted``.
    """

    def __init__(
        self,
        url: str,
        secret: str | Sequence[str],
        *,
        events: Collection[str] = EVENTS,
        include_content: bool = False,
        debounce: float = 2.0,
        retry_schedule: Sequence[float] = RETRY_SCHEDULE,
        poll_interval: float = 1.0,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        unknown = set(events) - set(EVENTS)
        if unknown:
            raise ValueError(f"unknown webhook events {sorted(unknown)}; known: {EVENTS}")
        self.url = url
        self.secrets = [secret] if isinstance(secret, str) else list(secret)
        if not self.secrets or not all(self.secrets):
            raise ValueError("a webhook needs a non-empty secret")
        self.events = frozenset(events)
        self.include_content = include_content
        self.debounce = debounce
        self.retry_schedule = tuple(retry_schedule)
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.name = f"webhook:{url}"
        self.endpoint = endpoint_key(url)
        #: Delivered requests (2xx) and failed attempts, for metrics and tests.
        self.delivered = 0
        self.failed_attempts = 0
        self._outbox: Outbox | None = None
        self._content: ContentReader | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        #: Per document: when its last delivery was first attempted.
        self._last_sent: dict[str, float] = {}

    def attach(self, outbox: Outbox, content: ContentReader | None = None) -> None:
        """Called by the server before ``start``: where events and deliveries live."""
        self._outbox = outbox
        self._content = content

    async def start(self) -> None:
        if self._outbox is None:
            raise RuntimeError("Webhook needs a store with an outbox (SQLite or PostgreSQL)")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.request_timeout)
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"collab-webhook-{self.endpoint}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def on_persisted(self, event: Persisted) -> None:
        # Events of this process wake the dispatcher at once; those of other
        # processes are found by polling.
        self._wake.set()

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        assert self._outbox is not None
        failures = 0
        while True:
            try:
                delay = await self._step(self._outbox)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = min(30.0, self.poll_interval * 2**failures)
                log.exception(
                    "webhook dispatcher for %s failed; retrying in %.0fs", self.url, delay
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wake.wait()
            self._wake.clear()

    async def _step(self, outbox: Outbox) -> float:
        """One round: absorb new events, attempt what is due; seconds until the next round."""
        if not await outbox.try_lead(f"webhook:{self.endpoint}"):
            return self.poll_interval
        if await outbox.webhook_disabled(self.endpoint):
            return 60.0
        await self._absorb(outbox)
        now = time.time()
        wait = self.poll_interval
        for delivery in await outbox.webhook_pending(self.endpoint):
            if delivery.next_at > now:
                wait = min(wait, delivery.next_at - now)
                continue
            if not await self._attempt(outbox, delivery):
                break  # the endpoint is disabled
        return wait

    async def _absorb(self, outbox: Outbox) -> None:
        cursor = await outbox.webhook_cursor(self.endpoint)
        events = await outbox.events_after(cursor, 1000)
        if not events:
            return
        open_ = {d.doc: d for d in await outbox.webhook_pending(self.endpoint) if not d.attempts}
        upserts: dict[str, Delivery] = {}
        for event in events:
            if event.type not in self.events:
                continue
            if event.type == "doc.persisted":
                current = upserts.get(event.doc) or open_.get(event.doc)
                if current is not None and current.type == "doc.persisted":
                    upserts[event.doc] = _merged(current, event)
                    continue
                earliest = self._last_sent.get(event.doc, 0.0) + self.debounce
                upserts[event.doc] = _delivery(
                    self.endpoint, event, max(event.at + self.debounce, earliest)
                )
            else:
                # One delivery per created/deleted/restored event, sent at once.
                upserts[f"{event.doc}\0{event.id}"] = _delivery(self.endpoint, event, event.at)
        await outbox.webhook_absorb(self.endpoint, events[-1].id, list(upserts.values()))

    async def _attempt(self, outbox: Outbox, delivery: Delivery) -> bool:
        """Send one delivery; False once the endpoint is disabled."""
        assert self._session is not None
        if not delivery.body:
            delivery = replace(delivery, body=await self._body(delivery))
            self._last_sent[delivery.doc] = time.time()
        stamp = int(time.time())
        headers = headers_for(self.secrets, delivery.id, stamp, delivery.body)
        attempts = delivery.attempts + 1
        retry_after: float | None = None
        try:
            async with self._session.post(self.url, data=delivery.body, headers=headers) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                await resp.read()
            error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = 0
            error = f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            self.delivered += 1
            await outbox.webhook_update(replace(delivery, attempts=attempts, status="delivered"))
            log.info("webhook %s delivered %s for %r", delivery.id, delivery.type, delivery.doc)
            return True
        self.failed_attempts += 1
        if status == 410:
            await outbox.webhook_update(
                replace(delivery, attempts=attempts, status="failed", last_error=error)
            )
            await outbox.webhook_disable(self.endpoint, f"{self.url} answered 410 Gone")
            log.error("webhook endpoint %s answered 410 Gone: disabled", self.url)
            return False
        if attempts > len(self.retry_schedule):
            await outbox.webhook_update(
                replace(delivery, attempts=attempts, status="failed", last_error=error)
            )
            log.error(
                "webhook %s to %s failed %d times, giving up: %s",
                delivery.id,
                self.url,
                attempts,
                error,
            )
            return True
        delay = self.retry_schedule[attempts - 1] * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        await outbox.webhook_update(
            replace(delivery, attempts=attempts, next_at=time.time() + delay, last_error=error)
        )
        log.warning(
            "webhook %s to %s failed (%s), attempt %d; next in %.1fs",
            delivery.id,
            self.url,
            error,
            attempts,
            delay,
        )
        return True

    async def _body(self, delivery: Delivery) -> bytes:
        data: dict[str, Any] = {
            "doc": delivery.doc,
            "seq_from": delivery.seq_from,
            "seq_to": delivery.seq_to,
            "authors": list(delivery.authors),
            "updates": delivery.updates,
            "bytes": delivery.size,
        }
        if self.include_content and delivery.type == "doc.persisted" and self._content is not None:
            content = await self._content(delivery.doc)
            encoded = json.dumps(content, ensure_ascii=False)
            if len(encoded.encode()) <= CONTENT_CAP:
                data["content"] = content
            else:
                data["content_truncated"] = True
        payload = {
            "type": delivery.type,
            "timestamp": _iso(delivery.first_at),
            "data": data,
        }
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _delivery(endpoint: str, event: StoredEvent, next_at: float) -> Delivery:
    return Delivery(
        id=f"msg_{endpoint}_{event.id}",
        endpoint=endpoint,
        type=event.type,
        doc=event.doc,
        seq_from=event.seq_from,
        seq_to=event.seq_to,
        authors=event.authors,
        updates=event.updates,
        size=event.size,
        first_at=event.at,
        next_at=next_at,
    )


def _merged(delivery: Delivery, event: StoredEvent) -> Delivery:
    authors = delivery.authors + tuple(a for a in event.authors if a not in delivery.authors)
    return replace(
        delivery,
        seq_from=min(delivery.seq_from, event.seq_from),
        seq_to=max(delivery.seq_to, event.seq_to),
        authors=authors,
        updates=delivery.updates + event.updates,
        size=delivery.size + event.size,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the schedule


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
