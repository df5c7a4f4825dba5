"""The HTTP document API, route by route, including bad input."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Array, Doc, Map, Text

import collab.app  # noqa: F401  (InProcessServer.start would import it on the event loop)
from collab import render
from collab import text as ytext
from collab.auth import issue_token
from collab.client import ConnectionClosed
from collab.closecodes import CloseCode
from collab.keys import MANAGER
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
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
            body: dict[str, object] = await resp.json()
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
    mirror: Doc[Any] = Doc()

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
        probe: Doc[Any] = Doc()
        probe.apply_update(mirror.get_update())
        probe.apply_update(diff)
        return str(probe.get("text", type=Text)) == "first second"

    await eventually(diff_completes)


async def test_posted_update_reaches_live_editors_and_returns_state_vector(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("posted")
    source: Doc[Any] = Doc()
    source.get("text", type=Text).insert(0, "from http")
    async with http.post(api(server, "posted", "/update"), data=source.get_update()) as resp:
        assert resp.status == 200
        sv = base64.b64decode((await resp.json())["state_vector"])
    await editor.wait_for(lambda: text_of(editor) == "from http")
    assert sv == editor.doc.get_state()


async def test_posted_update_to_closed_document_is_stored(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    source: Doc[Any] = Doc()
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


# -- issue #13 item 11: every error is JSON with a stable code ---------------------------

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token(doc: str = "doc", mode: str = "write", ttl: float = 3600, *, glob: bool = False) -> str:
    return issue_token(SECRET, doc, mode, ttl, glob=glob)  # type: ignore[arg-type]


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def error_of(resp: aiohttp.ClientResponse) -> str:
    """The response's error code, after checking that the body has the documented shape."""
    assert resp.content_type == "application/json", await resp.text()
    body = await resp.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    code: str = body["error"]
    return code


async def put_doc(http: aiohttp.ClientSession, server: InProcessServer, name: str) -> None:
    source: Doc[Any] = Doc()
    source.get("text", type=Text).insert(0, "exists")
    async with http.post(api(server, name, "/update"), data=source.get_update()) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/api/docs/never", {}, 404, "not_found"),
        ("GET", "/api/docs/never/update", {}, 404, "not_found"),
        ("GET", "/api/docs/never/text", {}, 404, "not_found"),
        ("DELETE", "/api/docs/never", {}, 404, "not_found"),
        ("POST", "/api/docs/never/rename", {"json": {"to": "other"}}, 404, "not_found"),
        ("GET", "/api/nothing-here", {}, 404, "no_route"),
        ("GET", "/api", {}, 404, "no_route"),
        ("PATCH", "/api/docs/some", {}, 405, "method_not_allowed"),
        ("POST", "/api/docs/some/update", {"data": b""}, 400, "invalid_update"),
        ("POST", "/api/docs/some/update", {"data": b"\x01\x02junk"}, 400, "invalid_update"),
        ("GET", "/api/docs/exists/update?sv=not%20base64!", {}, 400, "invalid_state_vector"),
        ("GET", "/api/docs/exists/update?sv=BQ==", {}, 400, "invalid_state_vector"),
        ("GET", "/api/docs/" + "n" * 600, {}, 400, "invalid_name"),
        ("GET", "/api/docs/exists/text?format=pdf", {}, 400, "invalid_format"),
        ("GET", "/api/docs/exists/text?root=", {}, 400, "invalid_root"),
        ("POST", "/api/docs/exists/rename", {"data": b"{not json"}, 400, "invalid_json"),
        ("POST", "/api/docs/exists/rename", {"json": ["to"]}, 400, "invalid_json"),
        ("POST", "/api/docs/exists/rename", {"json": {"to": ""}}, 400, "invalid_name"),
        ("POST", "/api/docs/exists/rename", {"json": {"to": "exists"}}, 409, "name_taken"),
        (
            "PUT",
            "/api/docs/exists/text",
            {"data": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}},
            400,
            "invalid_text",
        ),
        (
            "PUT",
            "/api/docs/exists/text",
            {"data": b"x", "headers": {"Content-Type": "image/png"}},
            415,
            "unsupported_media_type",
        ),
        ("POST", "/api/tokens", {"json": {"mode": "read"}}, 404, "auth_disabled"),
    ],
)
async def test_every_api_error_is_a_json_object_with_a_stable_code(
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    server: InProcessServer,
    http: aiohttp.ClientSession,
) -> None:
    await put_doc(http, server, "exists")
    async with http.request(method, server.http_url + path, **kwargs) as resp:
        assert resp.status == status, await resp.text()
        assert await error_of(resp) == code


async def test_method_not_allowed_keeps_its_allow_header(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    async with http.patch(api(server, "some")) as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"] and "DELETE" in resp.headers["Allow"]


async def test_auth_refusals_of_the_api_are_json(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    secured = await make_server(auth_secret=SECRET)
    cases = [
        ({}, 401, "token_required"),
        (bearer("not.a.jwt"), 401, "token_invalid"),
        (bearer(token(ttl=-10)), 401, "token_expired"),
        (bearer(token("other")), 403, "document_not_allowed"),
    ]
    for headers, status, code in cases:
        async with http.get(api(secured, "doc", "/text"), headers=headers) as resp:
            assert resp.status == status
            assert await error_of(resp) == code
    async with http.put(
        api(secured, "doc", "/text"), data=b"x", headers=bearer(token(mode="read"))
    ) as resp:
        assert resp.status == 403
        assert await error_of(resp) == "read_only"


async def test_a_body_over_the_size_limit_is_413_json(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    small = await make_server(max_message_size=1024)
    async with http.post(api(small, "big", "/update"), data=b"\x00" * 4096) as resp:
        assert resp.status == 413
        assert await error_of(resp) == "too_large"


async def test_an_unexpected_failure_is_a_500_json_and_is_logged(
    server: InProcessServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await put_doc(http, server, "exists")

    def broken(update: bytes) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(render, "document_json", broken)
    async with http.get(api(server, "exists")) as resp:
        assert resp.status == 500
        assert await error_of(resp) == "internal_error"
    assert any("boom" in (r.exc_text or "") for r in caplog.records)


async def test_errors_outside_the_api_are_left_alone(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.http_url}/no-such-page") as resp:
        assert resp.status == 404
        assert resp.content_type != "application/json"


# -- text routes ------------------------------------------------------------------------


async def test_text_route_reads_the_text_root_as_plain_text_or_markdown(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("notes")
    editor.doc.get("text", type=Text).insert(0, "# Title 😀\n\nbody")
    editor.doc.get("other", type=Text).insert(0, "second root")
    await editor.drain()

    async def served() -> bool:
        async with http.get(api(server, "notes", "/text")) as resp:
            return await resp.text() == "# Title 😀\n\nbody"

    await eventually(served)
    async with http.get(api(server, "notes", "/text")) as resp:
        assert resp.content_type == "text/plain" and resp.charset == "utf-8"
    async with http.get(api(server, "notes", "/text"), params={"format": "md"}) as resp:
        assert resp.content_type == "text/markdown"
        assert await resp.text() == "# Title 😀\n\nbody"
    async with http.get(api(server, "notes", "/text"), headers={"Accept": "text/markdown"}) as r:
        assert r.content_type == "text/markdown"
    async with http.get(api(server, "notes", "/text"), params={"root": "other"}) as resp:
        assert await resp.text() == "second root"
    async with http.get(api(server, "notes", "/text"), params={"root": "absent"}) as resp:
        assert resp.status == 200 and await resp.text() == ""


async def test_text_of_a_map_root_is_409_not_text(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    source: Doc[Any] = Doc()
    source.get("meta", type=Map)["title"] = "x"
    async with http.post(api(server, "mapped", "/update"), data=source.get_update()) as resp:
        assert resp.status == 200
    async with http.get(api(server, "mapped", "/text"), params={"root": "meta"}) as resp:
        assert resp.status == 409
        assert await error_of(resp) == "not_text"
    async with http.put(api(server, "mapped", "/text"), params={"root": "meta"}, data="y") as r:
        assert r.status == 409
        assert await error_of(r) == "not_text"


async def test_put_text_reaches_live_editors_and_answers_name_and_length_in_characters(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("put")
    editor.doc.get("text", type=Text).insert(0, "old line\nkept line\n")
    await editor.drain()
    new = "new line 😀\nkept line\n"
    async with http.put(api(server, "put", "/text"), data=new.encode()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": "put", "length": len(new)}
    await editor.wait_for(lambda: text_of(editor) == new)


async def test_put_text_is_a_diff_so_a_concurrent_edit_survives(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    base = "# Title\n\nfirst paragraph\nsecond paragraph\n"
    seed: Doc[Any] = Doc()
    seed.get("text", type=Text).insert(0, base)
    async with http.post(api(server, "diffed", "/update"), data=seed.get_update()) as resp:
        assert resp.status == 200
    # An editor that has the document types, and has not sent it yet ...
    offline: Doc[Any] = Doc()
    async with http.get(api(server, "diffed", "/update")) as resp:
        offline.apply_update(await resp.read())
    before = offline.get_state()
    ytext.insert(offline.get("text", type=Text), len(base) - 1, " (typed offline)")
    # ... while someone replaces the title through the API.
    new = base.replace("# Title", "# A better title")
    async with http.put(api(server, "diffed", "/text"), data=new) as resp:
        assert resp.status == 200
    async with http.post(api(server, "diffed", "/update"), data=offline.get_update(before)) as resp:
        assert resp.status == 200
    async with http.get(api(server, "diffed", "/text")) as resp:
        assert await resp.text() == (
            "# A better title\n\nfirst paragraph\nsecond paragraph (typed offline)\n"
        )


async def test_put_text_creates_a_missing_document(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    async with http.put(
        api(server, "fresh", "/text"),
        data=b"from a file\n",
        headers={"Content-Type": "text/markdown; charset=utf-8"},
    ) as resp:
        assert resp.status == 200
    late = await make_client("fresh")
    assert text_of(late) == "from a file\n"


async def test_put_text_of_a_big_text_round_trips_through_the_workers(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    lines = [f"line {i}: {'é' * (i % 7)} 😀 some words\n" for i in range(3000)]
    async with http.put(api(server, "big", "/text"), data="".join(lines)) as resp:
        assert resp.status == 200
    editor = await make_client("big")
    lines[1500] = "a changed line\n"
    async with http.put(api(server, "big", "/text"), data="".join(lines)) as resp:
        assert resp.status == 200
    await editor.wait_for(lambda: text_of(editor) == "".join(lines))
    async with http.get(api(server, "big", "/text")) as resp:
        assert await resp.text() == "".join(lines)
    async with http.get(api(server, "big")) as resp:
        assert (await resp.json())["content"] == {"text": "".join(lines)}


async def test_put_text_beyond_the_document_size_limit_is_413_and_changes_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    small = await make_server(max_doc_size=2000)
    async with http.put(api(small, "capped", "/text"), data="short") as resp:
        assert resp.status == 200
    async with http.put(api(small, "capped", "/text"), data="x" * 3000) as resp:
        assert resp.status == 413
        assert await error_of(resp) == "too_large"
    async with http.get(api(small, "capped", "/text")) as resp:
        assert await resp.text() == "short"


async def test_put_text_needs_a_write_token_for_the_document(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    secured = await make_server(auth_secret=SECRET)
    async with http.put(api(secured, "doc", "/text"), data="x", headers=bearer(token())) as r:
        assert r.status == 200
    async with http.get(api(secured, "doc", "/text"), headers=bearer(token(mode="read"))) as r:
        assert await r.text() == "x"


# -- rename -----------------------------------------------------------------------------


async def test_rename_moves_the_content_and_closes_old_editors_with_4404(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("draft")
    editor.doc.get("text", type=Text).insert(0, "moving text")
    await editor.drain()
    async with http.post(api(server, "draft", "/rename"), json={"to": "final"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": "final"}
    editor.synced.clear()
    with pytest.raises(ConnectionClosed) as info:
        await editor.wait_synced(5)
    assert info.value.code == CloseCode.NOT_FOUND
    assert info.value.reason == "document renamed"
    async with http.get(api(server, "final", "/text")) as resp:
        assert await resp.text() == "moving text"
    async with http.get(api(server, "draft", "/text")) as resp:
        assert resp.status == 404
    async with http.get(f"{server.http_url}/api/docs") as resp:
        names = [d["name"] for d in (await resp.json())["docs"]]
    assert "final" in names and "draft" not in names


async def test_rename_onto_an_existing_document_is_409_and_changes_nothing(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    await put_doc(http, server, "one")
    async with http.put(api(server, "two", "/text"), data="two's text") as resp:
        assert resp.status == 200
    async with http.post(api(server, "one", "/rename"), json={"to": "two"}) as resp:
        assert resp.status == 409
        assert await error_of(resp) == "name_taken"
    async with http.get(api(server, "one", "/text")) as resp:
        assert await resp.text() == "exists"
    async with http.get(api(server, "two", "/text")) as resp:
        assert await resp.text() == "two's text"


async def test_rename_needs_write_access_to_both_names(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    secured = await make_server(auth_secret=SECRET)
    team = bearer(token("team-*", glob=True))
    async with http.put(api(secured, "team-a", "/text"), data="x", headers=team) as resp:
        assert resp.status == 200
    rename = api(secured, "team-a", "/rename")
    async with http.post(rename, json={"to": "elsewhere"}, headers=team) as resp:
        assert resp.status == 403
        assert await error_of(resp) == "document_not_allowed"
    reader = bearer(token("team-*", "read", glob=True))
    async with http.post(rename, json={"to": "team-b"}, headers=reader) as resp:
        assert resp.status == 403
        assert await error_of(resp) == "read_only"
    async with http.post(rename, json={"to": "team-b"}, headers=team) as resp:
        assert resp.status == 200


async def test_a_renamed_document_survives_a_restart_under_its_new_name(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/docs.db"
    first = await make_server(store=store)
    async with http.put(api(first, "before", "/text"), data="durable") as resp:
        assert resp.status == 200
    async with http.post(api(first, "before", "/rename"), json={"to": "after"}) as resp:
        assert resp.status == 200
    await first.stop()
    second = await make_server(store=store)
    async with http.get(api(second, "after", "/text")) as resp:
        assert await resp.text() == "durable"
    async with http.get(api(second, "before", "/text")) as resp:
        assert resp.status == 404


# -- listing lengths --------------------------------------------------------------------


async def test_list_shows_the_length_of_the_text_root_in_characters(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("measured")
    text = editor.doc.get("text", type=Text)
    text.insert(0, "😀 héllo")
    await editor.drain()
    source: Doc[Any] = Doc()
    source.get("meta", type=Map)["k"] = "v"
    async with http.post(api(server, "no-text", "/update"), data=source.get_update()) as resp:
        assert resp.status == 200

    async def lengths(expected: dict[str, int | None]) -> bool:
        async with http.get(f"{server.http_url}/api/docs") as resp:
            docs = {d["name"]: d["length"] for d in (await resp.json())["docs"]}
        return all(docs.get(name, "missing") == n for name, n in expected.items())

    await eventually(lambda: lengths({"measured": 7, "no-text": 0}))
    text.insert(len(text), "!!")
    await editor.drain()
    await eventually(lambda: lengths({"measured": 9}))
