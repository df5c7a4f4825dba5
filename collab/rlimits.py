"""The open-file limit: raised at start, watched while serving (issue #18).

Every socket is a file descriptor.  Most systems start a process with a
soft limit of 1,024 descriptors under a much higher hard limit, so a server
that keeps the soft one stops accepting at about a thousand connections,
whatever ``--max-connections`` says.  ``collab serve`` raises the soft
limit to the hard one at start and logs what it got.

When the descriptors run out anyway, accepts fail: asyncio logs a
traceback per attempt, and uvloop (libuv) accepts and drops the connection
without a word.  ``DescriptorWatch`` notices either way, with one cheap
probe a second, and says so in collab's own log lines.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no rlimits
    resource = None  # type: ignore[assignment]

log = logging.getLogger("collab.rlimits")

#: Descriptors a server needs besides its client sockets (listener, store,
#: log, event loop, threads' files).
RESERVED = 64

#: Where the hard limit is unlimited (macOS), the soft one cannot be: ask for this.
_UNLIMITED_CAP = 1 << 20

#: asyncio's message for an accept that failed with EMFILE, ENFILE, ENOBUFS or ENOMEM.
_ACCEPT_FAILED = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The soft open-file limit before and after ``raise_open_files``; ``hard`` -1: unlimited."""

    before: int
    after: int
    hard: int


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE now (None where there are no rlimits)."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return -1 if soft == resource.RLIM_INFINITY else soft


def raise_open_files(max_connections: int) -> OpenFiles | None:
    """Raise the soft open-file limit to the hard one; log it and any shortfall."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    after = soft
    if soft != unlimited:
        # macOS refuses an unlimited soft limit and may refuse its own hard one.
        targets = [_UNLIMITED_CAP, 10_240] if hard == unlimited else [hard, 10_240]
        for target in targets:
            if target <= soft or (hard != unlimited and target > hard):
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            after = target
            break
    shown_hard = -1 if hard == unlimited else hard
    result = OpenFiles(soft, after, shown_hard)
    if after != soft:
        log.info(
            "open-file limit raised from %d to %d (hard limit %s)", soft, after, _shown(shown_hard)
        )
    else:
        log.info(
            "open-file limit is %s (hard limit %s)",
            _shown(-1 if soft == unlimited else soft),
            _shown(shown_hard),
        )
    if after != unlimited and after < max_connections + RESERVED:
        log.warning(
            "open-file limit %d allows about %d connections, fewer than --max-connections %d: "
            "raise the hard limit (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=)",
            after,
            max(after - RESERVED, 0),
            max_connections,
        )
    return result


def _shown(limit: int) -> str:
    return "unlimited" if limit == -1 else str(limit)


class DescriptorWatch:
    """Logs, in collab's format, when no file descriptor is left for a new connection.

    One probe a second (open and close ``/dev/null``) for the whole server;
    asyncio's own accept errors are turned into the same lines instead of
    a traceback each.  Logs at once, then every ``repeat`` seconds while it
    lasts, and once more when descriptors are free again.
    """

    def __init__(self, *, interval: float = 1.0, repeat: float = 60.0) -> None:
        self.interval = interval
        self.repeat = repeat
        #: Failed probes and accepts since the last line.
        self.failures = 0
        self._since: float | None = None
        self._logged_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._previous_handler: Any = None

    @property
    def exhausted(self) -> bool:
        return self._since is not None

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._exception_handler)
        self._timer = loop.call_later(self.interval, self._probe)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        # Another watch may have wrapped ours since (two servers, one loop):
        # then it passes our calls on, and restoring would drop it.
        if loop is not None and loop.get_exception_handler() == self._exception_handler:
            loop.set_exception_handler(self._previous_handler)
        self._loop = None

    def _probe(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.interval, self._probe)
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self.failed(exc)
            return
        os.close(fd)
        if self._since is not None:
            log.warning(
                "file descriptors are available again after %.0fs: accepting connections",
                time.monotonic() - self._since,
            )
            self._since = None
            self.failures = 0

    def failed(self, exc: OSError) -> None:
        """An accept or a probe found no descriptor left."""
        now = time.monotonic()
        self.failures += 1
        if self._since is None:
            self._since = now
        elif now - self._logged_at < self.repeat:
            return
        log.error(
            "out of file descriptors (%s; open-file limit %s): new connections are refused "
            "(%d failed accepts or probes%s); raise the limit (ulimit -n, systemd "
            "LimitNOFILE=) or lower --max-connections",
            exc.strerror or exc,
            _shown(open_file_limit() or -1),
            self.failures,
            f" in {now - self._since:.0f}s" if now > self._since else "",
        )
        self._logged_at = now
        self.failures = 0

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == _ACCEPT_FAILED and isinstance(exc, OSError):
            self.failed(exc)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)
