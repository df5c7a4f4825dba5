"""``collab serve --workers N``: N server processes on one port, sharing every document.

Why this shape (docs/scale-out.md, "Several cores, one command"):

* **SO_REUSEPORT.**  Each worker listens on the port with a socket of its
  own and Linux hashes every new connection to one of them, so long-lived
  WebSockets spread evenly over the workers.  One listening socket shared by
  forked workers wakes every worker per connection and lets whichever is
  least busy win, which piles connections on a few (the imbalance nginx and
  gunicorn document); a process that accepts and hands sockets on would be
  one more Python hop on every connection.
* **Redis Streams, as between separate processes.**  Two editors of one
  document usually land on different workers, so the workers replicate
  exactly as ``--redis-url`` processes do.  Without ``--redis-url`` the
  supervisor starts a private ``redis-server`` on a Unix socket in a fresh
  temporary folder (no port, no persistence: the store is the source of
  truth), restarts it if it dies (the workers resync, as after any Redis
  outage) and stops it last.
* **A supervisor parent** holds no documents: it starts the workers (the
  first alone, so a bad store or port is reported once), restarts one that
  dies, forwards SIGTERM/SIGINT so each worker closes its sockets with 1001
  and flushes, and exits 0 once all did.  It runs no event loop and no
  thread: signals and the workers' ready pipes wake one ``select``.  Its
  children get SIGTERM if it dies (``PR_SET_PDEATHSIG``), so a SIGKILLed
  supervisor leaves no orphan serving the port.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .config import Settings

log = logging.getLogger("collab.workers")

#: Set in a worker: "INDEX/COUNT" (1-based).
ENV_INDEX = "COLLAB_WORKER_INDEX"
#: The worker's settings as JSON (exact: no round trip through flag text).
ENV_SETTINGS = "COLLAB_WORKER_SETTINGS"
#: The descriptor a worker writes "ready" to once it listens.
ENV_READY_FD = "COLLAB_WORKER_READY_FD"

#: A worker that dies within this many seconds of its start is restarted
#: after a growing delay (1, 2, 4 ... 30 s), not at once.
_STABLE_AFTER = 10.0
_MAX_DELAY = 30.0
_PR_SET_PDEATHSIG = 1


class WorkersError(Exception):
    """Why the workers cannot start: one line for the log, and the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- in a worker ------------------------------------------------------------------


def worker_index() -> tuple[int, int] | None:
    """(index, count) when this process is a worker of ``--workers``, else None."""
    raw = os.environ.get(ENV_INDEX)
    if not raw:
        return None
    index, _, count = raw.partition("/")
    return int(index), int(count)


def inherited_settings() -> Settings:
    """The settings the supervisor handed this worker."""
    values: dict[str, Any] = json.loads(os.environ[ENV_SETTINGS])
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return Settings(**fields)


def tag_logs() -> None:
    """In a worker: say which worker in every log line (the workers share stderr)."""
    found = worker_index()
    if found is None:
        return
    from .logs import JsonFormatter

    index = found[0]

    class WorkerJson(JsonFormatter):
        def format(self, record: logging.LogRecord) -> str:
            entry: dict[str, Any] = json.loads(super().format(record))
            entry["worker"] = index
            return json.dumps(entry, ensure_ascii=False)

    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(WorkerJson())
        else:
            handler.setFormatter(
                logging.Formatter(
                    f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s"
                )
            )


def announce_ready() -> None:
    """Tell the supervisor this worker listens (a no-op outside a worker)."""
    raw = os.environ.pop(ENV_READY_FD, None)
    if raw is None:
        return
    fd = int(raw)
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


def status() -> dict[str, int] | None:
    """This worker, for /healthz: which one answered (each worker answers its own)."""
    found = worker_index()
    if found is None:
        return None
    return {"index": found[0], "workers": found[1], "pid": os.getpid()}


# -- the supervisor ---------------------------------------------------------------


def worker_count(settings: Settings) -> int:
    """``--workers``, with 0 meaning one per core."""
    return settings.workers or os.cpu_count() or 1


def supervise(settings: Settings) -> int:
    """Run ``worker_count(settings)`` workers until SIGTERM/SIGINT; the exit status."""
    supervisor = Supervisor(settings)
    try:
        return supervisor.run()
    except WorkersError as exc:
        log.error("%s", exc)
        return exc.status
    finally:
        supervisor.cleanup()


class _Worker:
    """One worker process and what the supervisor knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_fd: int | None = None
        self.ready = False
        self.started_at = 0.0
        #: Consecutive quick deaths (for the restart delay).
        self.failures = 0
        self.restart_at: float | None = None
        self.code: int | None = None


class Supervisor:
    """Starts, watches, restarts and stops the workers (and a private Redis)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = worker_count(settings)
        self.port = settings.port
        self.redis_url = settings.redis_url
        self.workers = [_Worker(i + 1) for i in range(self.count)]
        self.stopping = False
        #: Every worker listened once: from now on a dead one is restarted.
        self._serving = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = -1, -1
        self._redis: subprocess.Popen[bytes] | None = None
        self._redis_dir: str | None = None
        self._redis_restart_at: float | None = None
        self._redis_failures = 0
        self._redis_started = 0.0
        self._old_handlers: dict[int, Any] = {}
        self._prctl: Callable[..., int] | None = None

    # -- checks before anything starts -----------------------------------------------

    def check(self) -> None:
        """Refuse, in one line, what the workers could not serve."""
        if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
            raise WorkersError(
                "--workers needs Linux (SO_REUSEPORT balances connections over the workers); "
                "here, run one `collab serve` per port behind a proxy (docs/scale-out.md)"
            )
        scheme = urlsplit(self.settings.store).scheme
        if scheme == "memory":
            raise WorkersError(
                "--workers with a memory:// store: each worker would keep documents of its "
                "own; use sqlite:// (the default) or postgresql://"
            )
        if self.redis_url is None and shutil.which("redis-server") is None:
            raise WorkersError(
                "--workers needs Redis to share documents between the workers: give "
                "--redis-url redis://HOST:PORT/0, or install redis-server (e.g. apt-get "
                "install redis-server) and collab starts a private one"
            )

    def reserve_port(self) -> None:
        """Fail now, in one line, if the port is taken; resolve ``--port 0`` to one port.

        A bind without SO_REUSEPORT fails on a port where anyone listens, with
        or without the option, so a second ``--workers`` server on the same
        port cannot silently join this one's balancing.
        """
        host = self.settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, self.port))
            except OSError as exc:
                raise WorkersError(
                    f"cannot serve on {host}:{self.port}: {exc.strerror or exc}", 1
                ) from None
            self.port = int(probe.getsockname()[1])

    # -- the run ----------------------------------------------------------------------

    def run(self) -> int:
        self.check()
        self.reserve_port()
        self._install_signals()
        self._prctl = _load_prctl()
        if self.redis_url is None:
            self._start_redis()
            self._wait_redis()
        first = self.workers[0]
        self._spawn(first)
        others_started = False
        while True:
            if self.stopping and all(w.proc is None for w in self.workers):
                break
            self._wait_for_events()
            self._reap()
            if self.stopping:
                continue
            failed = next((w for w in self.workers if w.code is not None and not w.ready), None)
            if failed is not None and not self._serving:
                return self._fail_start(failed)
            if first.ready and not others_started:
                others_started = True
                for worker in self.workers[1:]:
                    self._spawn(worker)
            if not self._serving and all(w.ready for w in self.workers):
                self._serving = True
                log.info(
                    "%d workers serving http://%s:%d (pids %s); documents shared through %s",
                    self.count,
                    self.settings.host,
                    self.port,
                    ", ".join(str(w.proc.pid) for w in self.workers if w.proc is not None),
                    "a private redis-server" if self._redis is not None else "--redis-url",
                )
            self._restart_due()
        codes = [w.code for w in self.workers if w.code is not None]
        # -SIGTERM: stopped before it set up its handlers, with nothing to flush.
        clean = all(code in (0, -signal.SIGTERM) for code in codes)
        if clean:
            log.info("all %d workers stopped", self.count)
        else:
            log.error("workers stopped with exit codes %s", ", ".join(map(str, codes)))
        return 0 if clean else 1

    def _fail_start(self, failed: _Worker) -> int:
        """A worker died before it listened: stop the rest; the status of the failure."""
        code = failed.code if failed.code is not None else 1
        # `collab serve` explains its own known failures (store, port, settings)
        # in one line and exits 1 or 2: add nothing then.
        if code not in (1, 2):
            log.error(
                "worker %d exited with %s before it listened; nothing is served",
                failed.index,
                _describe(code),
            )
        self._stop_all()
        while any(w.proc is not None for w in self.workers):
            self._wait_for_events()
            self._reap()
        return code if code > 0 else 1

    # -- processes ----------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        settings = dataclasses.replace(
            self.settings, port=self.port, redis_url=self.redis_url, workers=1
        )
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            ENV_INDEX: f"{worker.index}/{self.count}",
            ENV_SETTINGS: json.dumps(dataclasses.asdict(settings)),
            ENV_READY_FD: str(write_fd),
        }
        try:
            worker.proc = subprocess.Popen(
                [sys.executable, "-m", "collab", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                # Its own process group: a terminal's ^C reaches the supervisor
                # only, which stops the workers in order.
                start_new_session=True,
                preexec_fn=self._die_with_parent(),
            )
        finally:
            os.close(write_fd)
        worker.ready_fd = read_fd
        worker.ready = False
        worker.code = None
        worker.started_at = time.monotonic()
        worker.restart_at = None
        self._selector.register(read_fd, selectors.EVENT_READ, worker)

    def _reap(self) -> None:
        """Note every worker that exited; schedule restarts while serving."""
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is None:
                continue
            worker.code = worker.proc.returncode
            pid = worker.proc.pid
            worker.proc = None
            worker.ready = False
            self._close_ready(worker)
            if self.stopping or not self._serving:
                continue
            ran = time.monotonic() - worker.started_at
            worker.failures = 0 if ran >= _STABLE_AFTER else worker.failures + 1
            delay = 0.0 if worker.failures == 0 else min(2.0 ** (worker.failures - 1), _MAX_DELAY)
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; restarting it%s",
                worker.index,
                pid,
                _describe(worker.code),
                ran,
                f" in {delay:g} s" if delay else "",
            )
            worker.restart_at = time.monotonic() + delay
        if self._redis is not None and self._redis.poll() is not None and not self.stopping:
            code = self._redis.returncode
            self._redis = None
            ran = time.monotonic() - self._redis_started
            self._redis_failures = 0 if ran >= _STABLE_AFTER else self._redis_failures + 1
            delay = 0.0 if not self._redis_failures else min(2.0**self._redis_failures, _MAX_DELAY)
            log.warning(
                "the private redis-server exited with %s; restarting it (the workers resync)",
                _describe(code),
            )
            self._redis_restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is None and worker.restart_at is not None and worker.restart_at <= now:
                self._spawn(worker)
        due = self._redis_restart_at
        if self._redis is None and due is not None and due <= now:
            self._redis_restart_at = None
            self._start_redis()

    def _close_ready(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            self._selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def _stop_all(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)

    # -- waiting ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            # A Python handler, even an empty one, makes the signal write its
            # number to the wakeup pipe, which ends the select below.
            self._old_handlers[sig] = signal.signal(sig, _noop)

    def _timeout(self) -> float | None:
        due = [w.restart_at for w in self.workers if w.proc is None and w.restart_at is not None]
        if self._redis_restart_at is not None:
            due.append(self._redis_restart_at)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _wait_for_events(self) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.data is None:
                try:
                    signals = os.read(self._wake_r, 512)
                except BlockingIOError:
                    continue
                if {signal.SIGTERM, signal.SIGINT} & set(signals) and not self.stopping:
                    log.info("stopping %d workers: each closes its sockets and flushes", self.count)
                    self._stop_all()
                continue
            worker: _Worker = key.data
            data = os.read(key.fd, 64)
            if data.startswith(b"ready"):
                worker.ready = True
                worker.restart_at = None
                if self._serving:
                    log.info("worker %d is serving again", worker.index)
            elif not data:  # EOF: it exited (reaped on SIGCHLD)
                self._selector.unregister(key.fd)
                os.close(key.fd)
                worker.ready_fd = None

    # -- the private Redis --------------------------------------------------------------

    def _start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # removed since check()
            raise WorkersError("redis-server is gone: give --redis-url", 1)
        if self._redis_dir is None:
            self._redis_dir = tempfile.mkdtemp(prefix="collab-redis-")
            self.redis_url = f"unix://{self._redis_dir}/redis.sock"
        self._redis = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                f"{self._redis_dir}/redis.sock",
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._redis_dir,
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=self._die_with_parent(),
        )
        self._redis_started = time.monotonic()

    def _wait_redis(self, timeout: float = 10.0) -> None:
        """Block until the private Redis answers PING (before any worker starts)."""
        assert self._redis is not None and self._redis_dir is not None
        path = f"{self._redis_dir}/redis.sock"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._redis.poll() is not None:
                raise WorkersError(
                    f"the private redis-server exited with {_describe(self._redis.returncode)} "
                    "at start; give --redis-url instead",
                    1,
                )
            if _pings(path):
                return
            time.sleep(0.02)  # a child's startup, no event to wait on
        raise WorkersError(f"the private redis-server did not answer within {timeout:g} s", 1)

    # -- teardown -----------------------------------------------------------------------

    def cleanup(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
            self._close_ready(worker)
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()
        if self._redis_dir is not None:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
        if self._wake_w >= 0:
            signal.set_wakeup_fd(-1)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._selector.unregister(self._wake_r)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self._selector.close()

    def _die_with_parent(self) -> Callable[[], None] | None:
        """A preexec_fn: SIGTERM the child when the supervisor dies (Linux).

        Safe here: the supervisor runs no thread that a fork could catch
        holding a lock.
        """
        prctl = self._prctl
        if prctl is None:
            return None
        parent = os.getpid()

        def preexec() -> None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # it died before prctl took effect
                os._exit(1)

        return preexec


def _noop(signum: int, frame: object) -> None:
    """Signals only wake the select (through the wakeup pipe)."""


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return None
    return prctl


def _pings(path: str) -> bool:
    """Whether a Redis listens on the Unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, None):
            log.debug("private redis-server not answering yet: %s", exc)
        return False


def _describe(code: int | None) -> str:
    if code is None:
        return "no status"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
