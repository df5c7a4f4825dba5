"""Merges of snapshot and log that never hold the server's GIL for long.

A ``Merger`` merges small inputs in a thread (a round trip to another
process would cost more than the merge) and big ones in worker processes
(``collab/store/worker.py``), because pycrdt holds the GIL while it applies
an update: compacting a 29 MB document in a thread stalled every other
document of the server for up to 1.3 s (issue #18, finding 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .base import CorruptDocument, StoreError
from .worker import MERGED, PartError, encode_request, merge_parts, read_answer

log = logging.getLogger("collab.store")

#: Inputs of at least this many bytes are merged in a worker process
#: (about 25 ms of GIL in a thread for a document of small edits).
PROCESS_BYTES = 256 * 1024
#: Worker processes at most; more big merges at once wait for one.
WORKERS = 2
#: Seconds a worker process may stay idle before it is stopped.
IDLE_SECONDS = 60.0

_WORKER = Path(__file__).with_name("worker.py")

Parts = Sequence[tuple[str, bytes]]


def build_update(name: str, parts: Parts) -> bytes | None:
    """``parts`` merged into one update; ``CorruptDocument`` names ``name`` and the bad part."""
    try:
        return merge_parts(parts)
    except PartError as exc:
        raise CorruptDocument(f"document {name!r}: {exc}") from None


class _Worker:
    """One worker process, used by one merge at a time (from a thread: blocking pipes)."""

    def __init__(self) -> None:
        # -P: do not put collab/store/ first on the path (its modules would
        # shadow nothing today, but a file named like a stdlib module would).
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.idle_since = 0.0

    def merge(self, parts: Parts) -> tuple[int, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.writelines(encode_request(parts))
            self.proc.stdin.flush()
            return read_answer(self.proc.stdout)
        except (OSError, EOFError, ValueError):
            # ValueError: the pipe was closed under us by stop().
            code = self.proc.poll()
            raise StoreError(
                f"the merge worker process exited{'' if code is None else f' with {code}'}"
            ) from None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self.proc.wait()


class Merger:
    """Merges parts into one update off the event loop, big merges in worker processes.

    Owns up to ``workers`` processes: started at first need, stopped after
    ``idle`` seconds without work and by ``close``.  ``process_bytes=None``
    merges everything in threads.
    """

    def __init__(
        self,
        *,
        process_bytes: int | None = PROCESS_BYTES,
        workers: int = WORKERS,
        idle: float = IDLE_SECONDS,
    ) -> None:
        self.process_bytes = process_bytes
        self._idle_seconds = idle
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._slots = asyncio.Semaphore(max(1, workers))
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False
        # A zipped or frozen install has no worker.py to run: threads then.
        self._no_processes = not _WORKER.is_file()
        #: Merges done in a worker process (for tests and metrics).
        self.in_process = 0

    async def merge(self, name: str, parts: Parts) -> bytes | None:
        """``parts`` as one update (None when empty); ``CorruptDocument`` names a bad part."""
        if not parts:
            return None
        size = sum(len(data) for _, data in parts)
        if self.process_bytes is None or size < self.process_bytes or self._no_processes:
            return await asyncio.to_thread(build_update, name, parts)
        async with self._slots:
            worker = await self._checkout()
            if worker is None:
                return await asyncio.to_thread(build_update, name, parts)
            try:
                status, payload = await asyncio.to_thread(worker.merge, parts)
            except BaseException:
                # Cancelled (the store closes) or the process died: the thread
                # may still be talking to it, so it is not reused.
                self._busy.discard(worker)
                await asyncio.to_thread(worker.stop)
                raise
            self._checkin(worker)
        self.in_process += 1
        if status != MERGED:
            raise CorruptDocument(f"document {name!r}: {payload.decode(errors='replace')}")
        return payload

    async def _checkout(self) -> _Worker | None:
        if self._closed:
            raise StoreError("the store is closed")
        if self._idle:
            worker = self._idle.pop()
        else:
            try:
                worker = await asyncio.to_thread(_Worker)
            except OSError as exc:
                log.warning("cannot start a merge process (%s): big merges run in threads", exc)
                self._no_processes = True
                return None
        self._busy.add(worker)
        return worker

    def _checkin(self, worker: _Worker) -> None:
        self._busy.discard(worker)
        loop = asyncio.get_running_loop()
        if self._closed:
            loop.run_in_executor(None, worker.stop)
            return
        worker.idle_since = loop.time()
        self._idle.append(worker)
        if self._reaper is None:
            self._reaper = loop.call_later(self._idle_seconds, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self._idle_seconds
        stale = [w for w in self._idle if w.idle_since <= cutoff]
        self._idle = [w for w in self._idle if w.idle_since > cutoff]
        for worker in stale:
            loop.run_in_executor(None, worker.stop)
        if self._idle:
            delay = min(w.idle_since for w in self._idle) + self._idle_seconds - loop.time()
            self._reaper = loop.call_later(max(delay, 0.0), self._reap)

    async def close(self) -> None:
        """Stop every worker process (a merge under way fails with ``StoreError``)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        for worker in workers:
            await asyncio.to_thread(worker.stop)
