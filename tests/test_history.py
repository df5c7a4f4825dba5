"""Version history end to end (issue #14): real servers, real clients, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from pycrdt import Doc, Snapshot, Text

import collab.app  # noqa: F401  (InProcessServer.start would import it on the event loop)
from collab.auth import issue_token
from collab.client import Session
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import eventually, text_of


@pytest.fixture(params=["sqlite", "postgres"])
def history_store(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A durable store URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def api(server: InProcessServer, name: str, suffix: str = "") -> str:
    return f"{server.http_url}/api/docs/{quote(name, safe='')}{suffix}"


async def settle(server: InProcessServer, *sessions: Session) -> int:
    """Wait until what the sessions typed is stored; the document's latest seq."""
    for session in sessions:
        await session.drain()
    store: Any = server.server.store
    for room in server.server.manager.rooms.values():
        room.flush()
    await store.flush()
    latest: int | None = None

    async def caught_up() -> bool:
        nonlocal latest
        for room in server.server.manager.rooms.values():
            room.flush()
        await store.flush()
        texts = {text_of(s) for s in sessions}
        live = server.server.manager.rooms.get(sessions[0].name)
        if live is not None and texts != {str(live.doc.get("text", type=Text))}:
            return False
        _, latest, _ = await store.history_bounds(sessions[0].name)
        return True

    await eventually(caught_up)
    assert latest is not None
    return latest


async def get_json(
    http: aiohttp.ClientSession, url: str, status: int = 200, headers: dict[str, str] | None = None
) -> Any:
    async with http.get(url, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


async def post_json(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Any:
    async with http.post(url, json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == status, answer
        return answer


async def test_state_at_a_point_is_what_a_client_held_then_and_restore_brings_it_back_everywhere(
    make_server: ServerFactory,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    history_store: str,
) -> None:
    server = await make_server(store=history_store)
    url = server.ws_url
    alice = await make_client("story", url=url)
    bob = await make_client("story", url=url)
    text = alice.doc.get("text", type=Text)
    text.insert(0, "Once upon a time.")
    seq_t = await settle(server, alice, bob)
    held_text, held_state = text_of(alice), alice.doc.get_update()
    text.insert(len(str(text)), " Then a bad paste: XXXXXXXX")
    bob.doc.get("text", type=Text).insert(0, "BOB ")
    await settle(server, alice, bob)
    assert text_of(bob) != held_text

    at = await get_json(http, api(server, "story", f"/at/{seq_t}"))
    assert at["seq"] == seq_t and at["text"] == held_text
    assert at["roots"] == {"text": held_text}
    async with http.get(api(server, "story", f"/at/{seq_t}?format=update")) as resp:
        assert resp.status == 200
        replay: Doc[Any] = Doc()
        replay.apply_update(await resp.read())
    held: Doc[Any] = Doc()
    held.apply_update(held_state)
    assert str(replay.get("text", type=Text)) == str(held.get("text", type=Text))
    assert at["at"].endswith("Z")
    # The same point by its time.
    by_time = await get_json(http, api(server, "story", f"/at/{quote(at['at'])}"))
    assert by_time["text"] == held_text

    restored = await post_json(http, api(server, "story", "/restore"), {"to": seq_t})
    assert restored["restored_to"]["seq"] == seq_t and restored["bytes"] > 0
    assert isinstance(restored["seq"], int) and restored["seq"] > seq_t
    await eventually(lambda: text_of(alice) == held_text and text_of(bob) == held_text)
    # The store reads T back (after the room is gone, from the store alone).
    await settle(server, alice, bob)
    await server.restart()
    async with http.get(api(server, "story", "/text")) as resp:
        assert await resp.text() == held_text
    store: Any = server.server.store
    authors = [e.author for e in await store.entries("story")]
    assert authors.count("restore:anonymous") == 1


async def test_history_lists_sessions_newest_first_with_authors_and_pages(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    secret = "s" * 40
    server = await make_server(store="sqlite", auth_secret=secret)
    alice_token = issue_token(secret, "log", "write", 600, sub="alice")
    bob_token = issue_token(secret, "log", "write", 600, sub="bob")
    reader = issue_token(secret, "log", "read", 600, sub="carol")
    alice = await make_client("log", url=server.ws_url, token=alice_token)
    bob = await make_client("log", url=server.ws_url, token=bob_token)
    for i in range(3):
        alice.doc.get("text", type=Text).insert(0, f"a{i} ")
        await settle(server, alice, bob)
        bob.doc.get("text", type=Text).insert(0, f"b{i} ")
        await settle(server, alice, bob)
    headers = {"Authorization": f"Bearer {reader}"}
    async with http.get(api(server, "log", "/history?gap_ms=0&limit=4"), headers=headers) as resp:
        page = await resp.json()
        assert resp.status == 200, page
    assert page["doc"] == "log" and len(page["sessions"]) == 4
    seqs = [s["from_seq"] for s in page["sessions"]]
    assert seqs == sorted(seqs, reverse=True)
    assert page["sessions"][0]["authors"] == ["bob"]
    assert page["sessions"][1]["authors"] == ["alice"]
    assert all(s["updates"] >= 1 and s["bytes"] > 0 for s in page["sessions"])
    assert page["next"] == page["sessions"][-1]["from_seq"]
    async with http.get(
        api(server, "log", f"/history?gap_ms=0&limit=4&before={page['next']}"), headers=headers
    ) as resp:
        older = await resp.json()
    assert len(older["sessions"]) == 2 and older["next"] is None
    assert older["sessions"][0]["to_seq"] < page["next"]
    # One big session when the gap is long.
    async with http.get(api(server, "log", "/history"), headers=headers) as resp:
        whole = await resp.json()
    assert len(whole["sessions"]) == 1
    assert whole["sessions"][0]["authors"] == ["alice", "bob"]
    assert whole["latest_seq"] == whole["sessions"][0]["to_seq"]
    # A read token may not restore.
    async with http.post(
        api(server, "log", "/restore"), json={"to": seqs[-1]}, headers=headers
    ) as resp:
        assert resp.status == 403


async def test_diff_gives_text_ops_and_a_snapshot_pair_that_replays(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("d", url=server.ws_url)
    text = alice.doc.get("text", type=Text)
    text.insert(0, "hello world")
    seq_a = await settle(server, alice)
    del text[0:6]
    text.insert(len(str(text)), "!")
    await settle(server, alice)
    diff = await get_json(http, api(server, "d", f"/diff?from={seq_a}"))
    assert diff["from"]["seq"] == seq_a
    assert diff["roots"]["text"] == [
        {"op": "delete", "text": "hello "},
        {"op": "equal", "text": "world"},
        {"op": "insert", "text": "!"},
    ]
    # The pair decodes, and the update holds the deleted text (replayed without gc).
    Snapshot.decode(base64.b64decode(diff["snapshot_from"]))
    Snapshot.decode(base64.b64decode(diff["snapshot_to"]))
    doc: Doc[Any] = Doc(skip_gc=True)
    doc.apply_update(base64.b64decode(diff["update"]))
    assert str(doc.get("text", type=Text)) == "world!"


def tokens(secret: str, doc: str, *users: str) -> dict[str, str]:
    return {u: issue_token(secret, doc, "write", 600, sub=u) for u in users}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_undoing_one_author_removes_only_his_inserts_and_brings_back_what_he_deleted(
    make_server: ServerFactory,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    history_store: str,
) -> None:
    secret = "s" * 40
    server = await make_server(store=history_store, auth_secret=secret)
    tok = tokens(secret, "pair", "alice", "bob")
    alice = await make_client("pair", url=server.ws_url, token=tok["alice"])
    bob = await make_client("pair", url=server.ws_url, token=tok["bob"])
    a_text, b_text = alice.text(), bob.text()
    a_text.insert(0, "alice one. ")
    seq_t = await settle(server, alice, bob)
    b_text.insert(0, "[bob]")
    await settle(server, alice, bob)
    a_text.insert(len(a_text), "alice two. ")
    await settle(server, alice, bob)
    start = str(b_text).index("one. ")
    b_text.delete(start, len("one. "))
    await settle(server, alice, bob)
    assert text_of(alice) == "[bob]alice alice two. "

    result = await post_json(
        http,
        api(server, "pair", "/restore"),
        {"to": seq_t, "by": ["bob"]},
        headers=bearer(tok["alice"]),
    )
    assert result["bytes"] > 0
    expected = "alice one. alice two. "
    await eventually(lambda: text_of(alice) == expected and text_of(bob) == expected)
    page = await get_json(
        http, api(server, "pair", "/history?gap_ms=0&limit=1"), headers=bearer(tok["bob"])
    )
    # (an open server would say anonymous; this one knows who restored)
    assert page["sessions"][0]["authors"] == ["restore:alice"]


async def test_text_typed_during_a_restore_survives_on_every_peer_with_the_stock_js_client(
    make_server: ServerFactory,
    make_client: ClientFactory,
    make_js_client: Any,
    http: aiohttp.ClientSession,
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("race", url=server.ws_url)
    js = await make_js_client("race", url=server.ws_url)
    alice.text().insert(0, "Base text.")
    seq_t = await settle(server, alice)
    alice.text().insert(len(alice.text()), " Mistake.")
    await settle(server, alice)
    await js.wait_text("Base text. Mistake.")
    engine = server.server.history_engine
    compute = engine._run
    room = server.server.manager.rooms["race"]

    async def typing_meanwhile(what: str, fn: Any, *args: Any) -> Any:
        result = await compute(what, fn, *args)
        if what.startswith("restoring"):
            # The revert is computed; the JS client types before it is applied.
            await js.insert(len("Base text. Mistake."), " [js typed]")
            await eventually(lambda: "[js typed]" in str(room.doc.get("text", type=Text)))
        return result

    engine._run = typing_meanwhile  # type: ignore[method-assign]
    await post_json(http, api(server, "race", "/restore"), {"to": seq_t})
    expected = "Base text. [js typed]"
    await js.wait_text(expected)
    await eventually(lambda: text_of(alice) == expected)
    await settle(server, alice)
    await server.restart()
    async with http.get(api(server, "race", "/text")) as resp:
        assert await resp.text() == expected


async def test_an_offline_client_reconnecting_keeps_the_restore_and_its_own_new_edits(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("trip", url=server.ws_url)
    carol = await make_client("trip", url=server.ws_url)
    alice.text().insert(0, "Good.")
    seq_t = await settle(server, alice, carol)
    alice.text().insert(len(alice.text()), " Bad.")
    await settle(server, alice, carol)
    offline_doc = carol.doc
    await carol.close()  # carol goes offline holding "Good. Bad."
    await post_json(http, api(server, "trip", "/restore"), {"to": seq_t})
    await eventually(lambda: text_of(alice) == "Good.")
    # Offline, carol writes at the start (her copy still has " Bad.").
    offline = offline_doc.get("text", type=Text)
    offline.insert(0, "Carol: ")
    back = await make_client("trip", url=server.ws_url, doc=offline_doc)
    await eventually(lambda: text_of(back) == text_of(alice) == "Carol: Good.")


async def test_restore_after_compaction_works_and_thinned_precision_answers_409(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite", compact_updates=4)
    alice = await make_client("long", url=server.ws_url)
    steps = []
    for i in range(12):
        alice.text().insert(len(alice.text()), f"<{i}>")
        steps.append((await settle(server, alice), text_of(alice)))
    store: Any = server.server.store
    await eventually(lambda: store.compactions >= 2)
    assert len(await store.history_checkpoints("long")) >= 2
    seq3, text3 = steps[3]
    assert (await get_json(http, api(server, "long", f"/at/{seq3}")))["text"] == text3
    await post_json(http, api(server, "long", "/restore"), {"to": seq3})
    await eventually(lambda: text_of(alice) == text3)
    diff = await get_json(http, api(server, "long", f"/diff?from={steps[0][0]}&to={seq3}"))
    assert diff["roots"]["text"][-1] == {"op": "insert", "text": "<1><2><3>"}

    # Everything is beyond the window now: rows go, checkpoints stay.
    store.checkpoint_every = 0.0
    await store.compact("long")
    store.history_retention = 1e-6
    await store.history_sweep()
    thinned = await get_json(http, api(server, "long", f"/at/{steps[1][0]}"), status=409)
    assert thinned["error"] == "history_thinned"
    nearest = thinned["nearest"]["seq"]
    assert nearest != steps[1][0]
    assert (await get_json(http, api(server, "long", f"/at/{nearest}")))["seq"] == nearest
    async with http.post(api(server, "long", "/restore"), json={"to": steps[1][0]}) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"] == "history_thinned"
    page = await get_json(http, api(server, "long", "/history"))
    kept = [s for s in page["sessions"] if s.get("thinned")]
    assert kept, page
    point = kept[0]["from_seq"]
    assert (await get_json(http, api(server, "long", f"/at/{point}")))["seq"] == point


async def test_an_idempotency_key_makes_a_retried_restore_answer_the_first_result(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("once", url=server.ws_url)
    alice.text().insert(0, "v1")
    seq_t = await settle(server, alice)
    alice.text().insert(2, " v2")
    await settle(server, alice)
    key = {"Idempotency-Key": "restore-42"}
    url = api(server, "once", "/restore")
    first = await post_json(http, url, {"to": seq_t}, headers=key)
    await eventually(lambda: text_of(alice) == "v1")
    alice.text().insert(2, " v3")  # typed after the restore: a retry must not undo it
    await settle(server, alice)
    again = await post_json(http, url, {"to": seq_t}, headers=key)
    assert again == first
    await settle(server, alice)
    assert text_of(alice) == "v1 v3"
    store: Any = server.server.store
    rows = [e.author for e in await store.entries("once")]
    assert rows.count("restore:anonymous") == 1
    # Webhooks read the change feed: one doc.restored event, by the restorer.
    restored = [e for e in await store.events_after(0, 1000) if e.type == "doc.restored"]
    assert [(e.doc, e.authors) for e in restored] == [("once", ("restore:anonymous",))]
    assert restored[0].seq_to == first["seq"]


async def test_a_panic_in_the_crdt_library_answers_500_json_and_the_server_goes_on(
    make_server: ServerFactory,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import collab.history

    server = await make_server(store="sqlite")
    alice = await make_client("boom", url=server.ws_url)
    alice.text().insert(0, "abc")
    seq = await settle(server, alice)

    def panics(*args: Any) -> Any:
        doc: Doc[Any] = Doc()
        doc.get("text", type=Text).insert(0, "gone")
        del doc.get("text", type=Text)[0:2]
        # What the design forbids: a snapshot of a gc'd document panics in yrs.
        return Doc.from_snapshot(Snapshot.from_doc(doc), doc)

    monkeypatch.setattr(collab.history, "compute_diff", panics)
    monkeypatch.setattr(collab.history, "compute_revert", panics)
    body = await get_json(http, api(server, "boom", f"/diff?from={seq}"), status=500)
    assert body["error"] == "history_failed"
    async with http.post(api(server, "boom", "/restore"), json={"to": seq}) as resp:
        assert resp.status == 500 and (await resp.json())["error"] == "history_failed"
    assert (await get_json(http, api(server, "boom", f"/at/{seq}")))["text"] == "abc"


async def test_versions_and_the_trash_over_http(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("kept", url=server.ws_url)
    alice.text().insert(0, "first draft")
    await settle(server, alice)
    version = await post_json(
        http, api(server, "kept", "/versions"), {"label": "draft 1"}, status=201
    )
    assert version["id"].startswith("v_") and version["label"] == "draft 1"
    alice.text().insert(0, "edited ")
    await settle(server, alice)
    listed = await get_json(http, api(server, "kept", "/versions"))
    assert listed == {"versions": [version]}
    at = await get_json(http, api(server, "kept", f"/at/{version['id']}"))
    assert at["text"] == "first draft"
    page = await get_json(http, api(server, "kept", "/history"))
    assert page["versions"] == [version]

    await alice.close()
    async with http.delete(api(server, "kept")) as resp:
        assert resp.status == 200
    trash = await get_json(http, f"{server.http_url}/api/trash")
    (entry,) = trash["documents"]
    assert entry["name"] == "kept" and entry["deleted_by"] == "anonymous"
    assert entry["purge_at"] > entry["deleted_at"]
    await get_json(http, api(server, "kept"), status=404)
    async with http.post(f"{server.http_url}/api/trash/kept/restore") as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(api(server, "kept", "/text")) as resp:
        assert await resp.text() == "edited first draft"
    assert (await get_json(http, api(server, "kept", f"/at/{version['id']}")))["text"] == (
        "first draft"
    )
    async with http.delete(f"{server.http_url}/api/docs/kept/versions/{version['id']}") as resp:
        assert resp.status == 204
    assert (await get_json(http, api(server, "kept", "/versions"))) == {"versions": []}
    async with http.delete(api(server, "kept")) as resp:
        assert resp.status == 200
    async with http.delete(f"{server.http_url}/api/trash/kept") as resp:
        assert resp.status == 204
    assert (await get_json(http, f"{server.http_url}/api/trash")) == {"documents": []}
    async with http.post(f"{server.http_url}/api/trash/kept/restore") as resp:
        assert resp.status == 404


async def test_bad_points_and_unknown_documents_answer_json_errors(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(store="sqlite")
    alice = await make_client("p", url=server.ws_url)
    alice.text().insert(0, "x")
    seq = await settle(server, alice)
    assert (await get_json(http, api(server, "p", "/at/yesterday"), 400))["error"] == (
        "invalid_point"
    )
    assert (await get_json(http, api(server, "p", f"/at/{seq + 100}"), 404))["error"] == (
        "unknown_point"
    )
    assert (await get_json(http, api(server, "p", "/at/v_nope"), 404))["error"] == ("unknown_point")
    assert (await get_json(http, api(server, "p", "/at/1999-01-01T00:00:00Z"), 404))[
        "error"
    ] == "unknown_point"
    assert (await get_json(http, api(server, "nothing", "/history"), 404))["error"] == ("not_found")
    memory = await make_server()
    assert (await get_json(http, api(memory, "p", "/history"), 501))["error"] == (
        "history_unavailable"
    )


async def latest_seq(http: aiohttp.ClientSession, base: str, name: str) -> int:
    async with http.get(f"{base}/api/docs/{quote(name, safe='')}/history?limit=1") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    seq: int = body["latest_seq"]
    return seq


async def test_history_and_restore_survive_a_sigkill_and_restart(
    tmp_path: Any, http: aiohttp.ClientSession
) -> None:
    from collab.client import Session
    from collab.testing.server import ServerProcess

    db = tmp_path / "killed.db"
    proc = ServerProcess("--store", f"sqlite:///{db}")
    await proc.start()
    session = Session(proc.ws_url, "k", min_backoff=0.05, max_backoff=0.5)
    try:
        await session.start()
        await session.wait_synced(15)
        session.text().insert(0, "before.")
        await session.drain()
        await eventually(lambda: _stored(http, proc.http_url, "k", "before."))
        seq_t = await latest_seq(http, proc.http_url, "k")
        session.text().insert(len(session.text()), " lost?")
        await session.drain()
        await eventually(lambda: _stored(http, proc.http_url, "k", "before. lost?"))
        await proc.stop(signal.SIGKILL)
        await proc.start()
        await session.wait_for(lambda: session.synced.is_set(), timeout=15)
        page = await get_json(http, f"{proc.http_url}/api/docs/k/history?gap_ms=0")
        assert len(page["sessions"]) >= 2 and page["latest_seq"] > seq_t
        at = await get_json(http, f"{proc.http_url}/api/docs/k/at/{seq_t}")
        assert at["text"] == "before."
        await post_json(http, f"{proc.http_url}/api/docs/k/restore", {"to": seq_t})
        await eventually(lambda: text_of(session) == "before.", timeout=15)
    finally:
        await session.close()
        await proc.stop()


async def _stored(http: aiohttp.ClientSession, base: str, name: str, text: str) -> bool:
    """Whether the server's store (not only its room) has ``text``: at the latest seq."""
    async with http.get(f"{base}/api/docs/{name}/history?limit=1") as resp:
        if resp.status != 200:
            return False
        latest = (await resp.json())["latest_seq"]
    async with http.get(f"{base}/api/docs/{name}/at/{latest}") as resp:
        return resp.status == 200 and (await resp.json())["text"] == text


async def test_two_processes_on_redis_restore_once_and_both_sides_see_it(
    redis_server: Any, postgres_url: str, http: aiohttp.ClientSession
) -> None:
    import psycopg

    from collab.client import Session
    from collab.testing.server import ServerProcess

    args = ("--store", postgres_url, "--redis-url", redis_server.url, "--unload-grace", "1")
    servers = [ServerProcess(*args), ServerProcess(*args)]
    await asyncio.gather(*(s.start() for s in servers))
    sessions = [Session(s.ws_url, "pair", min_backoff=0.05, max_backoff=0.5) for s in servers]
    try:
        for session in sessions:
            await session.start()
            await session.wait_synced(15)
        a, b = sessions
        a.text().insert(0, "agreed.")
        await a.drain()
        await eventually(lambda: text_of(b) == "agreed.")
        await eventually(lambda: _stored(http, servers[1].http_url, "pair", "agreed."))
        seq_t = await latest_seq(http, servers[1].http_url, "pair")
        b.text().insert(len(b.text()), " disputed.")
        await b.drain()
        await eventually(lambda: text_of(a) == "agreed. disputed.")
        await eventually(lambda: _stored(http, servers[0].http_url, "pair", "agreed. disputed."))
        key = {"Idempotency-Key": "cluster-1"}
        first = await post_json(
            http, f"{servers[0].http_url}/api/docs/pair/restore", {"to": seq_t}, headers=key
        )
        again = await post_json(
            http, f"{servers[1].http_url}/api/docs/pair/restore", {"to": seq_t}, headers=key
        )
        assert again == first
        await eventually(lambda: text_of(a) == text_of(b) == "agreed.", timeout=15)
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:

            async def restore_rows() -> int:
                cur = await conn.execute(
                    "SELECT (SELECT COUNT(*) FROM collab_updates WHERE author LIKE 'restore:%%')"
                    " + (SELECT COUNT(*) FROM collab_history WHERE author LIKE 'restore:%%')"
                )
                row = await cur.fetchone()
                assert row is not None
                return int(row[0])

            await eventually(lambda: _eq(restore_rows(), 1))
            cur = await conn.execute(
                "SELECT COUNT(*) FROM collab_events WHERE type = 'doc.restored'"
            )
            assert await cur.fetchone() == (1,)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await asyncio.gather(*(s.stop() for s in servers))


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def run_cli(*args: str) -> tuple[int, str, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_remote_bot_and_the_cli_read_and_restore_through_the_http_api(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    from collab.remote import History, RemoteError

    server = await make_server(store="sqlite")
    alice = await make_client("shell", url=server.ws_url)
    alice.text().insert(0, "line one\n")
    seq_t = await settle(server, alice)
    alice.text().insert(len(alice.text()), "line two\n")
    await settle(server, alice)
    async with History(server.http_url) as history:
        page = await history.sessions("shell", gap_ms=0)
        assert page["latest_seq"] > seq_t
        assert (await history.at("shell", seq_t))["text"] == "line one\n"
        version = await history.create_version("shell", "two lines")
        assert [v["id"] for v in await history.versions("shell")] == [version["id"]]
        diff = await history.diff("shell", seq_t)
        assert diff["roots"]["text"][-1] == {"op": "insert", "text": "line two\n"}
        try:
            await history.at("shell", 10**9)
        except RemoteError as exc:
            assert (exc.status, exc.code) == (404, "unknown_point")
        else:
            raise AssertionError("no RemoteError")

    code, out, err = await run_cli("history", "shell", "--server", server.http_url, "--gap", "0")
    assert code == 0, err
    assert "anonymous" in out and "two lines" in out
    code, out, err = await run_cli("show", "shell", "--at", str(seq_t), "--server", server.http_url)
    assert (code, out) == (0, "line one\n"), err
    code, out, err = await run_cli(
        "restore", "shell", "--to", str(seq_t), "--server", server.http_url
    )
    assert code == 0, err
    assert out.startswith(f"shell: restored to seq {seq_t}")
    await eventually(lambda: text_of(alice) == "line one\n")
    code, out, err = await run_cli("show", "shell", "--at", "soon", "--server", server.http_url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "[invalid_point]" in err and "Traceback" not in err


async def test_hooks_see_a_restore_as_a_change_by_restore_and_server_code_can_restore(
    make_client: ClientFactory, tmp_path: Any
) -> None:
    from collab.hooks import Change, Hooks

    seen: list[Change] = []

    class Recorder(Hooks):
        async def on_change(self, event: Change) -> None:
            seen.append(event)

    async with InProcessServer(
        store=f"sqlite:///{tmp_path / 'hooks.db'}", hooks=[Recorder()]
    ) as server:
        alice = await make_client("hooked", url=server.ws_url)
        alice.text().insert(0, "keep")
        seq_t = await settle(server, alice)
        alice.text().insert(4, " drop")
        await settle(server, alice)
        result = await server.server.restore("hooked", to=seq_t, principal="ops")
        assert result["restored_to"]["seq"] == seq_t
        await eventually(lambda: text_of(alice) == "keep")
        await eventually(lambda: any("restore:ops" in c.authors for c in seen))
        page = await server.server.history("hooked", gap_ms=0)
        assert page["sessions"][0]["authors"] == ["restore:ops"]
        assert (await server.server.at("hooked", seq_t))["text"] == "keep"


async def test_a_big_document_is_replayed_in_a_worker_process(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    from collab.history import PROCESS_BYTES

    server = await make_server(store="sqlite")
    alice = await make_client("big", url=server.ws_url)
    body = "0123456789abcdef\n" * (PROCESS_BYTES // 16)
    alice.text().insert(0, body)
    seq_t = await settle(server, alice)
    alice.text().insert(0, "HEAD ")
    await settle(server, alice)
    diff = await get_json(http, api(server, "big", f"/diff?from={seq_t}"))
    assert diff["roots"]["text"][0] == {"op": "insert", "text": "HEAD "}
    await post_json(http, api(server, "big", "/restore"), {"to": seq_t})
    await eventually(lambda: text_of(alice) == body)
    assert server.server.history_engine._pool is not None, "ran in the worker"
