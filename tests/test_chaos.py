"""`collab chaos`: many clients through a faulty network converge and lose nothing,
and the checker catches servers that do lose edits.

The runs are seeded and short (about 10 s of editing); the full-size run is
`collab chaos --serve --clients 20 --duration 60`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Doc

from collab import protocol
from collab.connection import Connection
from collab.testing.chaos import FAULT_KINDS, ChaosConfig, make_schedule, run_chaos
from collab.testing.plugin import ServerFactory
from collab.testing.server import free_port


async def chaos_cli(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    """Run `python -m collab chaos ARGS`; returns (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        "chaos",
        "--no-progress",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_every_fault_against_a_served_collab_converges_with_no_lost_edit(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    code, out, err = await chaos_cli(
        "--serve",
        "--clients",
        "10",
        "--duration",
        "12",
        "--faults",
        ",".join(FAULT_KINDS),
        "--seed",
        "11",
        "--converge-timeout",
        "30",
        "--json",
        str(report_path),
    )
    assert code == 0, out + err
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["converged"]
    assert report["lost_count"] == 0 and not report["duplicated"] and not report["corrupted"]
    assert set(report["faults"]) == set(FAULT_KINDS), report["faults"]
    assert report["edits"]["insert"] > 100 and report["edits"]["delete"] > 0
    assert report["acknowledged"] > 100
    assert "result       PASS" in out
    assert "--seed 11" in out  # the replay line


async def test_in_process_sqlite_server_with_graceful_restarts_loses_nothing(
    collab_server_factory: ServerFactory,
) -> None:
    server = await collab_server_factory(store="sqlite", commit_window=0.01)
    config = ChaosConfig(
        url=server.ws_url, clients=6, duration=8, seed=5, rate=4, converge_timeout=30
    )
    report = await run_chaos(config, restart=server.restart)
    assert report.ok, report.format()
    assert server.restarts == report.faults["restart"] >= 1
    assert set(report.faults) == set(FAULT_KINDS)


class LossyRelay:
    """A Yjs relay with a bug: every ``drop_every``-th update it forwards to a peer
    is silently not sent (the kind of bug a fan-out loop with a bad ``continue`` has)."""

    def __init__(self, drop_every: int = 10) -> None:
        self.drop_every = drop_every
        self.docs: dict[str, Doc[Any]] = {}
        self.peers: dict[str, set[web.WebSocketResponse]] = {}
        self.forwarded = itertools.count(1)
        self.dropped = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        name = request.match_info["doc"]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        doc = self.docs.setdefault(name, Doc())
        peers = self.peers.setdefault(name, set())
        peers.add(ws)
        await ws.send_bytes(protocol.sync_step1(doc.get_state()))
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                message = protocol.decode(msg.data)
                if isinstance(message, protocol.SyncStep1):
                    await ws.send_bytes(protocol.sync_step2(doc.get_update(message.state_vector)))
                elif isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate)):
                    if message.update == protocol.EMPTY_UPDATE:
                        continue
                    doc.apply_update(message.update)
                    frame = protocol.sync_update(message.update)
                    for peer in list(peers - {ws}):
                        if next(self.forwarded) % self.drop_every == 0:
                            self.dropped += 1
                            continue  # the bug
                        with contextlib.suppress(Exception):
                            await peer.send_bytes(frame)
                elif isinstance(message, protocol.AwarenessUpdate):
                    for peer in list(peers - {ws}):
                        with contextlib.suppress(Exception):
                            await peer.send_bytes(msg.data)
        finally:
            peers.discard(ws)
        return ws


@pytest.fixture
async def lossy_relay() -> AsyncIterator[tuple[str, LossyRelay]]:
    relay = LossyRelay()
    app = web.Application()
    app.router.add_get("/ws/{doc:.+}", relay.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"ws://127.0.0.1:{port}/ws", relay
    await runner.cleanup()


async def test_the_checker_catches_a_relay_that_drops_every_tenth_update(
    lossy_relay: tuple[str, LossyRelay], tmp_path: Path
) -> None:
    url, relay = lossy_relay
    report_path = tmp_path / "report.json"
    code, out, err = await chaos_cli(
        url,
        "--clients",
        "5",
        "--duration",
        "4",
        "--faults",
        "latency,hold",
        "--seed",
        "3",
        "--converge-timeout",
        "3",
        "--json",
        str(report_path),
    )
    assert relay.dropped > 0
    assert code == 1, out + err
    report = json.loads(report_path.read_text())
    assert not report["converged"]
    assert report["lost_count"] > 0
    assert "converged        NO" in out
    assert "differs from the " in out  # the majority, or the reference on a tie
    assert "missing at" in out  # which marker is missing where
    assert "result       FAIL" in out


async def test_the_checker_catches_collab_with_a_room_that_skips_broadcasts(
    collab_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = itertools.count(1)
    original = Connection.send_update

    def sometimes(self: Connection, frame: bytes, update: bytes) -> None:
        if next(sends) % 15 == 0:
            return  # the bug: this receiver never gets this update
        original(self, frame, update)

    monkeypatch.setattr(Connection, "send_update", sometimes)
    server = await collab_server_factory()
    config = ChaosConfig(
        url=server.ws_url,
        clients=4,
        duration=3,
        seed=9,
        faults=("latency",),
        converge_timeout=2,
    )
    report = await run_chaos(config)
    assert not report.ok
    assert not report.converged and report.lost, report.format()
    assert "result       FAIL" in report.format()


async def test_restart_against_a_server_the_runner_did_not_start_is_refused() -> None:
    code, out, err = await chaos_cli(
        "ws://127.0.0.1:9/ws", "--faults", "latency,restart", "--duration", "1"
    )
    assert code == 2
    assert "fault 'restart' is not available" in err and "--serve" in err


async def test_an_unreachable_server_is_reported_not_a_divergence() -> None:
    code, out, err = await chaos_cli(
        f"ws://127.0.0.1:{free_port()}/ws", "--faults", "latency", "--duration", "1"
    )
    assert code == 2
    assert "cannot reach the server" in err


def test_the_same_seed_gives_the_same_schedule_with_every_kind() -> None:
    labels = [f"c{i}" for i in range(20)]
    first = make_schedule(7, 60, FAULT_KINDS, labels)
    assert first == make_schedule(7, 60, FAULT_KINDS, labels)
    assert first != make_schedule(8, 60, FAULT_KINDS, labels)
    assert {e.kind for e in first} == set(FAULT_KINDS)
    assert all(e.at + e.duration <= 60 for e in first)
    short = make_schedule(1, 2, FAULT_KINDS, labels)
    assert {e.kind for e in short} == set(FAULT_KINDS)
