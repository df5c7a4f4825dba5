"""The stores' change feed and webhook outbox, shared by SQLite and PostgreSQL.

Every commit writes, in its own transaction, one ``doc.persisted`` event
per document it touched (preceded by ``doc.created`` when the document had
nothing stored before), and ``delete`` writes ``doc.deleted``: an event
exists if and only if what it reports does (issue #12).  Event ids only
grow, and an event becomes visible to ``events_after`` only once every
smaller id is visible too, so a reader's cursor never skips one.

The webhook dispatcher (``collab.webhooks.Webhook``) keeps its state in
three more tables, through the ``Outbox`` methods of the stores: a cursor
per endpoint (the last event turned into deliveries), the deliveries with
their attempts, and the disabled endpoints.

Events, and deliveries that were delivered or given up, are pruned after
``RETENTION`` by the compaction task (never on the commit path).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..webhooks import Delivery, StoredEvent

if TYPE_CHECKING:
    from .group import Pending

__all__ = [
    "DELIVERY_COLUMNS",
    "EVENT_COLUMNS",
    "PRUNE_INTERVAL",
    "RETENTION",
    "EventDraft",
    "decode_authors",
    "delivery_from_row",
    "delivery_row",
    "drafts",
    "encode_authors",
    "event_from_row",
]

#: Seconds events (and finished deliveries) are kept: a week.
RETENTION = 7 * 86400.0
#: The compaction task prunes at most this often (seconds).
PRUNE_INTERVAL = 3600.0

#: The columns of ``collab_webhook_deliveries``, in ``delivery_row`` order.
DELIVERY_COLUMNS = (
    "id, endpoint, type, name, seq_from, seq_to, authors, updates, size,"
    " first_at, next_at, attempts, body, status, last_error"
)


class EventDraft(NamedTuple):
    """An event to insert; the database gives it its id."""

    type: str
    doc: str
    seq_from: int
    seq_to: int
    authors: tuple[str, ...]
    updates: int
    size: int
    at: float

    def stored(self, event_id: int) -> StoredEvent:
        return StoredEvent(event_id, *self)


def drafts(
    batch: Sequence[Pending], ids: Sequence[int], new: Collection[str], at: float
) -> list[EventDraft]:
    """The events of one commit: ``batch[i]`` was stored as log row ``ids[i]``;
    ``new`` are the documents that had nothing stored before it."""
    rows: dict[str, list[int]] = {}
    for i, entry in enumerate(batch):
        rows.setdefault(entry.name, []).append(i)
    events = []
    for name, indexes in rows.items():
        seqs = [ids[i] for i in indexes]
        if name in new:
            first = indexes[seqs.index(min(seqs))]
            creator = batch[first].author
            events.append(
                EventDraft(
                    "doc.created",
                    name,
                    ids[first],
                    ids[first],
                    () if creator is None else (creator,),
                    1,
                    len(batch[first].update),
                    at,
                )
            )
        authors = dict.fromkeys(a for i in indexes if (a := batch[i].author) is not None)
        events.append(
            EventDraft(
                "doc.persisted",
                name,
                min(seqs),
                max(seqs),
                tuple(authors),
                len(indexes),
                sum(len(batch[i].update) for i in indexes),
                at,
            )
        )
    return events


def encode_authors(authors: Sequence[str]) -> str:
    """Authors as SQLite keeps them (a JSON array)."""
    return json.dumps(list(authors), ensure_ascii=False, separators=(",", ":"))


def decode_authors(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """Authors from either backend (SQLite: JSON text; PostgreSQL: ``text[]``)."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return tuple(json.loads(raw))
    return tuple(raw)


def delivery_row(delivery: Delivery, authors: Any) -> tuple[Any, ...]:
    """``delivery`` as a row of ``DELIVERY_COLUMNS`` (``authors`` already encoded)."""
    d = delivery
    return (
        d.id,
        d.endpoint,
        d.type,
        d.doc,
        d.seq_from,
        d.seq_to,
        authors,
        d.updates,
        d.size,
        d.first_at,
        d.next_at,
        d.attempts,
        d.body,
        d.status,
        d.last_error,
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    (
        delivery_id,
        endpoint,
        kind,
        doc,
        seq_from,
        seq_to,
        authors,
        updates,
        size,
        first_at,
        next_at,
        attempts,
        body,
        status,
        last_error,
    ) = row
    return Delivery(
        id=delivery_id,
        endpoint=endpoint,
        type=kind,
        doc=doc,
        seq_from=int(seq_from),
        seq_to=int(seq_to),
        authors=decode_authors(authors),
        updates=int(updates),
        size=int(size),
        first_at=float(first_at),
        next_at=float(next_at),
        attempts=int(attempts),
        body=bytes(body),
        status=status,
        last_error=last_error,
    )


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A row of ``id, type, name, seq_from, seq_to, authors, updates, size, at``."""
    event_id, kind, doc, seq_from, seq_to, authors, updates, size, at = row
    return StoredEvent(
        int(event_id),
        kind,
        doc,
        int(seq_from),
        int(seq_to),
        decode_authors(authors),
        int(updates),
        int(size),
        float(at),
    )


#: The columns ``event_from_row`` reads.
EVENT_COLUMNS = "id, type, name, seq_from, seq_to, authors, updates, size, at"
