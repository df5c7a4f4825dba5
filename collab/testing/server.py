"""Real collab servers for tests: in this process, or as a `collab serve` child process.

``InProcessServer`` runs the aiohttp application on the test's own event
loop (fast to start, easy to monkeypatch); ``ServerProcess`` runs
``python -m collab serve`` so it can be killed with SIGKILL like a crashed
production server.  Both listen on a free port of 127.0.0.1, keep that port
across ``restart()``, and expose ``ws_url`` (``ws://127.0.0.1:PORT/ws``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

# Imported here, not when a server starts: importing the server inside a
# running event loop would count as blocking it (the suite's loop guard).
from collab.config import Settings
from collab.server import Server

if TYPE_CHECKING:
    from collab.hooks import Hooks

__all__ = ["InProcessServer", "ServerProcess", "free_port", "store_url"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def store_url(store: str, directory: Path | None = None) -> str:
    """``memory`` -> ``memory://``, ``sqlite`` -> a database in ``directory``; URLs pass."""
    if store == "memory":
        return "memory://"
    if store == "sqlite":
        if directory is None:
            raise ValueError("the sqlite store needs a directory (tmp_path)")
        return f"sqlite:///{directory.resolve() / 'collab.db'}"
    if "://" not in store:
        raise ValueError(f"store is memory, sqlite or a store URL, not {store!r}")
    return store


class InProcessServer:
    """A collab server on this event loop; ``restart`` closes every socket with 1001.

    ``hooks`` are handed to the ``collab.Server`` (a fresh one per start, so
    a restart starts from the store like a real one); ``server`` is the
    running ``collab.Server`` (``open_document``, permissions, its hooks).
    """

    def __init__(self, *, hooks: Sequence[Hooks] = (), **settings: Any) -> None:
        defaults: dict[str, Any] = {"store": "memory://", "unload_grace": 0.2}
        defaults.update(settings)
        defaults.setdefault("port", free_port())
        self.settings = Settings(**defaults)
        self.hooks = tuple(hooks)
        self._server: Server | None = None
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._restarting = asyncio.Lock()
        self.restarts = 0

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def app(self) -> web.Application:
        """The running application (its room manager, store, metrics)."""
        if self._app is None:
            raise RuntimeError("the server has not been started")
        return self._app

    @property
    def server(self) -> Server:
        """The running ``collab.Server``."""
        if self._server is None:
            raise RuntimeError("the server has not been started")
        return self._server

    async def start(self) -> InProcessServer:
        self._server = Server(self.settings, hooks=self.hooks)
        self._app = self._server.app
        runner = web.AppRunner(self._app, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Close every socket with 1001, flush the store and stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        """Stop and start again on the same port (documents survive with a durable store)."""
        async with self._restarting:  # a second restart waits for the first
            await self.stop()
            await self.start()
            self.restarts += 1

    async def __aenter__(self) -> InProcessServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ServerProcess:
    """``python -m collab serve`` as a child process; ``restart(hard=True)`` is a SIGKILL.

    Its log goes to ``log_path`` when given, else its last lines are kept in
    ``log`` (and quoted when it fails to start).  Every started process is
    remembered until it exits: ``kill_leftovers()`` ends what a failed or
    timed-out test left behind.
    """

    alive: ClassVar[set[ServerProcess]] = set()

    def __init__(self, *args: str, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.log_path = log_path
        #: The last lines the server logged (when there is no ``log_path``).
        self.log: deque[str] = deque(maxlen=1000)
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._log: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._restarting = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id of the running server (to read its memory, say)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> ServerProcess:
        if self.log_path is not None and self._log is None:
            self._log = await asyncio.to_thread(self.log_path.open, "ab")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log or asyncio.subprocess.DEVNULL,
            stderr=self._log or asyncio.subprocess.PIPE,
        )
        ServerProcess.alive.add(self)
        if self._log is None:
            self._reader = asyncio.get_running_loop().create_task(self._keep_log(self._proc))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc.returncode is not None:
                await self._log_read()
                raise RuntimeError(
                    f"collab serve exited with {self._proc.returncode} at start"
                    + (f"; see {self.log_path}" if self.log_path else ":\n" + "\n".join(self.log))
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    await self.stop(signal.SIGKILL)
                    raise TimeoutError(f"collab serve did not listen within {timeout}s") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return self

    async def _keep_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())

    async def _log_read(self) -> None:
        """Wait (briefly) until the log of an exited process has been read to its end."""
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig`` and wait for the process to exit; returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        ServerProcess.alive.discard(self)
        await self._log_read()
        return code

    async def kill(self) -> int | None:
        """SIGKILL, like a crash."""
        return await self.stop(signal.SIGKILL)

    @classmethod
    def kill_leftovers(cls) -> None:
        """SIGKILL every server process started here and not stopped (test teardown)."""
        for server in list(cls.alive):
            if server._proc is not None and server._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    server._proc.kill()
        cls.alive.clear()

    async def restart(self, *, hard: bool = True) -> None:
        """Kill (SIGKILL when ``hard``, else SIGTERM) and start again on the same port."""
        async with self._restarting:
            await self.stop(signal.SIGKILL if hard else signal.SIGTERM)
            await self.start()
            self.restarts += 1

    async def close(self) -> None:
        await self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> ServerProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
