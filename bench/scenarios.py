"""The scenarios: their sizes (full and smoke) and the figures each reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: Which timed phase of the generator the figure comes from (its CPU share is shown).
    phase: str = "phase"
    digits: int = 1


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    full: dict[str, Any]
    smoke: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)

    def sizes(self, smoke: bool) -> dict[str, Any]:
        return dict(self.smoke if smoke else self.full)

    def describe(self, smoke: bool) -> str:
        s = self.sizes(smoke)
        if self.id == "S1":
            return f"1 doc, 1 writer + {s['readers']} readers, {s['inserts']:,} small inserts"
        if self.id == "S2":
            return f"1 doc, {s['writers']} writers x {s['inserts']:,} inserts at random positions"
        if self.id == "S3":
            return (
                f"{s['docs']} docs x {s['clients_per_doc']} clients, {s['rate']:g} updates/s each"
                f" for {s['seconds']:g} s"
            )
        if self.id == "S4":
            return (
                f"doc of {s['updates']:,} single-char updates: 1 joiner, {s['joiners']} at once;"
                f" {s['big_mb']} MiB doc: {s['big_joiners']} at once"
            )
        if self.id == "S5":
            return f"{s['connections']:,} idle connections over {s['docs']} docs, then all close"
        if self.id == "S7":
            return (
                f"{s['pastes']:,} appended pastes of {s['paste_kb']} KiB; {s['joiners']} joiners"
                f" at once x {s['storms']}; typing at the end of {s['typing_mb']} MiB"
            )
        if self.id == "S6":
            return (
                f"{s['connections']:,} connections over {s['docs']:,} docs,"
                f" {s['writes']} updates per doc"
            )
        return self.title


SCENARIOS = [
    Scenario(
        "S1",
        "fan-out",
        full={"scenario": "s1", "readers": 100, "full_readers": 3, "inserts": 2000},
        smoke={"scenario": "s1", "readers": 5, "full_readers": 1, "inserts": 50},
        metrics=[
            Metric("deliveries_per_s", "deliveries/s", "/s", True, digits=0),
            Metric("converge_s", "time to converge", "s", False, digits=2),
        ],
    ),
    Scenario(
        "S2",
        "concurrent writers",
        full={"scenario": "s2", "writers": 20, "inserts": 500, "full_readers": 2},
        smoke={"scenario": "s2", "writers": 3, "inserts": 20, "full_readers": 1},
        metrics=[Metric("converge_s", "time to converge", "s", False, digits=2)],
    ),
    Scenario(
        "S3",
        "steady latency",
        full={
            "scenario": "s3",
            "docs": 20,
            "clients_per_doc": 10,
            "rate": 5,
            "seconds": 20,
            "full_docs": 2,
        },
        smoke={
            "scenario": "s3",
            "docs": 2,
            "clients_per_doc": 3,
            "rate": 10,
            "seconds": 1,
            "full_docs": 1,
        },
        metrics=[
            Metric("p50_ms", "latency p50", "ms", False, digits=2),
            Metric("p99_ms", "latency p99", "ms", False, digits=2),
            Metric("max_ms", "latency max", "ms", False, digits=1),
        ],
    ),
    Scenario(
        "S4",
        "late joiners",
        full={
            "scenario": "s4",
            "updates": 50000,
            "joiners": 50,
            "full_joiners": 2,
            "single_joins": 5,
            "big_mb": 20,
            "big_joiners": 20,
        },
        smoke={
            "scenario": "s4",
            "updates": 500,
            "joiners": 5,
            "full_joiners": 1,
            "single_joins": 1,
            "big_mb": 1,
            "big_joiners": 2,
        },
        metrics=[
            Metric("join1_ms", "1 joiner synced", "ms", False, phase="single", digits=1),
            Metric("joinN_ms", "all joiners at once synced", "ms", False, digits=0),
            Metric("big_joins_per_s", "big doc: joins/s", "/s", True, phase="big", digits=1),
            Metric(
                "build_updates_per_s",
                "building it: updates/s",
                "/s",
                True,
                phase="build",
                digits=0,
            ),
        ],
    ),
    Scenario(
        "S5",
        "idle memory",
        full={"scenario": "s5", "connections": 2000, "docs": 200, "settle_ms": 1500},
        smoke={"scenario": "s5", "connections": 20, "docs": 4, "settle_ms": 100},
        metrics=[
            Metric("bytes_per_conn", "RSS per idle connection", "B", False, digits=0),
            Metric("rss_connected_mb", "RSS with all connected", "MiB", False, digits=1),
            Metric("after_vs_before", "RSS after close / before", "x", False, digits=2),
        ],
    ),
    Scenario(
        "S6",
        "scale",
        full={"scenario": "s6", "connections": 10000, "docs": 1000, "writes": 3, "full_docs": 10},
        smoke={"scenario": "s6", "connections": 100, "docs": 10, "writes": 2, "full_docs": 2},
        metrics=[
            Metric("connect_s", "connect + sync all", "s", False, phase="connect", digits=1),
            Metric("converge_s", "updates converged", "s", False, digits=2),
            Metric("server_rss_mb", "server RSS", "MiB", False, phase="connect", digits=0),
        ],
    ),
]

SCENARIOS.append(
    Scenario(
        "S7",
        "big document",
        full={
            "scenario": "s7",
            "pastes": 2000,
            "paste_kb": 10,
            "joiners": 20,
            "storms": 3,
            "typing_mb": 2,
            "keystrokes": 5000,
            "pace": 50,
        },
        smoke={
            "scenario": "s7",
            "pastes": 40,
            "paste_kb": 10,
            "joiners": 3,
            "storms": 2,
            "typing_mb": 0.3,
            "keystrokes": 200,
            "pace": 100,
        },
        metrics=[
            Metric("build_s", "build from pastes", "s", False, phase="build", digits=2),
            Metric("storm1_joins_per_s", "first storm: joins/s", "/s", True, digits=1),
            Metric("stormN_joins_per_s", "later storms: joins/s", "/s", True, digits=1),
            Metric("peak_rss_mb", "peak RSS in storms", "MiB", False, digits=0),
            Metric(
                "keystrokes_per_s",
                "typing at the end: keystrokes/s",
                "/s",
                True,
                phase="typing",
                digits=0,
            ),
            Metric("typing_p99_ms", "typing latency p99", "ms", False, phase="typing", digits=2),
        ],
    )
)

BY_ID = {s.id: s for s in SCENARIOS}
