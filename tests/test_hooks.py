"""The hook runner: gating hooks refuse in order within a timeout; observers never block."""

from __future__ import annotations

import asyncio

import pytest

from collab.closecodes import CloseCode
from collab.hooks import (
    Change,
    ConnectRequest,
    HookFailed,
    HookRunner,
    Hooks,
    Principal,
    Reject,
)


def _request(doc: str = "notes", token: str | None = None) -> ConnectRequest:
    return ConnectRequest(
        doc=doc,
        token=token,
        headers={},
        cookies={},
        query={},
        peer="127.0.0.1:1",
        transport="websocket",
        write=True,
    )


def _change(doc: str = "notes") -> Change:
    return Change(doc=doc, update=b"\x00\x00", authors=("alice",), updates=1, bytes=2)


class Abstains(Hooks):
    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        return None


class Alice(Hooks):
    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        return Principal("alice", "Alice")


class Refuses(Hooks):
    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        raise Reject(CloseCode.FORBIDDEN, "not on the guest list")


class Slow(Hooks):
    timeout = 0.05

    async def load_document(self, doc: str) -> bytes | None:
        await asyncio.Event().wait()
        return None


class Broken(Hooks):
    async def load_document(self, doc: str) -> bytes | None:
        raise RuntimeError("database is down")

    async def on_change(self, event: Change) -> None:
        raise RuntimeError("observer bug")


class Recorder(Hooks):
    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def on_change(self, event: Change) -> None:
        self.changes.append(event)


class Stuck(Hooks):
    queue_size = 2

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def on_change(self, event: Change) -> None:
        await self.release.wait()


async def test_first_principal_wins_and_abstaining_hooks_pass() -> None:
    runner = HookRunner([Abstains(), Alice(), Refuses()])
    principal = await runner.authenticate(_request())
    assert principal is not None and principal.id == "alice"


async def test_first_refusal_wins() -> None:
    runner = HookRunner([Refuses(), Alice()])
    with pytest.raises(Reject) as refused:
        await runner.authenticate(_request())
    assert refused.value.code == CloseCode.FORBIDDEN
    assert refused.value.status == 403


async def test_a_gating_hook_that_times_out_fails_and_is_counted() -> None:
    runner = HookRunner([Slow()])
    with pytest.raises(HookFailed):
        await runner.load_document("notes")
    assert runner.errors[("Slow", "load_document")] == 1


async def test_a_gating_hook_that_raises_fails_and_is_counted() -> None:
    runner = HookRunner([Broken()])
    with pytest.raises(HookFailed):
        await runner.load_document("notes")
    assert runner.errors[("Broken", "load_document")] == 1


async def test_a_raising_observer_does_not_stop_the_others() -> None:
    recorder = Recorder()
    runner = HookRunner([Broken(), recorder])
    await runner.start()
    try:
        runner.emit("on_change", _change("a"))
        runner.emit("on_change", _change("b"))
        await runner.idle()
    finally:
        await runner.close()
    assert [c.doc for c in recorder.changes] == ["a", "b"]
    assert runner.errors[("Broken", "on_change")] == 2


async def test_a_stuck_observer_drops_events_instead_of_blocking() -> None:
    stuck = Stuck()
    runner = HookRunner([stuck])
    await runner.start()
    try:
        for i in range(10):
            runner.emit("on_change", _change(str(i)))  # never awaits, never raises
        assert runner.dropped[("Stuck", "on_change")] >= 7
    finally:
        stuck.release.set()
        await runner.close()


async def test_hooks_that_override_nothing_cost_nothing() -> None:
    runner = HookRunner([Hooks()])
    assert not runner.wants("on_change")
    assert not runner.wants("before_update")
    assert await runner.authenticate(_request()) is None


def test_a_principal_covers_its_documents_exactly_and_its_patterns_as_globs() -> None:
    principal = Principal("bob", documents=frozenset({"report[1]"}), patterns=("team-*",))
    assert principal.covers("report[1]")
    assert not principal.covers("report1")
    assert principal.covers("team-a")
    assert not principal.covers("Team-a")
    assert Principal("anyone").covers("whatever")
    assert not principal.read_only().can_write
