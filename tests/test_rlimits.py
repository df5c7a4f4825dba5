"""The open-file limit of a real `collab serve`: raised at start, exhaustion logged."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from collab.testing.server import free_port
from tests.helpers import eventually

resource = pytest.importorskip("resource", reason="needs rlimits")

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/limits").exists(), reason="needs Linux rlimits and /proc"
)


class LimitedServer:
    """``collab serve`` started under RLIMIT_NOFILE ``(soft, hard)``, its log kept."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log)

    def soft_limit(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no open-file limit in /proc")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


@contextlib.asynccontextmanager
async def limited_server(soft: int, hard: int, *args: str) -> AsyncIterator[LimitedServer]:
    port = free_port()
    # The limit is set in the child itself, as a shell's `ulimit -n` would.
    start = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from collab.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        start,
        "serve",
        "--store",
        "memory://",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = LimitedServer(proc, port)
    try:
        await eventually(lambda: server.logged("serving http://"), timeout=30)
        yield server
    finally:
        await server.stop()


async def test_serve_raises_its_soft_open_file_limit_to_the_hard_one_and_says_so() -> None:
    # A hard limit may be lowered by anyone, raised only by root: stay under ours.
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    async with limited_server(256, hard) as server:
        assert server.soft_limit() == hard
        assert server.logged(f"open-file limit raised from 256 to {hard}")
        # 4,096 descriptors cannot hold the default 10,000 connections: said at start.
        assert server.logged("fewer than --max-connections 10000")


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_accepts_failing_for_want_of_descriptors_are_logged(event_loop: str) -> None:
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    async with limited_server(
        64, 64, "--event-loop", event_loop, "--request-timeout", "600"
    ) as server:
        assert server.logged("open-file limit is 64 (hard limit 64)")
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(80):  # more idle sockets than the server has descriptors
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                idle.append(writer)
            await eventually(lambda: server.logged("out of file descriptors"), timeout=20)
            assert not server.logged("Traceback")  # one line of ours, not a traceback each
        finally:
            for writer in idle:
                writer.close()
        await eventually(lambda: server.logged("file descriptors are available again"), 20)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/ws/doc")
            await ws.close()


def test_an_unlimited_hard_limit_raises_the_soft_one_to_the_most_the_system_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # macOS: the hard limit is unlimited, the soft one cannot be, and the
    # kernel caps it lower still.
    from collab import rlimits

    unlimited = resource.RLIM_INFINITY
    asked: list[int] = []

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        asked.append(limits[0])
        if limits[0] > 10_240:
            raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, unlimited))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert rlimits.raise_open_files(100) == rlimits.OpenFiles(256, 10_240, -1)
    assert asked == [1 << 20, 10_240]
