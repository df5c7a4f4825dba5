"""Serving the built editor: pages, hashed assets, cache headers, and nothing shadowed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from collab.config import Settings
from collab.guard import GUARD, Guard
from collab.static import ASSET_CACHE, HTML_CACHE, setup_frontend
from collab.testing.server import InProcessServer, free_port


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A stand-in for frontend/dist, so these tests need no Node.js."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>list</title>")
    (root / "editor.html").write_text("<!doctype html><title>editor</title>")
    (root / "assets" / "editor-Ab12Cd34.js").write_text("console.log('editor')")
    (tmp_path / "secret.txt").write_text("not for the web")
    return root


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def site(dist: Path) -> AsyncIterator[str]:
    """Only the frontend routes, served from the stand-in ``dist``."""
    app = web.Application()
    app[GUARD] = Guard(Settings())
    setup_frontend(app, dist)
    runner, url = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_pages_are_served_uncached_and_hashed_assets_for_a_year(
    site: str, http: aiohttp.ClientSession
) -> None:
    for path, title in [
        ("/", "list"),
        ("/d/notes", "editor"),
        ("/d/team%2Fplan%20%C3%BC", "editor"),
        ("/d/a/b/c", "editor"),
    ]:
        async with http.get(site + path) as response:
            assert response.status == 200, path
            assert response.content_type == "text/html"
            assert response.headers["Cache-Control"] == HTML_CACHE
            assert f"<title>{title}</title>" in await response.text()
    async with http.get(site + "/assets/editor-Ab12Cd34.js") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == ASSET_CACHE
        assert await response.text() == "console.log('editor')"


@pytest.mark.parametrize(
    "path",
    [
        "/assets/missing.js",
        "/assets/..%2F..%2Fsecret.txt",
        "/assets/%2E%2E/secret.txt",
        "/secret.txt",
    ],
)
async def test_nothing_outside_the_assets_folder_is_served(
    site: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(site + path) as response:
        assert response.status == 404
        assert "not for the web" not in await response.text()


async def test_without_a_build_every_page_says_how_to_build_it(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = web.Application()
    app[GUARD] = Guard(Settings())
    setup_frontend(app, dist=tmp_path / "missing")
    runner, url = await serve(app)
    try:
        for path in ("/", "/d/notes"):
            async with http.get(url + path) as response:
                assert response.status == 200
                assert response.headers["Cache-Control"] == HTML_CACHE
                body = await response.text()
                assert "cd frontend &amp;&amp; npm ci &amp;&amp; npm run build" in body
                assert "scripts/serve" in body
        async with http.get(url + "/assets/editor.js") as response:
            assert response.status == 404
    finally:
        await runner.cleanup()


async def test_the_editor_routes_shadow_no_api_websocket_or_health_route(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.http_url + "/healthz") as response:
        assert (await response.json())["status"] == "ok"
    async with http.get(server.http_url + "/readyz") as response:
        assert (await response.json())["status"] == "ready"
    async with http.get(server.http_url + "/api/docs") as response:
        assert await response.json() == {"docs": []}
    ws = await http.ws_connect(server.ws_url + "/d/x")  # a document named "d/x"
    await ws.close()
    async with http.get(server.http_url + "/d/notes") as response:
        assert response.status == 200
        assert response.content_type == "text/html"


@pytest.mark.parametrize("path", ["/assets/%00", "/assets/a%00.js", "/assets/" + "x" * 5000])
async def test_a_name_the_filesystem_cannot_take_is_404_not_500(
    site: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(site + path) as response:
        assert response.status == 404


async def test_the_editor_page_opens_a_name_with_a_newline(
    site: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(site + "/d/two%0Alines") as response:
        assert response.status == 200
        assert "<title>editor</title>" in await response.text()


async def test_pages_name_where_collab_is_mounted_in_their_base_href(
    dist: Path, http: aiohttp.ClientSession
) -> None:
    """Relative asset URLs and the scripts' API and socket paths resolve against it."""
    (dist / "editor.html").write_text(
        '<!doctype html><html><head><title>editor</title><script src="./assets/e.js"></script>'
    )
    alone = web.Application()
    alone[GUARD] = Guard(Settings())
    setup_frontend(alone, dist)
    mounted = web.Application()
    mounted[GUARD] = Guard(Settings())
    setup_frontend(mounted, dist)
    parent = web.Application()
    parent.add_subapp("/collab/", mounted)
    for app, prefix in ((alone, "/"), (parent, "/collab/")):
        runner, url = await serve(app)
        try:
            for path in ("", "d/notes", "d/a/b"):
                async with http.get(f"{url}{prefix}{path}") as response:
                    assert response.status == 200
                    body = await response.text()
                    assert body.count("<base ") == 1, body
                    assert f'<base href="{prefix}">' in body, body
                    etag = response.headers["ETag"]
                async with http.get(
                    f"{url}{prefix}{path}", headers={"If-None-Match": etag}
                ) as response:
                    assert response.status == 304
            async with http.get(f"{url}{prefix}d/notes") as response:
                body = await response.text()
                # First in the head, before the first relative URL.
                assert body.index("<base ") < body.index("./assets/e.js")
            async with http.get(f"{url}{prefix}assets/editor-Ab12Cd34.js") as response:
                assert response.status == 200
        finally:
            await runner.cleanup()


async def test_an_unknown_page_gets_the_styled_404_and_api_paths_stay_json(
    dist: Path, http: aiohttp.ClientSession
) -> None:
    (dist / "404.html").write_text("<!doctype html><head><title>Not found</title></head>")
    app = web.Application()
    app[GUARD] = Guard(Settings())
    setup_frontend(app, dist)
    runner, url = await serve(app)
    try:
        page = await http.get(f"{url}/no/such/page")
        assert page.status == 404
        assert "<title>Not found</title>" in await page.text()
        assert "<base href=" in await page.text()
        for path in ("/api/nope", "/ws", "/assets/nope.js"):
            plain = await http.get(f"{url}{path}")
            assert plain.status == 404
            assert "Not found</title>" not in await plain.text()
    finally:
        await runner.cleanup()
