"""Run every scenario against every server, interleaved, and write the report.

Each run starts a fresh server pinned to one core (``taskset``) and the
Node.js load generator pinned to the other, so the server never shares its
core with its load.  Repeats interleave the servers (S1 of every server,
then S1 again in a rotated order...), so drift of the machine hits them
all alike, and every ratio in the report compares figures of one run of
the bench.  A run whose clients did not converge is recorded as failed,
with the reason, and never timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import report
from .install import NODE_DIR, ROOT, SetupError, setup
from .scenarios import BY_ID, SCENARIOS, Scenario
from .servers import (
    GENERATOR_CPU,
    ServerProcess,
    ServerSpec,
    default_servers,
    pinned,
    raise_fd_limit,
    running,
)

GENERATOR = NODE_DIR / "gen.mjs"


def run_generator(
    scenario: Scenario, server: ServerProcess, smoke: bool, timeout: float
) -> dict[str, Any]:
    """One generator process for one scenario; its JSON result (``ok`` false on failure)."""
    cfg = scenario.sizes(smoke)
    cfg.update(url=server.url, server_pid=server.pid, timeout_ms=int(timeout * 1000))
    if server.spec.workers > 1:  # CPU and RSS of the supervisor, workers and Redis
        cfg.update(server_tree=True)
    argv = pinned(GENERATOR_CPU, ["node", str(GENERATOR), json.dumps(cfg)])
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout * 3 + 60, cwd=NODE_DIR
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "the generator did not finish"}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return {"ok": False, "error": f"the generator crashed ({done.returncode}): {tail}"}
    if not server.alive():
        result = {"ok": False, "error": f"the server died:\n{server.log_tail()}"}
    return result


class Profiler:
    """py-spy attached to a server for one run (raw collapsed stacks)."""

    def __init__(self, pid: int, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        self.proc = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", "1000", "--nonblocking"]
            + ["--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached before the load starts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def plan(
    scenarios: list[Scenario], servers: list[ServerSpec], repeats: int
) -> list[tuple[Scenario, int, ServerSpec]]:
    """Every (scenario, repeat, server), servers rotated on each repeat."""
    runs = []
    for scenario in scenarios:
        for rep in range(repeats):
            k = rep % len(servers)
            for spec in servers[k:] + servers[:k]:
                if scenario.id not in spec.skips:
                    runs.append((scenario, rep, spec))
    return runs


def execute(args: argparse.Namespace, servers: list[ServerSpec]) -> list[dict[str, Any]]:
    from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

    scenarios = [BY_ID[s] for s in args.scenarios]
    out: Path = args.out
    log_dir = out / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    results: list[dict[str, Any]] = []
    timeout = 30.0 if args.smoke else args.timeout

    def record(scenario: Scenario, rep: int, spec: ServerSpec, result: dict[str, Any]) -> None:
        result.update(scenario=scenario.id, server=spec.name, repeat=rep)
        results.append(result)
        if not result.get("ok"):
            bar.write(f"FAILED {scenario.id} {spec.name} #{rep + 1}: {result.get('error')}")

    if args.smoke:
        # Correctness only: one server process per server, every scenario on it.
        total = sum(1 for sp in servers for sc in scenarios if sc.id not in sp.skips)
        bar = tqdm(total=total, unit="run", disable=args.quiet, dynamic_ncols=True)
        for spec in servers:
            try:
                with running(spec, log_dir) as server:
                    for scenario in scenarios:
                        if scenario.id in spec.skips:
                            continue
                        bar.set_description(f"{scenario.id} {spec.name}")
                        record(scenario, 0, spec, run_generator(scenario, server, True, timeout))
                        bar.update()
            except RuntimeError as exc:
                for scenario in scenarios:
                    if scenario.id not in spec.skips:
                        record(scenario, 0, spec, {"ok": False, "error": str(exc)})
                        bar.update()
        bar.close()
        return results

    runs = plan(scenarios, servers, args.repeats)
    bar = tqdm(total=len(runs), unit="run", disable=args.quiet, dynamic_ncols=True)
    for scenario, rep, spec in runs:
        bar.set_description(f"{scenario.id} {spec.name} #{rep + 1}")
        try:
            with running(spec, log_dir) as server:
                profiler = None
                if args.profile and spec.kind == "collab" and spec.store == "memory" and rep == 0:
                    profiler = Profiler(
                        server.pid, out / "profiles" / f"{scenario.id}-{spec.name}.txt"
                    )
                try:
                    result = run_generator(scenario, server, False, timeout)
                finally:
                    if profiler is not None:
                        profiler.stop()
                if profiler is not None:
                    result["profiled"] = True
        except RuntimeError as exc:
            result = {"ok": False, "error": str(exc)}
        record(scenario, rep, spec, result)
        bar.update()
    bar.close()
    return results


def versions() -> dict[str, str]:
    from collab import __version__

    def peers(module: str) -> str:
        from .install import PEERS_PYTHON

        code = f"import importlib.metadata as m; print(m.version({module!r}))"
        done = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True)
        return done.stdout.strip() or "?"

    def npm(package: str) -> str:
        path = NODE_DIR / "node_modules" / package / "package.json"
        try:
            return str(json.loads(path.read_text())["version"])
        except OSError:
            return "?"

    import importlib.metadata

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "collab": __version__,
        "pycrdt": importlib.metadata.version("pycrdt"),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "python": platform.python_version(),
        "pycrdt-websocket": peers("pycrdt-websocket"),
        "hypercorn": peers("hypercorn"),
        "@y/websocket-server": npm("@y/websocket-server"),
        "yjs": npm("yjs"),
        "ws": npm("ws"),
        "node": node,
    }


def rerender(out: Path) -> int:
    """Write bench.md / bench.png again from a bench.json (after a change to the report)."""
    data = json.loads((out / "bench.json").read_text())
    known = {s.name: s for s in default_servers()}
    servers = [known.get(n) or ServerSpec(n, "collab") for n in data["meta"]["servers"]]
    scenarios = [BY_ID[s] for s in data["meta"]["sizes"]]
    for scenario in scenarios:  # the sizes the runs were made with
        target = scenario.smoke if data["meta"]["smoke"] else scenario.full
        target.update(data["meta"]["sizes"][scenario.id])
    paths = report.write(out, data["meta"], data["runs"], scenarios, servers)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="collab bench",
        description="Benchmark collab against pycrdt-websocket, @y/websocket-server and a "
        "plain relay; writes a Markdown table, JSON and a PNG chart.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, correctness only")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario and server")
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        choices=[s.id for s in SCENARIOS],
        help="run only this scenario (repeatable; default all)",
    )
    parser.add_argument(
        "--server",
        dest="servers",
        action="append",
        help="run only this server (repeatable; default all): "
        + ", ".join(s.name for s in default_servers()),
    )
    parser.add_argument(
        "--collab-source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run the collab checkout at PATH (memory store) as NAME, to A/B a change",
    )
    parser.add_argument(
        "--set",
        dest="sizes",
        action="append",
        default=[],
        metavar="S1.inserts=20000",
        help="change one size of a scenario (repeatable); see bench/scenarios.py",
    )
    parser.add_argument("--out", type=Path, help="output folder (default bench-results/)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per phase")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of collab-memory")
    parser.add_argument("--setup-only", action="store_true", help="install the peers and stop")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="only write the table and chart again from OUT/bench.json",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios or [s.id for s in SCENARIOS]
    for item in args.sizes:
        key, _, value = item.partition("=")
        sid, _, name = key.partition(".")
        scenario = BY_ID.get(sid)
        if scenario is None or name not in scenario.full or not value:
            parser.error(f"--set {item}: expected SCENARIO.SIZE=NUMBER, e.g. S1.inserts=20000")
        number = float(value)
        for sizes in (scenario.full, scenario.smoke):
            sizes[name] = int(number) if number.is_integer() else number
    if args.out is None:
        args.out = ROOT / "bench-results" / ("smoke" if args.smoke else "")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        return rerender(args.out)
    try:
        setup(say=not args.quiet)
    except SetupError as exc:
        print(f"bench setup failed: {exc}", file=sys.stderr)
        return 2
    if args.setup_only:
        return 0
    servers = default_servers()
    for i, item in enumerate(args.collab_source):
        name, _, path = item.partition("=")
        servers.insert(2 + i, ServerSpec(name, "collab", "memory", Path(path).resolve()))
    if args.servers:
        unknown = set(args.servers) - {s.name for s in servers}
        if unknown:
            print(f"unknown server(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        servers = [s for s in servers if s.name in args.servers]
    else:  # opt-in servers (collab-workers2) run only when named
        servers = [s for s in servers if not s.opt_in]
    fds = raise_fd_limit()
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        print(
            "warning: fewer than 2 cores or no taskset: server and generator share", file=sys.stderr
        )
    started = time.time()
    results = execute(args, servers)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join(["collab bench", *(argv if argv is not None else sys.argv[1:])]),
        "smoke": args.smoke,
        "repeats": 1 if args.smoke else args.repeats,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}",
        "pinning": f"server on CPU 0, generator on CPU 1 (taskset); RLIMIT_NOFILE {fds}",
        "versions": versions(),
        "servers": [s.name for s in servers],
        "sizes": {s: BY_ID[s].sizes(args.smoke) for s in args.scenarios},
    }
    paths = report.write(args.out, meta, results, [BY_ID[s] for s in args.scenarios], servers)
    failed = [r for r in results if not r.get("ok")]
    if not args.quiet:
        print(paths["md"].read_text())
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 1 if failed else 0
