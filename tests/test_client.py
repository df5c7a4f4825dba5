"""The Python client against a real server: reconnects and re-syncs both ways,
says why it cannot connect, and edits text by character index."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pycrdt import Text

from collab import connect
from collab.client import CannotConnect, ConnectionClosed, Session, UpgradeRefused
from collab.closecodes import CloseCode
from collab.testing.server import InProcessServer, free_port
from tests.conftest import ClientFactory
from tests.helpers import text_of


async def test_connect_yields_a_synced_document(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    seed = await make_client("notes")
    seed.doc.get("text", type=Text).insert(0, "already here")
    await seed.drain()
    async with connect(server.ws_url, "notes") as session:
        await session.wait_for(lambda: text_of(session) == "already here")
        assert session.synced.is_set()


async def test_client_reconnects_after_restart_and_resyncs_both_ways(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    a = await make_client()
    b = await make_client()
    a.doc.get("text", type=Text).insert(0, "kept by clients")
    await b.wait_for(lambda: text_of(b) == "kept by clients")
    await server.stop()  # memory store: the restarted server knows nothing
    await a.wait_for(lambda: not a.synced.is_set())
    a.doc.get("text", type=Text).insert(0, "offline ")  # typed while disconnected
    await server.start()
    await a.wait_synced(10)
    await b.wait_synced(10)
    await b.wait_for(lambda: text_of(b) == "offline kept by clients")
    fresh = await make_client()
    assert text_of(fresh) == "offline kept by clients"
    assert a.connects >= 2


async def test_client_gives_up_when_the_handshake_is_refused(server: InProcessServer) -> None:
    session = Session(server.ws_url, "x" * 513, min_backoff=0.01)
    await session.start()
    with pytest.raises(UpgradeRefused) as info:
        await session.wait_synced(5)
    assert info.value.status == 400
    assert session.connects == 0
    await session.close()


async def test_protocol_error_from_us_is_reported_not_retried(server: InProcessServer) -> None:
    session = Session(server.ws_url, "doc", min_backoff=0.01)
    await session.start()
    await session.wait_synced()
    session._outbox.put_nowait(b"\x09garbage")  # a frame no server accepts
    session.synced.clear()
    with pytest.raises(ConnectionClosed) as info:
        await session.wait_synced(5)
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert "unknown message type 9" in info.value.reason
    assert session.connects == 1
    await session.close()


async def test_a_url_without_ws_is_an_http_404_not_a_deleted_document(
    server: InProcessServer,
) -> None:
    session = Session(server.http_url, "notes", min_backoff=0.01)  # forgot the /ws
    await session.start()
    with pytest.raises(UpgradeRefused) as info:
        await session.wait_synced(5)
    await session.close()
    assert info.value.status == 404
    assert info.value.code != CloseCode.NOT_FOUND
    assert str(info.value).startswith(f"HTTP 404 at the WebSocket upgrade of {server.http_url}/")
    assert "ends in /ws" in str(info.value)


@pytest.fixture
async def upgrade_recorder() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A server that records each upgrade request and refuses it with 403."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        raise web.HTTPForbidden()

    app = web.Application()
    app.router.add_get("/ws/{doc}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"ws://127.0.0.1:{port}/ws", seen
    await runner.cleanup()


async def test_the_token_travels_in_a_bearer_header_not_in_the_url(
    upgrade_recorder: tuple[str, list[web.Request]],
) -> None:
    url, seen = upgrade_recorder
    session = Session(url, "notes", token="t0k3n")
    await session.start()
    with pytest.raises(UpgradeRefused) as info:
        await session.wait_synced(5)
    await session.close()
    assert info.value.code == CloseCode.FORBIDDEN
    [request] = seen
    assert request.headers["Authorization"] == "Bearer t0k3n"
    assert "token" not in request.query  # URLs end up in access logs


async def test_a_server_that_is_not_running_is_logged_and_given_up_after_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    session = Session(url, "notes", min_backoff=0.05, connect_timeout=0.5)
    await session.start()
    with caplog.at_level(logging.WARNING, "collab.client"), pytest.raises(CannotConnect) as info:
        await session.wait_synced(10)
    await session.close()
    assert str(info.value).startswith(f"could not connect to {url}/notes within 0.5 s")
    assert "refused" in str(info.value).lower()
    attempts = [r for r in caplog.records if "cannot connect to" in r.getMessage()]
    assert len(attempts) >= 2
    assert all(r.levelno == logging.WARNING for r in attempts)
    assert "(attempt 1)" in attempts[0].getMessage()


async def test_wait_synced_names_the_last_failure_when_it_times_out() -> None:
    session = Session(f"ws://127.0.0.1:{free_port()}/ws", "notes", min_backoff=0.05)
    await session.start()
    with pytest.raises(TimeoutError, match="the last attempt failed: .*refused"):
        await session.wait_synced(0.5)
    await session.close()


async def test_text_is_edited_by_character_index_whatever_the_characters(
    make_client: ClientFactory,
) -> None:
    bot = await make_client("notes")
    editor = await make_client("notes")
    text = bot.text()
    text += "Grüße 👋 café\n"
    assert len(text) == 13
    text.insert(len(text), "ümlaut ok\n")
    text.delete(text_of(bot).index("👋"), 2)  # the emoji and the space after it
    text.insert(6, "🌍 ")
    await editor.wait_for(lambda: text_of(editor) == "Grüße 🌍 café\nümlaut ok\n")
    text.replace("Grüße 🌍 café\nÜMLAUT OK\n")
    await editor.wait_for(lambda: text_of(editor) == "Grüße 🌍 café\nÜMLAUT OK\n")
