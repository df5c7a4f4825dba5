"""The send queue: order, merging a backlog, and dropping only a hopeless reader."""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Awareness, Doc, Text

from collab import protocol
from collab.closecodes import CloseCode
from collab.connection import Connection, SendLimits
from tests.fakes import MemoryChannel
from tests.helpers import eventually


def updates_of(n: int) -> tuple[Doc[Any], list[bytes]]:
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    for i in range(n):
        text.insert(len(text), f"<{i}>")
    return doc, updates


def replay(updates: list[bytes]) -> str:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


async def test_frames_are_sent_in_order() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="d", peer="test")
    frames = [bytes([3]) for _ in range(5)] + [protocol.permission_denied(str(i)) for i in range(5)]
    for frame in frames:
        conn.send(frame)
    await eventually(lambda: len(channel.frames) == len(frames))
    assert channel.frames == frames
    conn.close(CloseCode.NORMAL)
    assert await conn.wait_closed() == CloseCode.NORMAL


async def test_connection_that_keeps_up_owns_no_task() -> None:
    channel = MemoryChannel()
    tasks_before = len(asyncio.all_tasks())
    conn = Connection(channel, doc="d", peer="test")
    frames = [protocol.permission_denied(str(i)) for i in range(10)]
    for frame in frames:
        conn.send(frame)
    # Written at once, by the caller: no writer task, no queue.
    assert channel.frames == frames
    assert not conn.sending and conn.backlog == 0
    assert len(asyncio.all_tasks()) == tasks_before


async def test_frames_behind_a_blocked_send_keep_their_order() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(channel, doc="d", peer="test")
    frames = [protocol.permission_denied(str(i)) for i in range(10)]
    for frame in frames:
        conn.send(frame)
    assert conn.sending and conn.backlog > 0
    channel.unblock()
    await eventually(lambda: not conn.sending)
    assert channel.frames == frames
    conn.send(b"\x03")  # and once drained, straight through again
    assert channel.frames[-1] == b"\x03"


async def test_slow_reader_backlog_is_merged_and_loses_nothing() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(channel, doc="d", peer="test", limits=SendLimits(queue_limit=8))
    source, updates = updates_of(100)
    for update in updates:
        conn.send_update(protocol.sync_update(update), update)
    assert conn.collapses > 0
    assert conn._queue is not None
    assert len(conn._queue) < 8
    channel.unblock()
    await eventually(lambda: not conn._queue and conn._sending_since is None)
    assert not conn.closed
    assert len(channel.frames) < 100
    assert replay(channel.updates()) == str(source.get("text", type=Text))


async def test_slow_reader_awareness_backlog_keeps_newest_state() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(channel, doc="d", peer="test", limits=SendLimits(queue_limit=4))
    aw = Awareness(Doc())
    for i in range(20):
        aw.set_local_state({"cursor": i})
        payload = aw.encode_awareness_update([aw.client_id])
        conn.send_awareness(protocol.awareness(payload), payload)
    channel.unblock()
    await eventually(lambda: not conn._queue and conn._sending_since is None)
    seen = Awareness(Doc())
    for message in channel.messages():
        assert isinstance(message, protocol.AwarenessUpdate)
        seen.apply_awareness_update(message.payload, "test")
    assert seen.states[aw.client_id] == {"cursor": 19}


async def test_reader_that_accepts_nothing_is_closed_with_1013() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(
        channel, doc="d", peer="test", limits=SendLimits(queue_limit=4, stall_timeout=0.05)
    )
    _, updates = updates_of(4)
    for update in updates:
        conn.send_update(protocol.sync_update(update), update)
    await asyncio.sleep(0.1)  # let the stall timeout pass: time is the input here
    for update in updates:
        conn.send_update(protocol.sync_update(update), update)
    assert await conn.wait_closed() == CloseCode.TRY_AGAIN_LATER
    assert channel.closed_with is not None and channel.closed_with[0] == CloseCode.TRY_AGAIN_LATER


async def test_backlog_too_big_even_after_merging_is_closed_with_1013() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(
        channel, doc="d", peer="test", limits=SendLimits(queue_limit=4, max_queue_bytes=100)
    )
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    big: list[bytes] = []
    doc.observe(lambda e: big.append(e.update))
    # One frame in flight (the socket took it, then pushed back) and four behind it.
    for _ in range(5):
        text.insert(0, "x" * 200)
    for update in big:
        conn.send_update(protocol.sync_update(update), update)
    assert await conn.wait_closed() == CloseCode.TRY_AGAIN_LATER


async def test_close_is_idempotent_and_keeps_first_code() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="d", peer="test")
    conn.close(CloseCode.PROTOCOL_ERROR, "bad")
    conn.close(CloseCode.NORMAL, "again")
    assert await conn.wait_closed() == CloseCode.PROTOCOL_ERROR
    assert channel.closed_with == (CloseCode.PROTOCOL_ERROR, "bad")
    conn.send(b"\x03")  # sending after close is a no-op, not an error


async def test_silent_peer_is_pinged_and_dropped_when_it_does_not_answer() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="d", peer="test")
    start = conn.last_seen
    conn.check_alive(start + 5, interval=10)
    assert channel.pings == 0  # not silent long enough
    conn.check_alive(start + 10, interval=10)
    assert channel.pings == 1
    conn.check_alive(start + 12, interval=10)
    assert channel.pings == 1 and not conn.closed  # one ping, and time to answer it
    conn.check_alive(start + 15, interval=10)
    assert await conn.wait_closed() == CloseCode.GOING_AWAY
    assert channel.aborted and channel.closed_with is None  # no goodbye to a dead peer


async def test_peer_that_answers_the_ping_stays() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="d", peer="test")
    start = conn.last_seen
    conn.check_alive(start + 10, interval=10)
    assert channel.pings == 1
    conn.alive(start + 11)  # its pong
    conn.check_alive(start + 16, interval=10)
    conn.check_alive(start + 20, interval=10)
    assert not conn.closed and channel.pings == 1
    conn.check_alive(start + 21, interval=10)
    assert channel.pings == 2


async def test_queued_bytes_are_checked_at_every_enqueue_not_only_at_the_frame_limit() -> None:
    channel = MemoryChannel()
    channel.block()
    conn = Connection(
        channel, doc="d", peer="test", limits=SendLimits(queue_limit=64, max_queue_bytes=10_000)
    )
    conn.send(b"\x00\x00\x01\x00")  # in flight: the writer now waits on the socket
    for _ in range(3):  # three unmergeable frames: far beyond the bytes, far below 64 frames
        conn.send(protocol.sync_step2(b"\x00" * 6_000))
    assert conn.close_code == CloseCode.TRY_AGAIN_LATER
    channel.unblock()
