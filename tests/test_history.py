"""Version history end to end (issue #14): real servers, real clients, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
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


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
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
