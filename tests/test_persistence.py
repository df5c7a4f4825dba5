"""Documents survive restarts, crashes and compaction of the real server process."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Text

from collab.client import ConnectionClosed, Session
from collab.closecodes import CloseCode
from collab.testing.server import ServerProcess
from tests.conftest import RedisServer
from tests.helpers import converged, text_of


async def write_lines(url: str, name: str, writers: int, lines: int) -> str:
    """Several clients append numbered lines concurrently; returns the converged text."""
    sessions = [Session(url, name, min_backoff=0.05) for _ in range(writers)]
    for s in sessions:
        await s.start()
        await s.wait_synced()

    async def write(i: int, session: Session) -> None:
        text = session.doc.get("text", type=Text)
        for k in range(lines):
            text.insert(len(text), f"w{i}-{k}\n")
            if k % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(write(i, s) for i, s in enumerate(sessions)))
    final = await converged(sessions)
    for s in sessions:
        await s.drain()
        await s.close()
    return final


def expected_lines(writers: int, lines: int) -> set[str]:
    return {f"w{i}-{k}" for i in range(writers) for k in range(lines)}


async def read_text(url: str, name: str) -> str:
    session = Session(url, name, reconnect=False)
    await session.start()
    try:
        await session.wait_synced()
        return text_of(session)
    finally:
        await session.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_every_edit_survives_a_restart(tmp_path: Path, sig: int) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    server = ServerProcess("--store", store)
    await server.start()
    try:
        written = await write_lines(server.ws_url, "notes", writers=4, lines=50)
        await asyncio.sleep(1.0)  # the scenario: killed one second after the last edit
        await server.stop(sig)
    finally:
        if server.running:
            await server.kill()
    async with ServerProcess("--store", store, port=server.port) as again:
        text = await read_text(again.ws_url, "notes")
    assert text == written
    assert set(text.split()) == expected_lines(4, 50)


async def test_edits_survive_sigkill_with_compaction_in_between(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    args = ("--store", store, "--compact-updates", "20", "--commit-window", "0.005")
    server = ServerProcess(*args)
    await server.start()
    try:
        written = await write_lines(server.ws_url, "big", writers=3, lines=200)
        await asyncio.sleep(1.0)
        await server.kill()
    finally:
        if server.running:
            await server.kill()
    with sqlite3.connect(tmp_path / "collab.db") as db:
        (snapshots,) = db.execute("SELECT count(*) FROM collab_snapshots").fetchone()
    assert snapshots == 1, "the log should have been compacted at least once"
    async with ServerProcess(*args, port=server.port) as again:
        text = await read_text(again.ws_url, "big")
    assert text == written
    assert set(text.split()) == expected_lines(3, 200)


async def test_sigterm_closes_clients_with_1001_and_they_reconnect(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    server = ServerProcess("--store", store)
    await server.start()
    session = Session(server.ws_url, "doc", min_backoff=0.05, max_backoff=0.2)
    await session.start()
    try:
        await session.wait_synced()
        session.doc.get("text", type=Text).insert(0, "before restart")
        await session.drain()
        assert await server.stop(signal.SIGTERM) == 0
        await session.wait_for(lambda: not session.synced.is_set())
        assert session.close_code == CloseCode.GOING_AWAY
        async with ServerProcess("--store", store, port=server.port) as again:
            await session.wait_synced(10)
            session.doc.get("text", type=Text).insert(0, "after restart, ")
            await session.drain()
            assert await read_text_eventually(again.ws_url, "doc", "after restart, before restart")
    finally:
        await session.close()
        if server.running:
            await server.kill()


async def read_text_eventually(url: str, name: str, want: str, timeout: float = 10.0) -> bool:
    session = Session(url, name)
    await session.start()
    try:
        await session.wait_synced()
        await session.wait_for(lambda: text_of(session) == want, timeout)
        return True
    finally:
        await session.close()


async def test_unwritable_data_folder_stops_startup_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data folder should be")
    server = ServerProcess("--store", f"sqlite:///{blocker}/sub/collab.db")
    with pytest.raises(RuntimeError, match="exited with 1 at start"):
        await server.start()
    errors = [line for line in server.log if "ERROR" in line]
    assert len(errors) == 1 and str(blocker) in errors[0]


async def test_corrupt_row_refuses_only_that_document(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    async with ServerProcess("--store", store) as server:
        await write_lines(server.ws_url, "good", writers=1, lines=3)
        await write_lines(server.ws_url, "bad", writers=1, lines=3)
        await server.stop()
    with sqlite3.connect(tmp_path / "collab.db") as db:
        db.execute("UPDATE collab_updates SET data = x'deadbeef' WHERE name = 'bad'")
    async with ServerProcess("--store", store) as server:
        broken = Session(server.ws_url, "bad", reconnect=False)
        await broken.start()
        with pytest.raises(ConnectionClosed):
            await broken.wait_synced(5)
        assert broken.close_code == CloseCode.INTERNAL_ERROR
        await broken.close()
        assert set((await read_text(server.ws_url, "good")).split()) == {"w0-0", "w0-1", "w0-2"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.http_url}/api/docs/bad") as resp:
                assert resp.status == 500
            async with http.get(f"{server.http_url}/api/docs/good") as resp:
                assert resp.status == 200
        assert any("bad" in line and "ERROR" in line for line in server.log)


# -- one process per SQLite file (issue #18, finding 8) ---------------------------------


async def collab(*args: str) -> tuple[int, str]:
    """``collab ARGS`` in a child process: (exit status, stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_second_server_on_one_sqlite_file_stops_naming_the_first(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    async with ServerProcess("--store", store) as first:
        written = await write_lines(first.ws_url, "notes", writers=1, lines=3)
        second = ServerProcess("--store", store)
        with pytest.raises(RuntimeError, match="exited with 1 at start"):
            await second.start()
        errors = [line for line in second.log if "ERROR" in line]
        assert len(errors) == 1, second.log
        assert first._proc is not None
        assert f"in use by collab process {first._proc.pid}," in errors[0]
        assert "--redis-url" in errors[0]
        # The first one serves on, and commands that read the file still work.
        assert await read_text(first.ws_url, "notes") == written
        status, listing = await collab("ls", "--store", store)
        assert status == 0 and "notes" in listing, listing
        status, exported = await collab("export", "notes", "--store", store, "-o", "/dev/null")
        assert status == 0, exported
        await first.kill()
    # A killed server leaves its lock file behind, but not its lock.
    async with ServerProcess("--store", store) as again:
        assert await read_text(again.ws_url, "notes") == written


async def test_servers_linked_by_redis_share_a_sqlite_file_but_not_with_one_alone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    linked = ("--store", store, "--redis-url", redis_server.url)
    async with ServerProcess(*linked) as one, ServerProcess(*linked) as two:
        written = await write_lines(one.ws_url, "shared", writers=1, lines=3)
        # Two reads what one's commit window has not stored yet from one, through
        # Redis, a moment after its own sync: eventually, not at once.
        assert await read_text_eventually(two.ws_url, "shared", written)
        alone = ServerProcess("--store", store)
        with pytest.raises(RuntimeError, match="exited with 1 at start"):
            await alone.start()
        errors = [line for line in alone.log if "ERROR" in line]
        assert len(errors) == 1 and "linked by Redis" in errors[0], alone.log
    async with ServerProcess("--store", store) as alone:
        assert set((await read_text(alone.ws_url, "shared")).split()) == expected_lines(1, 3)
        linked_late = ServerProcess(*linked)
        with pytest.raises(RuntimeError, match="exited with 1 at start"):
            await linked_late.start()
        errors = [line for line in linked_late.log if "ERROR" in line]
        assert len(errors) == 1 and "serves it alone" in errors[0], linked_late.log
