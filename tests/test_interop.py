"""The real JavaScript client (yjs + y-websocket) against the server, next to Python clients.

Each JS client is a ``node tests/interop/client.mjs`` subprocess driven with one
JSON command per line on stdin; it answers each with one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import pytest
from pycrdt import Text

from collab.auth import issue_token
from collab.client import Session
from collab.keys import MANAGER
from tests.conftest import ClientFactory, RunningServer, ServerFactory
from tests.helpers import eventually, text_of
from tests.processes import ServerProcess, running

pytestmark = pytest.mark.timeout(60)

INTEROP_DIR = Path(__file__).parent / "interop"
CLIENT_SCRIPT = INTEROP_DIR / "client.mjs"
#: How long one command to a JS client may take before the test fails.
REPLY_TIMEOUT = 20.0
MARKER = re.compile(r"\[[pj]\d+\.\d+\]")


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
    require_node: None, server: RunningServer
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


async def test_js_client_and_python_client_see_each_others_edits(
    make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    py = await make_client("interop-edits")
    js = await make_js_client("interop-edits")
    text = py.doc.get("text", type=Text)

    text += "hello from python"
    await js.wait_text("hello from python")

    await js.insert(0, "JS: ")
    await py.wait_for(lambda: str(text) == "JS: hello from python")

    await js.delete(4, 6)  # "hello "
    await py.wait_for(lambda: str(text) == "JS: from python")

    del text[0:4]
    text.insert(len(text), "!")
    await js.wait_text("from python!")

    # Beyond ASCII: each side appends at its own notion of the end.
    current = "from python! naïve ☃ 👋"
    await js.insert(utf16_len("from python!"), " naïve ☃ 👋")
    await py.wait_for(lambda: str(text) == current)
    text += " 🎉 ünïcode"
    await js.wait_text(current + " 🎉 ünïcode")


async def test_js_late_joiner_receives_full_state(
    make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    writer = await make_client("interop-late")
    text = writer.doc.get("text", type=Text)
    for i in range(50):
        text.insert(len(text), f"line {i}\n")
    del text[0 : len("line 0\n")]
    text += "the end ✓\n"
    expected = str(text)
    # close() sends everything queued and completes the closing handshake, which
    # the server answers only after applying every frame before it.
    await writer.close()

    js = await make_js_client("interop-late")
    assert js.initial_text == expected  # all of it in the sync step 2, nothing later
    assert await js.text() == expected

    # And the document the JS client got is a live one a Python client shares.
    await js.insert(0, "js was here\n")
    reader = await make_client("interop-late")
    await reader.wait_for(lambda: text_of(reader) == "js was here\n" + expected)


async def _python_edits(
    session: Session, who: int, ops: int, rng: random.Random
) -> tuple[set[str], set[str]]:
    text = session.doc.get("text", type=Text)
    inserted: set[str] = set()
    deleted: set[str] = set()
    for k in range(ops):
        current = str(text)
        markers = list(MARKER.finditer(current))
        if markers and rng.random() < 0.3:
            m = rng.choice(markers)
            del text[m.start() : m.end()]
            deleted.add(m.group())
        else:
            marker = f"[p{who}.{k}]"
            text.insert(rng.choice([0, *(m.end() for m in markers)]), marker)
            inserted.add(marker)
        # Pacing, not waiting: let remote edits arrive between ours.
        await asyncio.sleep(rng.choice((0, 0.001, 0.003)))
    return inserted, deleted


async def _js_edits(
    js: JsClient, who: int, ops: int, rng: random.Random
) -> tuple[set[str], set[str]]:
    inserted: set[str] = set()
    deleted: set[str] = set()
    current = js.initial_text
    for k in range(ops):
        markers = MARKER.findall(current)
        if markers and rng.random() < 0.3:
            victim = rng.choice(markers)
            # By content, in the client itself: the text may have moved meanwhile.
            reply = await js.request("delete", find=victim)
            if reply["applied"]:
                deleted.add(victim)
        else:
            marker = f"[j{who}.{k}]"
            anchor = rng.choice([None, *markers])
            reply = {"applied": False}
            if anchor is not None:
                reply = await js.request("insert", after=anchor, text=marker)
            if not reply["applied"]:
                reply = await js.request("insert", index=0, text=marker)
            inserted.add(marker)
        current = str(reply["text"])
    return inserted, deleted


@pytest.mark.parametrize("seed", [7, 2024])
async def test_python_and_js_clients_converge_under_concurrent_edits(
    make_client: ClientFactory, make_js_client: JsClientFactory, seed: int
) -> None:
    name = f"interop-concurrent-{seed}"
    ops = 30
    pys = [await make_client(name) for _ in range(3)]
    jss = [await make_js_client(name) for _ in range(3)]

    results = await asyncio.gather(
        *(_python_edits(s, i, ops, random.Random(seed * 100 + i)) for i, s in enumerate(pys)),
        *(_js_edits(j, i, ops, random.Random(seed * 100 + 50 + i)) for i, j in enumerate(jss)),
    )

    async def texts() -> list[str]:
        return [text_of(s) for s in pys] + list(await asyncio.gather(*(j.text() for j in jss)))

    async def same() -> bool:
        return len(set(await texts())) == 1

    try:
        await eventually(same, timeout=30, interval=0.05)
    except AssertionError:
        listing = "\n".join(f"  {i}: {t!r}" for i, t in enumerate(await texts()))
        raise AssertionError(f"3 Python + 3 JS clients did not converge:\n{listing}") from None

    final = text_of(pys[0])
    inserted = set().union(*(r[0] for r in results))
    deleted = set().union(*(r[1] for r in results))
    survivors = MARKER.findall(final)
    assert len(survivors) == len(set(survivors)), "a marker appears twice"
    assert set(survivors) == inserted - deleted
    assert MARKER.sub("", final) == "", "text holds fragments of markers"


@pytest.mark.parametrize("how", ["killed", "clean-exit"])
async def test_js_awareness_reaches_python_and_is_removed_when_js_client_exits(
    make_client: ClientFactory, make_js_client: JsClientFactory, how: str
) -> None:
    py = await make_client("interop-presence")
    py.set_presence({"user": {"name": "python"}})
    js = await make_js_client("interop-presence")
    user = {"name": "js", "color": "#ff8800"}
    await js.set_awareness_field("user", user)

    def js_seen() -> bool:
        return py.awareness.states.get(js.client_id, {}).get("user") == user

    await py.wait_for(js_seen, timeout=10)

    # The other way round: the JS client sees the Python client's presence.
    async def python_seen() -> bool:
        states = await js.awareness_states()
        state = states.get(py.awareness.client_id) or {}
        return bool(state.get("user") == {"name": "python"})

    await eventually(python_seen, timeout=10, interval=0.05)

    if how == "killed":
        await js.kill()
    else:
        await js.exit()
    # Well before the 30 s awareness timeout: the server drops it when the socket closes.
    await py.wait_for(lambda: js.client_id not in py.awareness.states, timeout=10)
    assert py.awareness.states.get(py.awareness.client_id) == {"user": {"name": "python"}}


async def test_js_client_offline_edits_reach_server_after_reconnect(
    server: RunningServer, make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    py = await make_client("interop-offline")
    js = await make_js_client("interop-offline")
    text = py.doc.get("text", type=Text)
    text += "base."
    await js.wait_text("base.")

    await server.stop()
    # Both edit while the server is down (and, once it is back, knows nothing:
    # the memory store starts empty).  Only what the clients re-send survives.
    await js.insert(0, "[js offline]")
    text += "[py offline]"
    await server.start()

    expected = "[js offline]base.[py offline]"
    await py.wait_for(lambda: str(text) == expected, timeout=20)
    await js.wait_text(expected, timeout=20)

    # A newcomer gets it all from the server alone.
    late = await make_js_client("interop-offline")
    assert late.initial_text == expected


async def test_js_edits_survive_a_sigkilled_sqlite_server(
    tmp_path: Path, make_js_client: JsClientFactory
) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    server = ServerProcess("--store", store)
    await server.start()
    try:
        writer = await make_js_client("persisted", url=server.ws_url)
        for i in range(20):
            await writer.insert(utf16_len(await writer.text()), f"js line {i}\n")
        expected = await writer.text()
        await asyncio.sleep(1.0)  # SIGKILL one second after the last edit
        await server.kill()
        # The writer must not re-send its copy: only the store may restore it.
        await writer.kill()
    finally:
        if server.proc is not None and server.proc.returncode is None:
            await server.kill()
    async with running("--store", store, port=server.port) as again:
        reader = await make_js_client("persisted", url=again.ws_url)
        assert reader.initial_text == expected


async def test_read_only_js_client_edits_never_reach_the_document_or_others(
    make_server: ServerFactory, make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    secret = "interop-secret-that-is-long-enough-for-hs256"
    server = await make_server(auth_secret=secret)
    writer = await make_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "write", 600)
    )
    writer.doc.get("text", type=Text).insert(0, "original")
    reader = await make_js_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "read", 600)
    )
    await reader.wait_text("original")
    await reader.insert(0, "vandal ")  # applied locally in the tab, refused by the server
    writer.doc.get("text", type=Text).insert(8, "!")
    await reader.wait_text("vandal original!")  # it still receives live changes
    other = await make_js_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "read", 600)
    )
    assert other.initial_text == "original!"
    assert text_of(writer) == "original!"
    assert str(server.app[MANAGER].rooms["guarded"].doc.get("text", type=Text)) == "original!"
