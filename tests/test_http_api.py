"""The HTTP document API, route by route, including bad input."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pycrdt import Array, Doc, Map, Text

from collab.client import ConnectionClosed
from collab.closecodes import CloseCode
from collab.keys import MANAGER
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory
from tests.helpers import eventually, text_of


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def api(server: InProcessServer, name: str, suffix: str = "") -> str:
    from urllib.parse import quote

    return f"{server.http_url}/api/docs/{quote(name, safe='')}{suffix}"


async def test_list_shows_size_updates_time_and_live_connections(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    a = await make_client("listed")
    a.doc.get("text", type=Text).insert(0, "hello")
    await a.drain()
    await make_client("listed")

    async def listed() -> bool:
        async with http.get(f"{server.http_url}/api/docs") as resp:
            docs = {d["name"]: d for d in (await resp.json())["docs"]}
        d = docs.get("listed")
        return d is not None and d["updates"] >= 1 and d["size"] > 0 and d["connections"] == 2

    await eventually(listed)


async def test_get_document_returns_each_root_as_json(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    a = await make_client("content")
    a.doc.get("text", type=Text).insert(0, "body")
    a.doc.get("meta", type=Map)["title"] = "Notes"
    a.doc.get("tags", type=Array).extend(["x", 2])
    await a.drain()

    async def content() -> bool:
        async with http.get(api(server, "content")) as resp:
            body = await resp.json()
        return body["content"] == {"text": "body", "meta": {"title": "Notes"}, "tags": ["x", 2]}

    await eventually(content)


async def test_unknown_document_is_404(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    for suffix in ("", "/update"):
        async with http.get(api(server, "never", suffix)) as resp:
            assert resp.status == 404
    async with http.delete(api(server, "never")) as resp:
        assert resp.status == 404


async def test_update_export_is_full_state_or_diff_against_sv(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    a = await make_client("export")
    text = a.doc.get("text", type=Text)
    text.insert(0, "first ")
    await a.drain()
    mirror = Doc()

    async def full_state_arrived() -> bool:
        async with http.get(api(server, "export", "/update")) as resp:
            assert resp.content_type == "application/octet-stream"
            mirror.apply_update(await resp.read())
        return str(mirror.get("text", type=Text)) == "first "

    await eventually(full_state_arrived)
    text.insert(6, "second")
    await a.drain()
    sv = base64.b64encode(mirror.get_state()).decode()

    async def diff_completes() -> bool:
        async with http.get(api(server, "export", "/update"), params={"sv": sv}) as resp:
            diff = await resp.read()
        probe = Doc()
        probe.apply_update(mirror.get_update())
        probe.apply_update(diff)
        return str(probe.get("text", type=Text)) == "first second"

    await eventually(diff_completes)


async def test_posted_update_reaches_live_editors_and_returns_state_vector(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("posted")
    source = Doc()
    source.get("text", type=Text).insert(0, "from http")
    async with http.post(api(server, "posted", "/update"), data=source.get_update()) as resp:
        assert resp.status == 200
        sv = base64.b64decode((await resp.json())["state_vector"])
    await editor.wait_for(lambda: text_of(editor) == "from http")
    assert sv == editor.doc.get_state()


async def test_posted_update_to_closed_document_is_stored(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    source = Doc()
    source.get("text", type=Text).insert(0, "no editors")
    async with http.post(api(server, "offline", "/update"), data=source.get_update()) as resp:
        assert resp.status == 200
    late = await make_client("offline")
    assert text_of(late) == "no editors"


@pytest.mark.parametrize("body", [b"", b"\x01\x02garbage", b"\xff" * 10])
async def test_bad_update_body_is_400_and_changes_nothing(
    body: bytes, server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("guarded")
    editor.doc.get("text", type=Text).insert(0, "intact")
    await editor.drain()
    async with http.post(api(server, "guarded", "/update"), data=body) as resp:
        assert resp.status == 400
    late = await make_client("guarded")
    await late.wait_for(lambda: text_of(late) == "intact")
    assert server.app[MANAGER].rooms["guarded"].doc.get_update() == late.doc.get_update()


async def test_bad_state_vector_is_400(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    await make_client("sv")
    async with http.get(api(server, "sv", "/update"), params={"sv": "not base64!"}) as resp:
        assert resp.status == 400


async def test_delete_closes_editors_with_4404_and_forgets_the_document(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("doomed")
    editor.doc.get("text", type=Text).insert(0, "bye")
    await editor.drain()
    async with http.delete(api(server, "doomed")) as resp:
        assert resp.status == 200
    editor.synced.clear()
    with pytest.raises(ConnectionClosed) as info:
        await editor.wait_synced(5)
    assert info.value.code == CloseCode.NOT_FOUND
    async with http.get(api(server, "doomed")) as resp:
        assert resp.status == 404
    fresh = await make_client("doomed")
    assert text_of(fresh) == ""
