"""`collab serve --workers 2`: one port, two worker processes, one set of documents.

Real processes throughout: the supervisor, its workers, a real Redis (the
private redis-server the supervisor starts, or the test's own), a SQLite file
the workers share, and the chaos runner through its fault-injecting proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab.client import Session
from collab.testing.chaos import FAULT_KINDS
from collab.testing.server import ServerProcess
from tests.conftest import RedisServer
from tests.helpers import converged, eventually, random_marker_edits, sqlite_store
from tests.test_webhooks_e2e import SECRET, Receiver

pytestmark = pytest.mark.timeout(180)

MARKER = re.compile(r"\[[a-z]\d*\.\d+\]")


async def worker_health(http_url: str, count: int) -> dict[int, dict[str, Any]]:
    """Each worker's /healthz, by worker index: new connections until all answered.

    SO_REUSEPORT hashes each connection to a worker: a fresh connection
    per request (force_close) reaches any one.
    """
    seen: dict[int, dict[str, Any]] = {}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(100 * count):
            async with http.get(f"{http_url}/healthz") as resp:
                body = await resp.json()
            seen[body["worker"]["index"]] = body
            if len(seen) == count:
                break
    return seen


async def session_on_worker(
    http_url: str, index: int, tries: int = 100
) -> tuple[aiohttp.ClientSession, int]:
    """An HTTP session whose one keep-alive connection reaches worker ``index``; its pid.

    A WebSocket opened with it reuses that connection, hence lands on that
    worker (its reconnects open new connections and land anywhere).
    """
    for _ in range(tries):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        try:
            async with http.get(f"{http_url}/healthz") as resp:
                worker = (await resp.json())["worker"]
        except BaseException:
            await http.close()
            raise
        if worker["index"] == index:
            return http, int(worker["pid"])
        await http.close()
    raise AssertionError(f"{tries} connections, none reached worker {index}")


class Workers:
    """A `collab serve --workers 2` supervisor and what its /healthz says of each worker."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.store = f"sqlite:///{tmp_path / 'collab.db'}"
        self.process = ServerProcess("--workers", "2", "--store", self.store, *extra)
        self.sessions: list[Session] = []

    async def start(self) -> None:
        await self.process.start(timeout=60)
        await self.both_serving()

    async def health(self) -> dict[int, dict[str, Any]]:
        return await worker_health(self.process.http_url, 2)

    async def both_serving(self, timeout: float = 60) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}

        async def both() -> bool:
            nonlocal found
            try:
                found = await self.health()
            except aiohttp.ClientError:
                return False
            return len(found) == 2

        await eventually(both, timeout=timeout, interval=0.1)
        return found

    async def client(self, name: str) -> Session:
        session = Session(self.process.ws_url, name, min_backoff=0.05, max_backoff=0.5)
        self.sessions.append(session)
        await session.start()
        await session.wait_synced(20)
        return session

    async def clients_on_both_workers(self, name: str, most: int = 30) -> list[Session]:
        """Clients of ``name`` until each worker holds at least one of them."""
        await self.both_serving()  # a worker still starting takes no connection yet
        sessions = [await self.client(name)]
        for _ in range(most):
            counts = {i: h["connections"] for i, h in (await self.health()).items()}
            if len(counts) == 2 and all(counts.values()):
                return sessions
            sessions.append(await self.client(name))
        raise AssertionError(f"{most} clients all landed on one worker: {counts}")

    async def close_clients(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
        self.sessions.clear()


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    """Two workers on a SQLite file, linked by the private redis-server (no --redis-url)."""
    w = Workers(tmp_path, "--unload-grace", "60")
    await w.start()
    try:
        yield w
    finally:
        await w.close_clients()
        await w.process.close()


async def test_two_workers_answer_on_one_port_each_with_its_own_id(workers: Workers) -> None:
    health = await workers.both_serving()
    assert {h["worker"]["index"] for h in health.values()} == {1, 2}
    assert health[1]["worker"]["pid"] != health[2]["worker"]["pid"]
    # Linked by Redis: the private redis-server, each worker its own node.
    assert all(h["redis"]["ready"] for h in health.values())
    assert health[1]["redis"]["node"] != health[2]["redis"]["node"]


async def test_clients_on_different_workers_converge(workers: Workers) -> None:
    sessions = await workers.clients_on_both_workers("spread")
    rng = random.Random(3)
    results = await asyncio.gather(
        *(
            random_marker_edits(s, "abcdefghijklm"[i], 60, random.Random(rng.random()), MARKER)
            for i, s in enumerate(sessions)
        )
    )
    inserted = set().union(*(i for i, _ in results))
    kept = inserted - set().union(*(d for _, d in results))
    final = await converged(sessions, timeout=30)
    assert set(MARKER.findall(final)) == kept
    # Both workers hold the document: the edits crossed between processes.
    health = await workers.health()
    assert all(h["documents"] == 1 and h["connections"] > 0 for h in health.values()), health


async def test_sigterm_flushes_every_worker_and_the_supervisor_exits_0(tmp_path: Path) -> None:
    # A commit window far longer than the test: only the shutdown flush stores.
    w = Workers(tmp_path, "--unload-grace", "60", "--commit-window", "600")
    await w.start()
    try:
        async with asyncio.timeout(60):  # a hang fails here, not at pytest's 180 s
            sessions = await w.clients_on_both_workers("flush")
        for i, s in enumerate(sessions):
            text = s.doc.get("text", type=Text)
            text.insert(len(text), f"[w{i}.0]")
            await s.drain()
        final = await converged(sessions)
        assert len(MARKER.findall(final)) == len(sessions)
        for s in sessions:
            s._reconnect = False  # the workers are going away for good
        code = await w.process.stop(signal.SIGTERM, timeout=30)
        assert code == 0, "\n".join(w.process.log)
        assert any("all 2 workers stopped" in line for line in w.process.log)
    finally:
        async with asyncio.timeout(30):
            await w.close_clients()
            await w.process.close()
    async with sqlite_store(w.store) as store:
        update = await store.load("flush")
    assert update is not None
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    assert str(doc.get("text", type=Text)) == final


async def test_a_killed_worker_is_restarted_and_its_clients_come_back(workers: Workers) -> None:
    sessions = await workers.clients_on_both_workers("crash")
    before = await workers.health()
    victim = before[1]["worker"]["pid"]
    os.kill(victim, signal.SIGKILL)

    async def restarted() -> bool:
        try:
            health = await workers.health()
        except aiohttp.ClientError:
            return False
        return len(health) == 2 and health[1]["worker"]["pid"] != victim

    await eventually(restarted, timeout=60, interval=0.2)
    assert workers.process.running
    assert any("worker 1 (pid" in line and "SIGKILL" in line for line in workers.process.log)
    # The clients of the dead worker reconnect (to either worker) and edit on.
    for i, s in enumerate(sessions):
        text = s.doc.get("text", type=Text)
        text.insert(len(text), f"[k{i}.1]")
    final = await converged(sessions, timeout=30)
    assert len(MARKER.findall(final)) == len(sessions)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_private_redis_is_restarted_and_edits_cross_workers_again(
    workers: Workers,
) -> None:
    supervisor = workers.process.pid
    assert supervisor is not None
    (redis,) = [p for p in children(supervisor) if "redis-server" in command_of(p)]
    sessions = await workers.clients_on_both_workers("outage")
    os.kill(redis, signal.SIGKILL)

    async def restarted() -> bool:
        return any(p != redis and "redis-server" in command_of(p) for p in children(supervisor))

    await eventually(restarted, timeout=20, interval=0.1)
    # It came back empty: the workers reconnect, resync, and edits cross again.
    for i, s in enumerate(sessions):
        text = s.doc.get("text", type=Text)
        text.insert(len(text), f"[r{i}.1]")
    final = await converged(sessions, timeout=40)
    assert len(MARKER.findall(final)) == len(sessions)
    health = await workers.health()
    assert all(h["redis"]["ready"] for h in health.values()), health


async def test_a_killed_supervisor_takes_its_workers_and_redis_with_it(workers: Workers) -> None:
    supervisor = workers.process.pid
    assert supervisor is not None
    kids = children(supervisor)
    assert len(kids) == 3  # two workers and the private redis-server
    await workers.process.kill()
    # PR_SET_PDEATHSIG: each child gets SIGTERM when the supervisor dies.
    await eventually(lambda: not any(alive(k) for k in kids), timeout=30, interval=0.1)


async def test_workers_with_the_tests_redis_pass_the_chaos_runner(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    w = Workers(tmp_path, "--redis-url", redis_server.url)
    await w.start()
    report_path = tmp_path / "report.json"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collab", "chaos", "--no-progress", w.process.ws_url,
            "--clients", "10", "--duration", "10", "--seed", "17",
            "--faults", ",".join(k for k in FAULT_KINDS if k != "restart"),
            "--converge-timeout", "40", "--json", str(report_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(150):
            out, err = await proc.communicate()
        health = await w.health()
    finally:
        await w.process.close()
    assert proc.returncode == 0, out.decode() + err.decode()
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["converged"] and report["lost_count"] == 0
    assert report["acknowledged"] > 100
    # The runner's clients were spread over both workers.
    assert all(h["documents"] >= 1 for h in health.values()), health


async def test_one_edit_on_two_workers_gives_one_webhook_delivery(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    w = Workers(tmp_path, "--webhook-url", receiver.url, "--webhook-secret", SECRET)
    try:
        await w.start()
        sessions = await w.clients_on_both_workers("hooked")
        text = sessions[0].doc.get("text", type=Text)
        text.insert(0, "one edit")
        await converged(sessions)
        await eventually(lambda: bool(receiver.persisted("hooked")), timeout=30, interval=0.1)
        await asyncio.sleep(3)  # time is the input: a duplicate would arrive by now
    finally:
        await w.close_clients()
        await w.process.close()
        await receiver.stop()
    assert len(receiver.persisted("hooked")) == 1, receiver.events
    assert len(receiver.ids) == len(set(receiver.ids))


async def serve_fails(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """`collab serve ARGS` expected to stop at once: (exit status, stderr lines)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collab", "serve", "--port", "0", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


async def test_workers_refuse_a_memory_store_in_one_line() -> None:
    code, lines = await serve_fails("--workers", "2", "--store", "memory://")
    assert code == 2
    assert len(lines) == 1 and "memory://" in lines[0] and "sqlite://" in lines[0], lines


async def test_workers_without_redis_say_what_to_do_in_one_line(tmp_path: Path) -> None:
    # No redis-server on the PATH and no --redis-url.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    code, lines = await serve_fails(
        "--workers", "2", "--store", f"sqlite:///{tmp_path / 'c.db'}", env=env
    )
    assert code == 2
    assert len(lines) == 1 and "--redis-url" in lines[0] and "redis-server" in lines[0], lines


async def test_workers_on_a_file_a_lone_server_holds_stop_with_its_one_line(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'collab.db'}"
    async with ServerProcess("--store", store):
        code, lines = await serve_fails("--workers", "2", "--store", store)
    assert code == 1
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 1 and "in use by collab process" in errors[0], lines
