"""Server-side documents: ``Server.open_document`` edits the live room like a client."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from collab.client import Session
from collab.origins import ServerOrigin
from collab.protocol import decode_state_vector
from collab.testing import converged
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, RedisServer, ServerFactory
from tests.helpers import eventually, sqlite_store


async def test_server_edits_merge_with_concurrent_typing_on_every_peer(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    alice = await make_client("notes")
    bob = await make_client("notes")
    rng = random.Random(7)

    async def type_into(session: Session, tag: str) -> None:
        text = session.text()
        for i in range(40):
            # At either end: a marker typed inside another would split it.
            text.insert(rng.choice([0, len(text)]), f"<{tag}{i}>")
            await asyncio.sleep(0)

    async def server_types() -> None:
        async with server.server.open_document("notes", origin="assistant") as doc:
            for i in range(40):
                doc.insert(rng.choice([0, len(str(doc))]), f"<s{i}>")
                await asyncio.sleep(0)

    await asyncio.gather(type_into(alice, "a"), type_into(bob, "b"), server_types())
    async with server.server.open_document("notes") as doc:
        final = await converged([alice.doc, bob.doc, doc.doc])
        # The same state, not only the same text: the same state vector, and
        # nothing that one has and another lacks.  (Not the bytes of
        # get_update() or get_state(): yrs writes clients in hash-map order and
        # squashes adjacent items as they integrate, so equal states may encode
        # differently when their updates arrived in different orders.)
        states = [decode_state_vector(d.get_state()) for d in (alice.doc, bob.doc, doc.doc)]
        assert states[0] == states[1] == states[2]
        for one, other in itertools.permutations([alice.doc, bob.doc, doc.doc], 2):
            missing: Doc[Any] = Doc()
            missing.apply_update(one.get_update(other.get_state()))
            assert str(missing.get("text", type=Text)) == ""
        assert str(alice.doc.get("text", type=Text)) == str(bob.doc.get("text", type=Text))
    for tag in ("a", "b", "s"):
        assert all(f"<{tag}{i}>" in final for i in range(40))


async def test_a_server_edit_reaches_sockets_and_the_store_on_exit(
    make_server: ServerFactory, make_client: ClientFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'collab.db'}"
    server = await make_server(store=url)
    reader = await make_client("report", url=server.ws_url)
    async with server.server.open_document("report", origin="importer") as doc:
        doc.append("imported by the server")
    # Exit waits for the commit: a fresh handle on the same database reads it.
    async with sqlite_store(url) as fresh:
        stored = await fresh.load("report")
    assert stored is not None
    check: Doc[Any] = Doc()
    check.apply_update(stored)
    assert str(check.get("text", type=Text)) == "imported by the server"
    await eventually(lambda: str(reader.text()) == "imported by the server")


async def test_an_edit_made_directly_on_the_doc_is_broadcast_and_stored(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    """No edit through the public API may silently vanish (code review 1.4a)."""
    reader = await make_client("plain")
    async with server.server.open_document("plain") as doc:
        # Not through the helpers: plain pycrdt, no transaction origin.
        doc.doc.get("text", type=Text).insert(0, "raw pycrdt")
    await eventually(lambda: str(reader.text()) == "raw pycrdt")
    stored = await server.server.store.load("plain")
    assert stored is not None


async def test_inserting_at_a_character_index_after_emoji_works_on_every_peer(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    client = await make_client("emoji")
    client.text().insert(0, "😀😀")
    async with server.server.open_document("emoji") as doc:
        await eventually(lambda: str(doc) == "😀😀")
        doc.insert(2, "X")
        doc.insert(1, "|")
    await eventually(lambda: str(client.text()) == "😀|😀X")


async def test_the_room_stays_loaded_while_server_code_holds_it(
    make_server: ServerFactory,
) -> None:
    server = await make_server(unload_grace=0.05)
    async with server.server.open_document("held", origin=ServerOrigin("bot")) as doc:
        doc.append("x")
        await asyncio.sleep(0.3)  # time is the input: several unload graces pass
        assert "held" in server.server.manager.rooms
    await eventually(lambda: "held" not in server.server.manager.rooms)


async def test_a_server_edit_reaches_a_client_of_another_process(
    make_server: ServerFactory, make_client: ClientFactory, redis_server: RedisServer
) -> None:
    here = await make_server(redis_url=redis_server.url)
    there = await make_server(redis_url=redis_server.url)
    remote = await make_client("shared", url=there.ws_url)
    async with here.server.open_document("shared", origin="assistant") as doc:
        doc.append("from the other process")
    await eventually(lambda: str(remote.text()) == "from the other process")
