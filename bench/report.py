"""Medians, ratios and targets of one bench run, as Markdown, JSON and a PNG chart."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .scenarios import Metric, Scenario
from .servers import ServerSpec

#: A figure taken while the generator used more than this share of its core
#: may measure the generator, not the server: it is flagged.
GEN_CPU_FLAG = 0.85
COLLAB = "collab-memory"


def _phase(result: dict[str, Any], metric: Metric) -> dict[str, Any]:
    if metric.phase == "phase":
        return dict(result.get("phase") or {})
    return dict((result.get("phases") or {}).get(metric.phase) or {})


def summarize(
    results: list[dict[str, Any]], scenarios: list[Scenario], servers: list[ServerSpec]
) -> dict[str, Any]:
    """summary[scenario][server] = runs, failures and per-metric median/min/max."""
    summary: dict[str, Any] = {}
    for scenario in scenarios:
        per_server: dict[str, Any] = {}
        for spec in servers:
            if scenario.id in spec.skips:
                per_server[spec.name] = {"skipped": spec.skips[scenario.id]}
                continue
            runs = [r for r in results if r["scenario"] == scenario.id and r["server"] == spec.name]
            good = [r for r in runs if r.get("ok")]
            entry: dict[str, Any] = {
                "runs": len(runs),
                "converged": len(good),
                "errors": [r.get("error") for r in runs if not r.get("ok")],
                "metrics": {},
            }
            for metric in scenario.metrics:
                values = [float(r["metrics"][metric.key]) for r in good]
                if not values:
                    continue
                gen = [float(_phase(r, metric).get("gen_cpu", 0.0)) for r in good]
                # /proc counts CPU in 10 ms ticks: a shorter phase has no figure.
                srv = [
                    float(_phase(r, metric).get("server_cpu", 0.0))
                    for r in good
                    if float(_phase(r, metric).get("seconds", 0.0)) >= 0.1
                ]
                seconds = [float(_phase(r, metric).get("seconds", 0.0)) for r in good]
                entry["metrics"][metric.key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                    "gen_cpu_max": max(gen),
                    "server_cpu_median": statistics.median(srv) if srv else None,
                    "phase_seconds": statistics.median(seconds),
                    "flagged": max(gen) > GEN_CPU_FLAG,
                }
            per_server[spec.name] = entry
        summary[scenario.id] = per_server
    return summary


def _median(summary: dict[str, Any], scenario: str, server: str, key: str) -> float | None:
    entry = summary.get(scenario, {}).get(server, {})
    if entry.get("errors"):  # any failed run: no figure for targets
        return None
    metric = entry.get("metrics", {}).get(key)
    return None if metric is None else float(metric["median"])


def targets(summary: dict[str, Any], servers: list[str]) -> list[dict[str, Any]]:
    """The issue's targets, each measured against figures of this same run."""
    rows: list[dict[str, Any]] = []

    def add(text: str, measured: str, met: bool | None) -> None:
        rows.append({"target": text, "measured": measured, "met": met})

    def ratio(scen: str, key: str, other: str, need: float, higher: bool, text: str) -> None:
        mine = _median(summary, scen, COLLAB, key)
        theirs = _median(summary, scen, other, key)
        if other not in servers:
            return
        if mine is None or theirs is None or theirs == 0 or mine == 0:
            add(text, "no figure (a run failed or was skipped)", None)
            return
        r = mine / theirs if higher else theirs / mine
        add(text, f"{r:.2f}x ({_fmt(mine)} vs {_fmt(theirs)})", r >= need)

    ratio(
        "S1",
        "deliveries_per_s",
        "pycrdt-websocket",
        3,
        True,
        "S1 deliveries/s ≥ 3x pycrdt-websocket",
    )
    ratio(
        "S1",
        "deliveries_per_s",
        "y-websocket-server",
        1,
        True,
        "S1 deliveries/s ≥ @y/websocket-server",
    )
    ratio("S1", "deliveries_per_s", "relay", 0.8, True, "S1 deliveries/s ≥ 80% of the relay")
    ratio("S3", "p99_ms", "y-websocket-server", 1, False, "S3 p99 ≤ @y/websocket-server's")
    p50 = _median(summary, "S3", COLLAB, "p50_ms")
    if "S3" in summary:
        add(
            "S3 p50 < 1 ms",
            "no figure" if p50 is None else f"{p50:.3f} ms",
            None if p50 is None else p50 < 1,
        )
    ratio(
        "S4",
        "joinN_ms",
        "y-websocket-server",
        2,
        False,
        "S4 N joiners at once in ≤ half @y/websocket-server's time",
    )
    big = _median(summary, "S4", COLLAB, "big_joins_per_s")
    if "S4" in summary:
        add(
            "S4 20 MiB document ≥ 50 joins/s",
            "no figure" if big is None else f"{big:.1f} joins/s",
            None if big is None else big >= 50,
        )
    per = _median(summary, "S5", COLLAB, "bytes_per_conn")
    back = _median(summary, "S5", COLLAB, "after_vs_before")
    if "S5" in summary:
        add(
            "S5 ≤ 16 KiB per idle connection",
            "no figure" if per is None else f"{per / 1024:.1f} KiB",
            None if per is None else per <= 16384,
        )
        add(
            "S5 memory back within 10% after close",
            "no figure" if back is None else f"RSS after / before = {back:.2f}",
            None if back is None else back <= 1.10,
        )
    if "S6" in summary:
        entry = summary["S6"].get(COLLAB, {})
        ok = entry.get("runs", 0) > 0 and not entry.get("errors")
        add(
            "S6 completes converged",
            f"{entry.get('converged', 0)}/{entry.get('runs', 0)} runs converged",
            ok,
        )
    # Issue #16: the big-document targets.
    ratio("S7", "build_s", "y-websocket-server", 1, False, "S7 build ≤ @y/websocket-server's time")
    for key, which in (("storm1_joins_per_s", "first"), ("stormN_joins_per_s", "later")):
        ratio("S7", key, "y-websocket-server", 2, True, f"S7 {which} storm ≥ 2x joins/s")
    typed = _median(summary, "S7", COLLAB, "keystrokes_per_s")
    if "S7" in summary:
        add(
            "S7 typing at the end of 2 MB ≥ 2,000 keystrokes/s",
            "no figure" if typed is None else f"{typed:,.0f}/s",
            None if typed is None else typed >= 2000,
        )
    ratio("S7", "peak_rss_mb", "collab-unchunked", 1, False, "S7 peak RSS ≤ without pieces")
    if "collab-sqlite" in servers:
        mem = _median(summary, "S1", COLLAB, "deliveries_per_s")
        sql = _median(summary, "S1", "collab-sqlite", "deliveries_per_s")
        if "S1" in summary:
            if mem and sql:
                cost = 1 - sql / mem
                add(
                    "SQLite store costs ≤ 25% of S1 throughput",
                    f"{cost:+.1%} ({_fmt(sql)} vs {_fmt(mem)}/s)",
                    cost <= 0.25,
                )
            else:
                add("SQLite store costs ≤ 25% of S1 throughput", "no figure", None)
    return rows


def _fmt(value: float, digits: int | None = None) -> str:
    if digits is None:
        digits = 0 if abs(value) >= 100 else (2 if abs(value) < 10 else 1)
    return f"{value:,.{digits}f}"


def _cell(entry: dict[str, Any], metric: Metric) -> str:
    if "skipped" in entry:
        return "n/a"
    m = entry["metrics"].get(metric.key)
    failed = len(entry["errors"])
    if m is None:
        return f"**FAILED** ({failed}/{entry['runs']})"
    text = _fmt(m["median"], metric.digits)
    if entry["runs"] > 1:
        text += f" <sub>{_fmt(m['min'], metric.digits)}–{_fmt(m['max'], metric.digits)}</sub>"
    if m["flagged"]:
        text += " †"
    if failed:
        text += f" **({failed}/{entry['runs']} failed)**"
    return text


def markdown(
    meta: dict[str, Any],
    summary: dict[str, Any],
    scenarios: list[Scenario],
    servers: list[ServerSpec],
    goals: list[dict[str, Any]],
    chart: str | None,
) -> str:
    names = [s.name for s in servers]
    v = meta["versions"]
    lines = [
        f"# collab bench{' (smoke: correctness only, sizes tiny)' if meta['smoke'] else ''}",
        "",
        f"`{meta['command']}` on {meta['when']}, {meta['duration_s']:.0f} s;"
        f" {meta['machine']}; {meta['pinning']}.",
        "",
        f"collab {v['collab']} (pycrdt {v['pycrdt']}, aiohttp {v['aiohttp']},"
        f" Python {v['python']}),"
        f" pycrdt-websocket {v['pycrdt-websocket']} (ASGIServer under Hypercorn {v['hypercorn']}),"
        f" @y/websocket-server {v['@y/websocket-server']} (yjs {v['yjs']}, Node {v['node']}),"
        " relay: bench/relay.py (aiohttp, no CRDT work). Generator: Node.js + ws"
        f" {v['ws']}, one process on its own core.",
        "",
        f"Medians of {meta['repeats']} runs per figure (<sub>min–max</sub>)."
        f" † the generator used more than {GEN_CPU_FLAG:.0%} of its core during that figure:"
        " it may measure the generator rather than the server. A run whose clients did not"
        " converge is FAILED and never timed. Server CPU: its share of one core over the"
        " scenario's longest timed phase (n/m: phase too short for /proc's 10 ms ticks).",
        "",
    ]
    if goals:
        lines += ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
        for g in goals:
            mark = "n/a" if g["met"] is None else ("✅" if g["met"] else "❌")
            lines.append(f"| {g['target']} | {g['measured']} | {mark} |")
        lines.append("")
    lines += ["## Results", ""]
    header = "| figure | " + " | ".join(names) + " |"
    rule = "| --- |" + " ---: |" * len(names)
    for scenario in scenarios:
        per = summary[scenario.id]
        lines += [
            f"### {scenario.id} {scenario.title}: {scenario.describe(meta['smoke'])}",
            "",
            header,
            rule,
        ]
        for metric in scenario.metrics:
            arrow = "↑" if metric.higher_is_better else "↓"
            row = [_cell(per[n], metric) for n in names]
            lines.append(f"| {metric.label} ({metric.unit}) {arrow} | " + " | ".join(row) + " |")
            base = per.get(COLLAB, {}).get("metrics", {}).get(metric.key)
            if base and len(names) > 1 and base["median"]:
                ratios = []
                for n in names:
                    m = (
                        per[n].get("metrics", {}).get(metric.key)
                        if "skipped" not in per[n]
                        else None
                    )
                    ratios.append("" if m is None else f"{m['median'] / base['median']:.2f}x")
                lines.append(f"| &nbsp;&nbsp;÷ {COLLAB} | " + " | ".join(ratios) + " |")
        gen, srv = [], []
        for n in names:
            ms = [] if "skipped" in per[n] else list(per[n].get("metrics", {}).values())
            # The generator's worst figure, and the server's share over the longest phase.
            gen.append(f"{max(m['gen_cpu_max'] for m in ms):.0%}" if ms else "")
            longest = max(ms, key=lambda m: m["phase_seconds"]) if ms else None
            cpu = None if longest is None else longest["server_cpu_median"]
            srv.append("" if longest is None else ("n/m" if cpu is None else f"{cpu:.0%}"))
        lines.append("| generator CPU (max) | " + " | ".join(gen) + " |")
        lines.append("| server CPU (longest phase) | " + " | ".join(srv) + " |")
        errors = [(n, e) for n in names for e in per[n].get("errors", [])]
        for n, e in errors:
            first = str(e).splitlines()[0] if e else "?"
            lines.append(f"\n- **{n} failed**: {first}")
        skipped = [(n, per[n]["skipped"]) for n in names if "skipped" in per[n]]
        for n, why in skipped:
            lines.append(f"\n- {n}: n/a, {why}")
        lines.append("")
    if chart:
        lines += [f"Chart: `{chart}`", ""]
    return "\n".join(lines)


COLORS = {
    "collab-memory": "#2563eb",
    "collab-sqlite": "#60a5fa",
    "pycrdt-websocket": "#f59e0b",
    "y-websocket-server": "#10b981",
    "relay": "#9ca3af",
}


def chart(
    path: Path,
    meta: dict[str, Any],
    summary: dict[str, Any],
    scenarios: list[Scenario],
    servers: list[ServerSpec],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, m) for s in scenarios for m in s.metrics]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    names = [s.name for s in servers]
    extra = ["#7c3aed", "#db2777", "#0891b2"]
    colors = [COLORS.get(n) or extra[i % len(extra)] for i, n in enumerate(names)]
    for ax, (scenario, metric) in zip(axes.flat, panels, strict=False):
        per = summary[scenario.id]
        for i, n in enumerate(names):
            entry = per[n]
            m = entry.get("metrics", {}).get(metric.key) if "skipped" not in entry else None
            if m is None:
                label = "n/a" if "skipped" in entry else "failed"
                ax.text(
                    i,
                    0.04,
                    label,
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="#b91c1c",
                    transform=ax.get_xaxis_transform(),
                )
                continue
            med = m["median"]
            ax.bar(
                i,
                med,
                color=colors[i],
                hatch="//" if m["flagged"] else None,
                edgecolor="#374151" if m["flagged"] else colors[i],
                yerr=[[med - m["min"]], [m["max"] - med]],
                capsize=3,
            )
            ax.text(i, med, _fmt(med, metric.digits), ha="center", va="bottom", fontsize=7)
        arrow = "higher is better" if metric.higher_is_better else "lower is better"
        ax.set_title(f"{scenario.id} {metric.label}\n({metric.unit}, {arrow})", fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"collab bench {meta['when']} — medians of {meta['repeats']} runs, whiskers min–max,"
        " hatched: generator CPU > 85%",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_summary(folder: Path, top: int = 25) -> str | None:
    """Self and inclusive time per function from py-spy's raw collapsed stacks."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        return None
    out = ["# Profiles of collab (py-spy, 1000 Hz, non-idle samples)", ""]
    for f in files:
        self_t: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        for line in f.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_frame(x) for x in stack.split(";")[1:]]  # [0] is the thread
            if not frames:
                continue
            total += n
            self_t[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
        if not total:
            continue
        out += [f"## {f.stem} ({total} samples)", "", "| self | function |", "| ---: | --- |"]
        out += [f"| {c / total:.1%} | `{fn}` |" for fn, c in self_t.most_common(top)]
        out += ["", "| inclusive | function |", "| ---: | --- |"]
        out += [f"| {c / total:.1%} | `{fn}` |" for fn, c in incl.most_common(top)]
        out.append("")
    return "\n".join(out)


def _frame(text: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)' so lines of one function add up."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({short})"


def write(
    out: Path,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    scenarios: list[Scenario],
    servers: list[ServerSpec],
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, scenarios, servers)
    goals = [] if meta["smoke"] else targets(summary, [s.name for s in servers])
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    chart(paths["png"], meta, summary, scenarios, servers)
    paths["md"].write_text(
        markdown(meta, summary, scenarios, servers, goals, str(paths["png"])) + "\n"
    )
    paths["json"].write_text(
        json.dumps({"meta": meta, "targets": goals, "summary": summary, "runs": results}, indent=1)
        + "\n"
    )
    profiles = profile_summary(out / "profiles")
    if profiles:
        paths["profiles"] = out / "profiles" / "summary.md"
        paths["profiles"].write_text(profiles + "\n")
    return paths
