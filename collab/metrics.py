"""Prometheus metrics, one registry per application.

The hot path (every frame in and out) only adds to plain integers; they
are turned into Prometheus counters when ``/metrics`` is scraped, so
counting costs nothing measurable.  Histograms are observed once per
applied update and once per store commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .closecodes import CloseCode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


#: Close codes that get their own label: the standard ones and collab's own.
#: A client chooses the code it closes with, so any other is counted as
#: "other": otherwise each client could add label values to /metrics.
_CLOSE_LABELS = {code: str(code) for code in (*range(1000, 1016), *CloseCode)}


def close_label(code: int | None) -> str:
    """The ``code`` label of ``collab_connections_closed_total``, from a bounded set."""
    if code is None:
        return "1006"
    return _CLOSE_LABELS.get(code, "other")


@dataclass
class Traffic:
    """Plain counters bumped on the hot path."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    #: Connections opened, and open now, by transport ("websocket", "sse", "poll").
    opened: Counter[str] = field(default_factory=Counter)
    open: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


class Metrics:
    """Everything ``/metrics`` reports for one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.traffic = Traffic()
        self.apply_seconds = Histogram(
            "collab_update_apply_seconds",
            "Time to apply one incoming update to its document",
            buckets=_FAST_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "collab_store_commit_seconds",
            "Time of one store commit (a group of updates)",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_TrafficCollector(self))

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        self._gauges[name] = (doc, read)

    def opened(self, transport: str) -> None:
        self.traffic.opened[transport] += 1
        self.traffic.open[transport] += 1

    def closed(self, code: int | None, transport: str | None = None) -> None:
        self.traffic.closes[close_label(code)] += 1
        if transport is not None:
            self.traffic.open[transport] -= 1

    def refused(self, reason: str) -> None:
        self.traffic.refused[reason] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TrafficCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        t = self._metrics.traffic
        for name, doc, value in (
            ("collab_messages_received", "WebSocket messages received", t.messages_in),
            ("collab_bytes_received", "WebSocket payload bytes received", t.bytes_in),
            ("collab_messages_sent", "WebSocket messages sent", t.messages_out),
            ("collab_bytes_sent", "WebSocket payload bytes sent", t.bytes_out),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        closes = CounterMetricFamily(
            "collab_connections_closed", "Connections closed, by close code", labels=["code"]
        )
        for code, count in sorted(t.closes.items()):
            closes.add_metric([code], count)
        yield closes
        refused = CounterMetricFamily(
            "collab_requests_refused", "Requests and messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(t.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        opened = CounterMetricFamily(
            "collab_connections_opened",
            "Connections admitted to the loop, by transport",
            labels=["transport"],
        )
        current = GaugeMetricFamily(
            "collab_transport_connections", "Open connections, by transport", labels=["transport"]
        )
        for transport, count in sorted(t.opened.items()):
            opened.add_metric([transport], count)
            current.add_metric([transport], t.open[transport])
        yield opened
        yield current
        for name, (doc, read) in self._metrics._gauges.items():
            yield GaugeMetricFamily(name, doc, value=read())
