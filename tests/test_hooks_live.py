"""Hooks on a running server: who may connect, what loads, what is refused, what is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.auth import issue_token
from collab.closecodes import CloseCode
from collab.hooks import (
    Change,
    ConnectionEvent,
    ConnectRequest,
    Hooks,
    IncomingUpdate,
    Persisted,
    Principal,
    Reject,
    Unload,
)
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, RedisServer
from tests.helpers import eventually, sqlite_store

SECRET = "a-secret-that-is-long-enough-for-hs256!!"


def _update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


async def _frames_until(ws: aiohttp.ClientWebSocketResponse, kind: type) -> object:
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        message = protocol.decode(msg.data)
        if isinstance(message, kind):
            return message


class Recorder(Hooks):
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.connects: list[ConnectionEvent] = []
        self.disconnects: list[ConnectionEvent] = []
        self.unloads: list[Unload] = []

    async def on_change(self, event: Change) -> None:
        self.changes.append(event)

    async def on_connect(self, event: ConnectionEvent) -> None:
        self.connects.append(event)

    async def on_disconnect(self, event: ConnectionEvent) -> None:
        self.disconnects.append(event)

    async def on_unload(self, event: Unload) -> None:
        self.unloads.append(event)


async def test_an_authenticate_refusal_closes_with_the_chosen_code() -> None:
    class Gate(Hooks):
        async def authenticate(self, request: ConnectRequest) -> Principal | None:
            if request.query.get("ticket") == "ok":
                return Principal("carol", "Carol")
            if request.query.get("ticket") == "http":
                raise Reject(CloseCode.FORBIDDEN, "ticket refused")
            raise Reject(4003, "come back with a ticket", close=True)

    async with InProcessServer(hooks=[Gate()]) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}/doc")
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4003
        assert msg.extra == "come back with a ticket"
        # Without close=True the refusal is an HTTP status before any upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{server.ws_url}/doc?ticket=http")
        assert refused.value.status == 403
        ok = await http.ws_connect(f"{server.ws_url}/doc?ticket=ok")
        await _frames_until(ok, protocol.SyncStep1)
        conns = server.server.connections("carol")
        assert [c.principal.name for c in conns] == ["Carol"]
        await ok.close()


async def test_a_failing_document_loader_refuses_the_room_and_leaves_the_store_untouched(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'collab.db'}"

    class Loader(Hooks):
        timeout = 0.2
        mode = "raise"

        async def load_document(self, doc: str) -> bytes | None:
            if self.mode == "raise":
                raise RuntimeError("the template service is down")
            if self.mode == "hang":
                await asyncio.Event().wait()
            return _update("from the template")

    loader = Loader()
    async with (
        InProcessServer(store=url, hooks=[loader]) as server,
        aiohttp.ClientSession() as http,
    ):
        for mode in ("raise", "hang"):
            loader.mode = mode
            ws = await http.ws_connect(f"{server.ws_url}/new-doc")
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.CLOSE, mode
            assert ws.close_code == CloseCode.TRY_AGAIN_LATER, mode
        await server.server.store.flush()
        # No empty document stands in for the one that could not be loaded.
        assert await server.server.store.load("new-doc") is None
        assert "new-doc" not in server.server.manager.rooms
        assert server.server.hooks.errors[("Loader", "load_document")] == 2
        # Once the loader works, its content is the document's, and it is stored.
        loader.mode = "ok"
        ws = await http.ws_connect(f"{server.ws_url}/new-doc")
        await _frames_until(ws, protocol.SyncStep1)
        await ws.close()
    async with sqlite_store(url) as store:
        stored = await store.load("new-doc")
    assert stored is not None
    check: Doc[Any] = Doc()
    check.apply_update(stored)
    assert str(check.get("text", type=Text)) == "from the template"


async def test_a_loader_is_not_asked_for_a_stored_document(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'collab.db'}"
    async with sqlite_store(url) as store:
        store.append("kept", _update("stored text"))

    class Loader(Hooks):
        async def load_document(self, doc: str) -> bytes | None:
            raise AssertionError("asked for a stored document")

    async with InProcessServer(store=url, hooks=[Loader()]) as server:
        async with server.server.open_document("kept") as doc:
            assert str(doc) == "stored text"
        assert not server.server.hooks.errors


async def test_a_raising_on_change_hook_harms_neither_the_room_nor_other_hooks(
    make_client: ClientFactory,
) -> None:
    class Broken(Hooks):
        async def on_change(self, event: Change) -> None:
            raise RuntimeError("bug in the application's hook")

    recorder = Recorder()
    async with InProcessServer(hooks=[Broken(), recorder]) as server:
        alice = await make_client("doc", url=server.ws_url)
        bob = await make_client("doc", url=server.ws_url)
        alice.text().insert(0, "hello")
        await eventually(lambda: str(bob.text()) == "hello")
        await server.server.hooks.idle()
        assert recorder.changes and recorder.changes[0].doc == "doc"
        assert server.server.hooks.errors[("Broken", "on_change")] >= 1
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(f"{server.http_url}/metrics")).text()
        assert 'collab_hook_errors_total{hook="Broken",method="on_change"}' in metrics


async def test_a_refused_update_gets_permission_denied_and_changes_nothing() -> None:
    class NoShouting(Hooks):
        async def before_update(self, event: IncomingUpdate) -> None:
            doc: Doc[Any] = Doc()
            doc.apply_update(event.update)
            if "!" in str(doc.get("text", type=Text)):
                raise Reject(CloseCode.FORBIDDEN, "no shouting")

    async with InProcessServer(hooks=[NoShouting()]) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}/calm")
        await _frames_until(ws, protocol.SyncStep1)
        await ws.send_bytes(protocol.sync_update(_update("HEY!")))
        denied = await _frames_until(ws, protocol.PermissionDenied)
        assert isinstance(denied, protocol.PermissionDenied)
        assert denied.reason == "no shouting"
        # The socket stays, and an acceptable update still goes through.
        await ws.send_bytes(protocol.sync_update(_update("hello")))
        async with server.server.open_document("calm") as doc:
            await eventually(lambda: str(doc) == "hello")
        assert not ws.closed
        await ws.close()


async def test_tokens_name_the_principal_in_hook_events(make_client: ClientFactory) -> None:
    recorder = Recorder()
    token = issue_token(SECRET, "doc", "write", 60, sub="u-42", name="Ada")
    async with InProcessServer(auth_secret=SECRET, hooks=[recorder]) as server:
        ada = await make_client("doc", url=server.ws_url, token=token)
        ada.text().insert(0, "by ada")
        await eventually(lambda: bool(recorder.changes))
        await ada.close()
        await eventually(lambda: bool(recorder.disconnects))
    assert recorder.changes[0].authors == ("u-42",)
    assert recorder.connects[0].principal.id == "u-42"
    assert recorder.connects[0].principal.name == "Ada"
    assert recorder.disconnects[0].connection_id == recorder.connects[0].connection_id


async def test_one_edit_gives_one_on_change_in_a_cluster(
    make_client: ClientFactory, redis_server: RedisServer
) -> None:
    here, there = Recorder(), Recorder()
    async with (
        InProcessServer(redis_url=redis_server.url, hooks=[here]) as one,
        InProcessServer(redis_url=redis_server.url, hooks=[there]) as two,
    ):
        writer = await make_client("doc", url=one.ws_url)
        reader = await make_client("doc", url=two.ws_url)
        writer.text().insert(0, "once")
        await eventually(lambda: str(reader.text()) == "once")
        await one.server.hooks.idle()
        await two.server.hooks.idle()
    assert len(here.changes) == 1 and here.changes[0].authors == ("anonymous",)
    assert there.changes == []  # relayed from a peer: reported where it entered


async def test_an_app_can_make_a_user_read_only_and_then_disconnect_them(
    make_client: ClientFactory,
) -> None:
    token = issue_token(SECRET, "doc", "write", 60, sub="mallory")
    async with InProcessServer(auth_secret=SECRET) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{server.ws_url}/doc", headers={"Authorization": f"Bearer {token}"}
        )
        await _frames_until(ws, protocol.SyncStep1)
        assert server.server.set_read_only("mallory", doc="elsewhere") == 0
        assert server.server.set_read_only("mallory", doc="doc") == 1
        await ws.send_bytes(protocol.sync_update(_update("vandalism")))
        denied = await _frames_until(ws, protocol.PermissionDenied)
        assert isinstance(denied, protocol.PermissionDenied)
        async with server.server.open_document("doc") as doc:
            assert str(doc) == ""
        assert server.server.disconnect("mallory") == 1
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.FORBIDDEN


class Counting(Hooks):
    """Named by tests below as ``--hook tests.test_hooks_live:Counting``."""

    async def on_change(self, event: Change) -> None:
        pass


def test_hooks_named_in_settings_are_loaded_in_order() -> None:
    from collab.config import Settings
    from collab.server import Server

    server = Server(Settings(hook=("tests.test_hooks_live:Counting",)))
    assert [type(h).__name__ for h in server.hooks.hooks] == ["Counting"]
    with pytest.raises(ValueError, match="cannot import"):
        Server(Settings(hook=("tests.no_such_module:Counting",)))
    with pytest.raises(ValueError, match="is not a collab.Hooks"):
        Server(Settings(hook=("tests.test_hooks_live:SECRET",)))


async def test_on_persisted_reports_committed_updates_with_sequence_numbers(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    class Feed(Hooks):
        def __init__(self) -> None:
            self.events: list[Persisted] = []

        async def on_persisted(self, event: Persisted) -> None:
            self.events.append(event)

    feed = Feed()
    token = issue_token(SECRET, "ledger", "write", 60, sub="grace")
    async with InProcessServer(
        store=f"sqlite:///{tmp_path / 'collab.db'}", auth_secret=SECRET, hooks=[feed]
    ) as server:
        grace = await make_client("ledger", url=server.ws_url, token=token)
        grace.text().insert(0, "first")
        await eventually(lambda: bool(feed.events))
        grace.text().insert(5, " second")
        await eventually(lambda: sum(e.updates for e in feed.events) >= 2)
    first, last = feed.events[0], feed.events[-1]
    assert first.doc == "ledger" and first.authors == ("grace",)
    # The second edit was typed after the first was committed: a later commit, later rows.
    assert len(feed.events) >= 2
    assert first.seq_from <= first.seq_to < last.seq_from <= last.seq_to
