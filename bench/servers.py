"""The servers under test: how to start each on a free loopback port, pinned to a core."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .install import NODE_DIR, PEERS_PYTHON, ROOT

#: The core the server runs on; the generator gets the other one.
SERVER_CPU = "0"
GENERATOR_CPU = "1"

#: collab with the bench's limits: no rate limit, no connection cap, rooms
#: unloaded as soon as they empty (S5), and no per-connection log lines
#: (the peers log none either).
COLLAB_FLAGS = [
    "--rate-messages",
    "1e9",
    "--rate-bytes",
    "1e12",
    "--max-connections",
    "1000000",
    "--max-connections-per-doc",
    "1000000",
    "--unload-grace",
    "0",
    "--log-level",
    "warning",
]


@dataclass(frozen=True)
class ServerSpec:
    """One server in the comparison."""

    name: str
    kind: str  # collab | pycrdt-websocket | y-websocket-server | relay
    store: str = "memory"  # collab only: memory | sqlite
    source: Path = ROOT  # collab only: the checkout to run (A/B of a patch)
    #: Scenarios it cannot take part in, with the reason shown in the table.
    skips: dict[str, str] = field(default_factory=dict)
    #: collab only: more ``collab serve`` flags (hooks, webhooks).
    extra: tuple[str, ...] = ()
    #: collab only: ``collab serve --workers`` (a supervisor, N workers, a private Redis).
    workers: int = 1
    #: The cores it is pinned to (the generator has GENERATOR_CPU).
    cpus: str = SERVER_CPU
    #: Run only when named with --server (not in the default comparison).
    opt_in: bool = False

    def command(self, port: int, workdir: Path) -> tuple[list[str], dict[str, str], Path]:
        """argv, extra environment and working directory."""
        host = "127.0.0.1"
        if self.kind == "collab":
            store = "memory://" if self.store == "memory" else f"sqlite:///{workdir}/bench.db"
            argv = [sys.executable, "-m", "collab", "serve", "--host", host, "--port", str(port)]
            argv += ["--store", store, *COLLAB_FLAGS, *self.extra]
            if self.workers > 1:
                argv += ["--workers", str(self.workers)]
            # PYTHONPATH first: a patched checkout wins over the installed one.
            return argv, {"PYTHONPATH": str(self.source)}, self.source
        if self.kind == "pycrdt-websocket":
            script = ROOT / "bench" / "peers" / "pycrdt_websocket_server.py"
            return (
                [str(PEERS_PYTHON), str(script), "--host", host, "--port", str(port)],
                {},
                workdir,
            )
        if self.kind == "y-websocket-server":
            script = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
            return ["node", str(script)], {"HOST": host, "PORT": str(port)}, workdir
        if self.kind == "relay":
            script = ROOT / "bench" / "relay.py"
            return [sys.executable, str(script), "--host", host, "--port", str(port)], {}, workdir
        raise ValueError(f"unknown server kind {self.kind}")


#: An on_change hook plus a webhook whose receiver runs beside the server.
HOOKED_FLAGS = (
    "--hook",
    "bench.hooks:CountChanges",
    "--hook",
    "bench.hooks:Receiver",
    "--webhook-url",
    "http://127.0.0.1:18099/hooks",
    "--webhook-secret",
    "bench-secret-bench-secret-bench-secret",
)

NO_STATE = "no document state: a relay cannot serve late joiners"
#: S2 counts each writer's markers in the raw frames a client receives.  A
#: worker applies what another worker published in one transaction, and Yjs
#: encodes a marker that a later insert of the same batch landed inside as two
#: pieces, so S2 would time out counting although the document is whole
#: (checked: every character there).
SPLIT_MARKERS = "replicated batches arrive re-encoded: S2's marker count cannot see split markers"
#: collab-unchunked runs only the big-document scenario: peak RSS with and without pieces.
ONLY_S7 = "runs S7 only (collab without --sync-chunk-bytes)"


def default_servers() -> list[ServerSpec]:
    return [
        ServerSpec("collab-memory", "collab", "memory"),
        ServerSpec("collab-sqlite", "collab", "sqlite"),
        # The same, with an on_change hook and a webhook to a local receiver
        # (issue #12: what hooks cost; bench/hooks.py).
        ServerSpec("collab-hooked", "collab", "sqlite", extra=HOOKED_FLAGS),
        ServerSpec("pycrdt-websocket", "pycrdt-websocket"),
        ServerSpec("y-websocket-server", "y-websocket-server"),
        # The same as collab-memory, with a joiner's answer in one message
        # (issue #16): S7's peak RSS with and without the sync in pieces.
        ServerSpec(
            "collab-unchunked",
            "collab",
            "memory",
            skips={s: ONLY_S7 for s in ("S1", "S2", "S3", "S4", "S5", "S6")},
            extra=("--sync-chunk-bytes", "0"),
        ),
        ServerSpec("relay", "relay", skips={"S4": NO_STATE, "S7": NO_STATE}),
        # collab-sqlite as two workers (issue #17): 1 vs 2 workers with
        # --server collab-sqlite --server collab-workers2.  The workers get both
        # cores, so on a 2-core machine they share one with the generator.
        ServerSpec(
            "collab-workers2",
            "collab",
            "sqlite",
            workers=2,
            cpus="0,1",
            opt_in=True,
            skips={"S2": SPLIT_MARKERS},
        ),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """argv under ``taskset -c cpu`` where there are two cores or more."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu, *argv]
    return argv


def raise_fd_limit(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (children inherit it); return the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(want, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            continue
    return soft


class ServerProcess:
    """A running server: ``pid`` is the server's own (taskset execs it)."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{spec.name}-"))
        argv, env, cwd = spec.command(self.port, self.workdir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            pinned(spec.cpus, argv),
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited at start:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                if self.spec.workers <= len(self.workers_serving()):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} did not listen within {timeout:g}s")

    def workers_serving(self, tries: int = 50) -> set[int]:
        """The workers of ``--workers`` seen answering /healthz (one connection per try:
        SO_REUSEPORT spreads them); {1} for a server of one process."""
        if self.spec.workers <= 1:
            return {1}
        seen: set[int] = set()
        for _ in range(tries):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    seen.add(int(json.load(resp)["worker"]["index"]))
            if len(seen) >= self.spec.workers:
                break
        return seen

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running(spec: ServerSpec, log_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(spec, log_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
