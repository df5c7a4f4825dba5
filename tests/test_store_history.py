"""The history contract of the durable stores (issue #14): SQLite and a real PostgreSQL.

What compaction keeps, what a replay to a seq gives, thinning beyond the
window, named versions, the trash and idempotency keys; the history engine
builds on exactly these.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.store.history import THIN_HOURLY, Checkpoint, Version, thin
from tests.test_store_contract import Backend, Editor, _backend


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend(request.param, request, tmp_path):
        yield b


async def history_store(backend: Backend, **settings: float) -> Any:
    store = await backend.open()
    store.history_retention = settings.get("retention", 30 * 86400.0)
    store.trash_retention = settings.get("trash", 7 * 86400.0)
    store.checkpoint_every = settings.get("every", 0.0)
    return store


def replayed(parts: list[tuple[str, bytes]]) -> str:
    doc: Doc[Any] = Doc()
    for _, update in parts:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


#: Keyed by the store itself (not its id, which a later store may reuse).
EDITORS: dict[tuple[Any, str], Editor] = {}


async def type_steps(
    store: Any, name: str, pieces: list[str], author: str = "alice"
) -> list[tuple[int, str]]:
    """Type each piece at the end (one editor per store and document) as one committed
    row; ``(seq, text after it)`` per piece."""
    editor = EDITORS.setdefault((store, name), Editor())
    steps = []
    for piece in pieces:
        store.append(name, editor.type(piece), author)
        await store.flush()
        _, latest, _ = await store.history_bounds(name)
        steps.append((latest, str(editor)))
    return steps


async def test_compaction_keeps_every_row_and_a_replay_gives_each_past_state(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["one ", "two "])
    await store.compact("doc")
    steps += await type_steps(store, "doc", ["three "])
    await store.compact("doc")
    # Loading is unchanged: the snapshot, no live log.
    assert await store.entries("doc") == []
    assert (await store.info("doc")).updates == 1
    for seq, text in steps:
        read = await store.point("doc", seq)
        assert read.exact
        assert replayed(read.parts) == text
    # The snapshot replaced first is a checkpoint now, with its seq.
    checkpoints = await store.history_checkpoints("doc")
    assert [c.seq for c in checkpoints] == [steps[1][0], steps[2][0]]
    sessions = await store.history_sessions("doc", steps[-1][0] + 1, 3600.0, 10)
    assert len(sessions) == 1 and sessions[0].updates == 3
    assert sessions[0].authors == ("alice",)
    assert (sessions[0].from_seq, sessions[0].to_seq) == (steps[0][0], steps[-1][0])


async def test_a_replay_from_an_earlier_checkpoint_gives_the_rows_after_it(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["a", "b"])
    await store.compact("doc")
    steps += await type_steps(store, "doc", ["c", "d"], author="bob")
    read = await store.point("doc", steps[3][0], base_max=steps[0][0])
    assert read.base is None or read.base.seq <= steps[0][0]
    assert replayed(read.parts) == "abcd"
    assert [r[2] for r in read.rows if r[0] > steps[0][0]] == ["alice", "bob", "bob"]


async def test_without_retention_compaction_deletes_the_log_and_old_points_are_thinned(
    durable: Backend,
) -> None:
    store = await history_store(durable, retention=0.0)
    steps = await type_steps(store, "doc", ["a", "b"])
    await store.compact("doc")
    assert not (await store.point("doc", steps[0][0])).exact
    latest = await store.point("doc", steps[1][0])
    assert latest.base is not None and latest.base.seq == steps[1][0]
    assert replayed(latest.parts) == "ab"


async def test_beyond_the_window_rows_go_once_a_checkpoint_holds_them(durable: Backend) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["a", "b"])
    await store.compact("doc")
    steps += await type_steps(store, "doc", ["c"])
    await store.compact("doc")
    steps += await type_steps(store, "doc", ["d"])
    store.history_retention = 1e-6  # everything is older than the window now
    await store.history_sweep()
    # Seq 1 lay between checkpoints: its rows are gone.
    first = await store.point("doc", steps[0][0])
    assert not first.exact
    # What thinning kept (one checkpoint per hour, and the snapshot) replays exactly;
    # every other point is reported as thinned.
    kept = {c.seq for c in await store.history_checkpoints("doc")}
    assert steps[-1][0] in kept  # the quiet tail was compacted by the sweep
    for seq, text in steps:
        read = await store.point("doc", seq)
        precise = read.exact or (read.base is not None and read.base.seq == seq)
        assert precise == (seq in kept), seq
        if precise:
            assert replayed(read.parts) == text
    _, _, pruned = await store.history_bounds("doc")
    assert pruned == steps[-1][0]


def test_thinning_keeps_the_last_checkpoint_of_each_hour_then_of_each_day() -> None:
    cutoff = 1_000_000_000.0
    hour, day = 3600.0, 86400.0
    recent = [Checkpoint(i, cutoff - 2 * hour + i * 600) for i in range(1, 7)]  # 2 hours' worth
    old = [Checkpoint(100 + i, cutoff - THIN_HOURLY - 3 * day + i * hour) for i in range(30)]
    young = [Checkpoint(1000, cutoff + 10)]  # inside the window: never thinned
    drop = set(thin([*recent, *old, *young], cutoff, keep={101}))
    kept_recent = [c.seq for c in recent if c.seq not in drop]
    assert len({int(c.at // hour) for c in recent}) == len(kept_recent)
    kept_old = [c for c in old if c.seq not in drop]
    assert 101 in {c.seq for c in kept_old}, "a version's checkpoint stays"
    days = {int(c.at // day) for c in old}
    assert len(kept_old) == len(days) + 1
    assert 1000 not in drop


async def test_a_named_version_keeps_its_state_through_thinning(durable: Backend) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["draft"])
    read = await store.point("doc", steps[0][0])
    version = Version("v_test", "doc", steps[0][0], time.time(), "first", "alice")
    await store.add_version(version, _state(read.parts))
    await type_steps(store, "doc", [" more"])
    await store.compact("doc")
    await type_steps(store, "doc", [" again"])
    await store.compact("doc")
    store.history_retention = 1e-6
    await store.history_sweep()
    assert [v.id for v in await store.versions("doc")] == ["v_test"]
    assert (await store.version("v_test")) == version
    pinned = await store.point("doc", steps[0][0])
    assert pinned.base is not None and pinned.base.seq == steps[0][0]
    assert replayed(pinned.parts) == "draft"
    assert await store.delete_version("doc", "v_test")
    assert not await store.delete_version("doc", "v_test")


def _state(parts: list[tuple[str, bytes]]) -> bytes:
    doc: Doc[Any] = Doc()
    for _, update in parts:
        doc.apply_update(update)
    return doc.get_update()


async def test_delete_moves_to_the_trash_and_undelete_brings_back_content_and_history(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["kept ", "in trash"])
    await store.compact("doc")
    steps += await type_steps(store, "doc", ["!"])
    await store.delete("doc", "bob")
    assert await store.load("doc") is None
    assert "doc" not in {i.name for i in await store.list()}
    (entry,) = await store.trash()
    assert (entry.name, entry.seq, entry.deleted_by) == ("doc", steps[-1][0], "bob")
    assert entry.purge_at == pytest.approx(entry.deleted_at + 7 * 86400)
    read = await store.point("doc", entry.seq)
    assert replayed(read.parts) == "kept in trash!"
    assert await store.untrash("doc", entry.seq, _state(read.parts)) == "ok"
    assert await store.trash() == []
    from tests.test_store_contract import text_of

    assert text_of(await store.load("doc")) == "kept in trash!"
    for seq, text in steps:
        assert replayed((await store.point("doc", seq)).parts) == text
    # Typing goes on after the undelete; the history continues.
    more = await type_steps(store, "doc", ["?"])
    assert more[0][0] > entry.seq


async def test_undelete_refuses_a_name_taken_again_and_purge_forgets_for_good(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["old"])
    await store.delete("doc", "alice")
    await type_steps(store, "doc", ["new"])
    (entry,) = await store.trash()
    assert await store.untrash("doc", entry.seq, b"") == "taken"
    assert await store.purge("doc")
    assert not await store.purge("doc")
    assert await store.trash() == []
    read = await store.point("doc", steps[0][0])
    assert not read.exact, "the purged history cannot be replayed"


async def test_expired_trash_is_purged_by_the_sweep(durable: Backend) -> None:
    store = await history_store(durable, trash=1e-6)
    await type_steps(store, "doc", ["gone soon"])
    await store.delete("doc")
    await store.history_sweep()
    assert await store.trash() == []
    assert (await store.history_bounds("doc"))[1] is None


async def test_without_trash_a_delete_forgets_history_too(durable: Backend) -> None:
    store = await history_store(durable, trash=0.0)
    await type_steps(store, "doc", ["a"])
    await store.compact("doc")
    await type_steps(store, "doc", ["b"])
    await store.delete("doc")
    assert await store.trash() == []
    assert (await store.history_bounds("doc"))[1] is None


async def test_an_idempotency_key_is_claimed_once_and_answers_its_result(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    other = await history_store(durable)  # another process on the same database
    assert await store.claim("k1", "doc") is None
    assert await other.claim("k1", "doc") == ""  # running
    await store.settle("k1", json.dumps({"seq": 7}))
    assert json.loads(await other.claim("k1", "doc") or "") == {"seq": 7}
    assert await store.claim("k2", "doc") is None
    await store.settle("k2", None)  # failed: the key may be used again
    assert await other.claim("k2", "doc") is None


async def test_times_resolve_to_the_last_seq_written_by_then(durable: Backend) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "doc", ["a", "b"])
    at = await store.at_of("doc", steps[0][0])
    assert at is not None
    assert await store.seq_at("doc", at) == steps[0][0]
    assert await store.seq_at("doc", at - 3600) is None
    assert await store.seq_at("doc", time.time() + 10) == steps[1][0]


def brute_sessions(rows: list[tuple[int, float, str]], gap: float) -> list[tuple[Any, ...]]:
    """Sessions by the definition, newest first: (from, to, authors, updates, bytes)."""
    groups: list[list[tuple[int, float, str]]] = []
    for row in rows:
        if not groups or row[1] - groups[-1][-1][1] > gap:
            groups.append([])
        groups[-1].append(row)
    return [
        (g[0][0], g[-1][0], tuple(sorted({r[2] for r in g})), len(g), None)
        for g in reversed(groups)
    ]


async def test_sessions_match_their_definition_across_compactions_gaps_and_pages(
    durable: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random
    import types

    import collab.store.group as group

    clock = [1_800_000_000.0]
    fake = types.SimpleNamespace(time=lambda: clock[0], monotonic=time.monotonic)
    monkeypatch.setattr(group, "time", fake)
    store = await history_store(durable)
    rng = random.Random(14)
    editor = Editor()
    rows: list[tuple[int, float, str]] = []
    for _ in range(300):
        clock[0] += rng.choice([0.5, 1, 2, 30, 90, 400])
        author = rng.choice(["alice", "bob", "carol"])
        store.append("doc", editor.type("x"), author)
        await store.flush()
        _, latest, _ = await store.history_bounds("doc")
        rows.append((latest, clock[0], author))
        if rng.random() < 0.05:
            await store.compact("doc")
    for gap in (0.0, 1.5, 60.0, 600.0, 1e9):
        expected = brute_sessions(rows, gap)
        got: list[tuple[Any, ...]] = []
        before = rows[-1][0] + 1
        while True:
            page = await store.history_sessions("doc", before, gap, 7)
            got += [(s.from_seq, s.to_seq, s.authors, s.updates, None) for s in page]
            if len(page) < 7:
                break
            before = page[-1].from_seq
        assert got == expected, gap
    sizes = await store.history_sessions("doc", rows[-1][0] + 1, 1e9, 1)
    assert sizes[0].size == sum(len(u) for u in editor.updates)


async def test_a_quiet_document_is_compacted_by_the_sweep_so_its_old_rows_can_go(
    durable: Backend,
) -> None:
    store = await history_store(durable)
    steps = await type_steps(store, "quiet", ["a", "b"])  # far below the thresholds
    store.history_retention = 1e-6
    await store.history_sweep()  # compacts: a checkpoint now holds the rows
    assert await store.entries("quiet") == []
    await store.history_sweep()  # and they go
    assert not (await store.point("quiet", steps[0][0])).exact
    latest = await store.point("quiet", steps[1][0])
    assert latest.exact and replayed(latest.parts) == "ab"
