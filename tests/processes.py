"""`collab serve` as a real subprocess, for crash and restart tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import ClassVar

from tests.conftest import free_port


class ServerProcess:
    """One `collab serve` process; ``start`` waits until it listens.

    Every started process is remembered until it exits, so that the session
    can kill what a failed or timed-out test left behind.
    """

    alive: ClassVar[set[ServerProcess]] = set()

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--port",
            str(self.port),
            *self.args,
            stderr=asyncio.subprocess.PIPE,
        )
        ServerProcess.alive.add(self)
        listening = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log(listening))
        async with asyncio.timeout(timeout):
            waiter = asyncio.ensure_future(listening.wait())
            exited = asyncio.ensure_future(self.proc.wait())
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            exited.cancel()
        if not listening.is_set():
            raise RuntimeError("collab serve exited at start:\n" + "\n".join(self.log))

    async def _read_log(self, listening: asyncio.Event) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if " serving http://" in line:
                listening.set()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL if it takes too long)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        ServerProcess.alive.discard(self)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


@contextlib.asynccontextmanager
async def running(*args: str, port: int | None = None) -> AsyncIterator[ServerProcess]:
    """A started server, killed at the end if still running."""
    server = ServerProcess(*args, port=port)
    await server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.returncode is None:
            await server.kill()


def kill_leftovers() -> None:
    """SIGKILL every server process a test started and did not stop."""
    for server in list(ServerProcess.alive):
        if server.proc is not None and server.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                server.proc.kill()
    ServerProcess.alive.clear()
