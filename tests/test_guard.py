"""Cross-site writes and DNS rebinding are refused, over real HTTP and WebSocket requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Doc, Text

from collab.auth import issue_token
from collab.config import Settings
from collab.guard import GuardedRoute, hostname
from collab.server import Server
from collab.testing.server import InProcessServer
from tests.conftest import ServerFactory

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
EVIL = "http://evil.example"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def an_update(text: str = "written") -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


async def upgrade_status(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, str | None]:
    """The handshake's status and, when refused, the JSON error code."""
    try:
        ws = await http.ws_connect(url, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        async with http.get(url, headers=headers) as resp:  # the same check, readable body
            return exc.status, (await resp.json())["error"]
    await ws.close()
    return 101, None


async def test_a_cross_site_text_plain_post_is_refused_and_changes_nothing(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.http_url}/api/docs/notes/update"
    headers = {"Origin": EVIL, "Content-Type": "text/plain"}
    async with http.post(url, data=an_update(), headers=headers) as resp:
        assert resp.status == 403
        body = await resp.json()
    assert body["error"] == "origin_not_allowed"
    assert "evil.example" in body["message"]
    async with http.get(f"{server.http_url}/api/docs/notes") as resp:
        assert resp.status == 404  # nothing was written


async def test_a_cross_site_delete_is_refused(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{server.http_url}/api/docs/keep/update", data=an_update()) as resp:
        assert resp.status == 200  # no Origin: a bot, not a web page
    async with http.delete(f"{server.http_url}/api/docs/keep", headers={"Origin": EVIL}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "origin_not_allowed"
    async with http.get(f"{server.http_url}/api/docs/keep") as resp:
        assert resp.status == 200


async def test_same_origin_and_allowed_origins_may_write(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(allowed_origin=("https://editor.example",))
    for origin in (server.http_url, "https://editor.example", "https://EDITOR.example/"):
        url = f"{server.http_url}/api/docs/notes/update"
        async with http.post(url, data=an_update(), headers={"Origin": origin}) as resp:
            assert resp.status == 200, origin


async def test_a_cross_site_read_is_not_an_origin_matter(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    # Reading needs no Origin check: the browser keeps the answer from the page.
    async with http.get(f"{server.http_url}/api/docs", headers={"Origin": EVIL}) as resp:
        assert resp.status == 200


async def test_a_dns_rebinding_upgrade_is_refused_on_an_open_server(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    rebound = {"Host": "attacker.example", "Origin": "http://attacker.example"}
    assert await upgrade_status(http, f"{server.ws_url}/doc", rebound) == (
        403,
        "host_not_allowed",
    )
    # Reads too: a rebound page shares the server's origin, so it could read answers.
    async with http.get(f"{server.http_url}/api/docs", headers=rebound) as resp:
        assert resp.status == 403
        body = await resp.json()
    assert body["error"] == "host_not_allowed"
    assert "--allowed-host attacker.example" in body["message"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "app.localhost:{port}"],
)
async def test_local_names_and_ip_addresses_are_answered(
    host: str, server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Host": host.format(port=server.port)}
    async with http.get(f"{server.http_url}/healthz", headers=headers) as resp:
        assert resp.status == 200
    origin = {"Origin": f"http://{headers['Host']}", **headers}
    assert await upgrade_status(http, f"{server.ws_url}/doc", origin) == (101, None)


async def test_allowed_hosts_are_answered_and_others_refused(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(allowed_host=("collab.example", ".corp.example"))
    for host, status in [
        ("collab.example:8080", 200),
        ("corp.example", 200),
        ("docs.corp.example", 200),
        ("collab.example.evil", 403),
        ("evilcorp.example", 403),
    ]:
        async with http.get(f"{server.http_url}/api/docs", headers={"Host": host}) as resp:
            assert resp.status == status, host


async def test_a_server_with_a_secret_checks_hosts_only_when_listed(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    token = issue_token(SECRET, "doc", "write", 600)
    headers = {"Host": "collab.example", "Authorization": f"Bearer {token}"}
    secured = await make_server(auth_secret=SECRET)
    async with http.get(f"{secured.http_url}/api/docs/doc", headers=headers) as resp:
        assert resp.status == 404  # past the Host check: there is no such document yet
    listed = await make_server(auth_secret=SECRET, allowed_host=("other.example",))
    async with http.get(f"{listed.http_url}/api/docs/doc", headers=headers) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "host_not_allowed"


async def test_refusals_are_counted(server: InProcessServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/api/docs", headers={"Host": "a.example"}):
        pass
    async with http.post(f"{server.http_url}/api/docs/x/update", headers={"Origin": EVIL}):
        pass
    async with http.get(f"{server.http_url}/metrics") as resp:
        metrics = await resp.text()
    assert 'collab_requests_refused_total{reason="host"} 1.0' in metrics
    assert 'collab_requests_refused_total{reason="origin"} 1.0' in metrics


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM:8080", "example.com"),
        ("[::1]:80", "::1"),
        ("::1", "::1"),
        ("localhost.", "localhost"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_hostname_of_a_host_header(header: str, name: str) -> None:
    assert hostname(header) == name


def test_every_route_of_the_app_is_behind_the_guard() -> None:
    """The checks are not a middleware (those keep a frame beside every WebSocket),
    so each route must be registered through ``guard.add_route``: none may be left out."""
    app = Server(Settings(store="memory://")).app
    unguarded = [
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if not (isinstance(route.handler, type) and issubclass(route.handler, GuardedRoute))
    ]
    assert [r for r in app.router.routes()], "no routes"
    assert not unguarded, f"routes registered without guard.add_route: {unguarded}"
    assert not app.middlewares


async def test_a_cross_site_upgrade_to_a_mounted_server_is_refused(
    http: aiohttp.ClientSession,
) -> None:
    """Mounted under a prefix in a parent app, the guard still stands in front of the socket."""
    collab = Server(Settings(store="memory://"))
    parent = web.Application()
    parent.add_subapp("/collab/", collab.app)
    runner = web.AppRunner(parent)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/collab/ws/doc"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": EVIL})
        assert refused.value.status == 403
        ws = await http.ws_connect(url, headers={"Origin": f"http://127.0.0.1:{port}"})
        await ws.close()
        async with http.get(f"http://127.0.0.1:{port}/collab/api/nothing-here") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "no_route"
        async with http.put(f"http://127.0.0.1:{port}/collab/api/docs") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"] == "method_not_allowed"
            assert "GET" in resp.headers["Allow"]
    finally:
        await runner.cleanup()
