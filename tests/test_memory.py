"""Giving memory back once a crowd has left, and only then."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

from collab.connection import Connection
from collab.memory import MemoryReleaser, release
from collab.rooms import RoomManager
from collab.store import MemoryStore
from tests.fakes import MemoryChannel
from tests.helpers import eventually


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_release_collects_reference_cycles() -> None:
    gc.disable()  # only release() may collect here
    try:
        Cycle()
        assert any(type(o) is Cycle for o in gc.get_objects())
        assert release() >= 0
        assert not any(type(o) is Cycle for o in gc.get_objects())
    finally:
        gc.enable()


async def test_release_waits_for_the_wave_of_unloads_to_settle() -> None:
    releaser = MemoryReleaser(settle=0.05)
    for remaining in range(5, -1, -1):
        releaser.unloaded(remaining)  # 6 rooms leave, one after another
    await asyncio.sleep(0.02)
    assert releaser.releases == 0  # the wave goes on: not yet
    await eventually(lambda: releaser.releases == 1)
    await asyncio.sleep(0.1)
    assert releaser.releases == 1  # once per wave


async def test_one_room_leaving_a_busy_server_releases_nothing() -> None:
    releaser = MemoryReleaser(settle=0.01)
    releaser.unloaded(100)
    await asyncio.sleep(0.05)
    assert releaser.releases == 0
    releaser.close()


async def test_rooms_unloading_after_their_last_client_left_release_memory() -> None:
    manager = RoomManager(MemoryStore(), unload_grace=0)
    manager.memory = MemoryReleaser(settle=0.01)
    conns = []
    for i in range(4):
        room = await manager.acquire(f"doc-{i}")
        conn = Connection(MemoryChannel(), doc=room.name, peer="test")
        room.join(conn)
        conns.append((room, conn))
    for room, conn in conns:
        room.leave(conn)
    await eventually(lambda: not manager.rooms)
    await eventually(lambda: manager.memory.releases == 1)
    await manager.close()


def test_tune_gc_freezes_startup_objects_and_collects_less_often() -> None:
    script = (
        "import gc; from collab.memory import tune_gc, GC_THRESHOLDS; tune_gc(); "
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold(); "
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()"
    )
    subprocess.run([sys.executable, "-c", script], check=True)  # process-wide: not in ours
