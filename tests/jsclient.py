"""The real JavaScript client (yjs + y-websocket) as a test fixture.

Each JS client is a ``node tests/interop/client.mjs`` subprocess driven with one
JSON command per line on stdin; it answers each with one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import pytest

from collab.testing.server import InProcessServer

INTEROP_DIR = Path(__file__).parent / "interop"
CLIENT_SCRIPT = INTEROP_DIR / "client.mjs"
#: How long one command to a JS client may take before the test fails.
REPLY_TIMEOUT = 20.0


class JsClientError(AssertionError):
    """A JS client failed: it died, answered garbage or reported an error."""


class JsClient:
    """One ``client.mjs`` process: a WebsocketProvider on one document."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.client_id = 0
        #: The text when the provider first synced.
        self.initial_text = ""
        self._stderr: list[str] = []
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        self._lock = asyncio.Lock()

    async def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _fail(self, message: str) -> JsClientError:
        stderr = "\n".join(f"    {line}" for line in self._stderr[-30:]) or "    (empty)"
        return JsClientError(
            f"JS client on {self.name!r} (pid {self.proc.pid}): {message}\n  stderr:\n{stderr}"
        )

    async def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise self._fail(f"no answer within {timeout}s") from None
        if not line:
            await self._stderr_settled()
            raise self._fail(f"exited with {self.proc.returncode} without answering")
        try:
            message = json.loads(line)
        except ValueError:
            raise self._fail(f"answered with something not JSON: {line!r}") from None
        if not isinstance(message, dict):
            raise self._fail(f"answered with a non-object: {line!r}")
        return message

    async def _stderr_settled(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.proc.wait()
                await self._stderr_task

    async def wait_ready(self, timeout: float = REPLY_TIMEOUT) -> None:
        hello = await self._read_message(timeout)
        if hello.get("ready") is not True:
            raise self._fail(f"expected the ready line, got {hello!r}")
        self.client_id = int(hello["client_id"])
        self.initial_text = str(hello["text"])

    async def request(
        self, cmd: str, *, reply_timeout: float = REPLY_TIMEOUT, **args: Any
    ) -> dict[str, Any]:
        """Send one command and return its answer; an ``ok: false`` answer fails the test."""
        assert self.proc.stdin is not None
        async with self._lock:
            if self.proc.returncode is not None:
                raise self._fail(f"already exited with {self.proc.returncode}")
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            try:
                await self.proc.stdin.drain()
            except ConnectionError:
                await self._stderr_settled()
                raise self._fail(f"stdin closed while sending {cmd!r}") from None
            reply = await self._read_message(reply_timeout)
        if reply.get("ok") is not True:
            raise self._fail(
                f"{cmd} {args!r} failed: {reply.get('error')!r}; its text: {reply.get('text')!r}"
            )
        return reply

    async def text(self) -> str:
        return str((await self.request("text"))["text"])

    async def insert(self, index: int, content: str) -> str:
        """Insert at ``index``, counted in UTF-16 code units like JavaScript does."""
        return str((await self.request("insert", index=index, text=content))["text"])

    async def delete(self, index: int, length: int) -> str:
        return str((await self.request("delete", index=index, length=length))["text"])

    async def set_awareness_field(self, field: str, value: Any) -> None:
        await self.request("awareness", field=field, value=value)

    async def awareness_states(self) -> dict[int, Any]:
        states: dict[str, Any] = (await self.request("states"))["states"]
        return {int(client_id): state for client_id, state in states.items()}

    async def wait_text(self, expected: str, timeout: float = 10.0) -> None:
        """Wait until the JS document's text is ``expected``."""
        try:
            # The JS side times out first and reports the text it ended with.
            await self.request(
                "wait_text",
                text=expected,
                timeout=int(timeout * 1000),
                reply_timeout=timeout + REPLY_TIMEOUT,
            )
        except JsClientError as exc:
            raise AssertionError(f"JS text never became {expected!r}:\n{exc}") from None

    async def exit(self) -> None:
        """Ask the client to leave cleanly and wait for the process to end."""
        await self.request("exit")
        async with asyncio.timeout(10):
            await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL: the socket drops without any goodbye."""
        if self.proc.returncode is None:
            self.proc.kill()
        async with asyncio.timeout(10):
            await self.proc.wait()

    async def cleanup(self) -> None:
        """Kill the process if needed and release its pipes."""
        with contextlib.suppress(ProcessLookupError):
            await self.kill()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.proc.stdout.read()
                await self._stderr_task
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task


class JsClientFactory(Protocol):
    def __call__(
        self, name: str, *, url: str | None = ..., token: str | None = ...
    ) -> Awaitable[JsClient]: ...


@pytest.fixture
async def make_js_client(
    require_node: None, server: InProcessServer
) -> AsyncIterator[JsClientFactory]:
    """Start synced JS clients; every node process is killed after the test."""
    clients: list[JsClient] = []

    async def factory(name: str, *, url: str | None = None, token: str | None = None) -> JsClient:
        env = {**os.environ, "COLLAB_TOKEN": token} if token else None
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT_SCRIPT),
            url or server.ws_url,
            name,
            str(int(REPLY_TIMEOUT * 1000)),
            cwd=INTEROP_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=4 * 1024 * 1024,
            env=env,
        )
        client = JsClient(name, proc)
        clients.append(client)
        await client.wait_ready()
        return client

    yield factory
    await asyncio.gather(*(c.cleanup() for c in clients), return_exceptions=True)


def utf16_len(s: str) -> int:
    """Length as JavaScript counts it."""
    return len(s.encode("utf-16-le")) // 2
