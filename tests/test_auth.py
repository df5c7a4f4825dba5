"""Tokens, read-only connections and the origin check, over real sockets and HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.auth import issue_token
from collab.client import ConnectionClosed, Session
from collab.closecodes import CloseCode
from collab.keys import MANAGER
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import text_of

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token(doc: str = "doc", mode: str = "write", ttl: float = 3600, secret: str = SECRET) -> str:
    return issue_token(secret, doc, mode, ttl)  # type: ignore[arg-type]


@pytest.fixture
async def secured(make_server: ServerFactory) -> InProcessServer:
    return await make_server(auth_secret=SECRET, allowed_origin=("https://editor.example",))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def handshake_status(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> int:
    try:
        ws = await http.ws_connect(url, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


@pytest.mark.parametrize(
    ("case", "query", "status"),
    [
        ("no token", "", 401),
        ("wrong secret", f"?token={token(secret='another-secret-that-is-long-enough-x')}", 401),
        ("expired", f"?token={token(ttl=-10)}", 401),
        ("garbage", "?token=not.a.jwt", 401),
        ("other document", f"?token={token(doc='other')}", 403),
        ("glob that does not match", f"?token={token(doc='team-*')}", 403),
        ("exact document", f"?token={token(doc='doc')}", 101),
        ("glob", f"?token={token(doc='d*')}", 101),
        ("read-only", f"?token={token(mode='read')}", 101),
    ],
)
async def test_websocket_token_cases(
    case: str, query: str, status: int, secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    assert await handshake_status(http, f"{secured.ws_url}/doc{query}") == status, case


async def test_bearer_header_is_accepted_like_the_query_token(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {token()}"}
    assert await handshake_status(http, f"{secured.ws_url}/doc", headers) == 101


async def test_refused_handshake_creates_no_room(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    assert await handshake_status(http, f"{secured.ws_url}/secret-doc") == 401
    assert "secret-doc" not in secured.app[MANAGER].rooms


async def test_read_only_client_syncs_and_sees_live_changes_but_cannot_write(
    secured: InProcessServer, make_client: ClientFactory
) -> None:
    writer = await make_client(url=secured.ws_url, token=token(mode="write"))
    writer.doc.get("text", type=Text).insert(0, "written")
    reader = await make_client(url=secured.ws_url, token=token(mode="read"))
    await reader.wait_for(lambda: text_of(reader) == "written")
    reader.set_presence({"user": "reader"})
    await writer.wait_for(lambda: reader.awareness.client_id in writer.awareness.states)
    reader.doc.get("text", type=Text).insert(0, "vandalism ")
    writer.doc.get("text", type=Text).insert(7, "!")
    await reader.wait_for(lambda: text_of(reader).endswith("written!"))
    await writer.wait_for(lambda: text_of(writer) == "written!")
    late = await make_client(url=secured.ws_url, token=token(mode="read"))
    assert text_of(late) == "written!"
    assert text_of(writer) == "written!"


async def test_read_only_update_is_answered_with_permission_denied(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(f"{secured.ws_url}/doc?token={token(mode='read')}")
    doc = Doc()
    doc.get("text", type=Text).insert(0, "nope")
    await ws.send_bytes(protocol.sync_update(doc.get_update()))
    while True:
        message = protocol.decode(await ws.receive_bytes(timeout=5))
        if isinstance(message, protocol.PermissionDenied):
            break
    assert not ws.closed  # the socket stays: reading still works
    await ws.close()


async def test_python_client_reports_a_refused_token(secured: InProcessServer) -> None:
    session = Session(secured.ws_url, "doc", token=token(doc="other"))
    await session.start()
    with pytest.raises(ConnectionClosed) as info:
        await session.wait_synced(5)
    assert info.value.code == CloseCode.FORBIDDEN
    await session.close()


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example", 403),
        ("https://editor.example", 101),
        (None, 101),  # not a browser
    ],
)
async def test_origin_check(
    origin: str | None, status: int, secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Origin": origin} if origin else {}
    url = f"{secured.ws_url}/doc?token={token()}"
    assert await handshake_status(http, url, headers) == status


async def test_same_origin_is_always_allowed(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Origin": secured.http_url}
    assert await handshake_status(http, f"{secured.ws_url}/doc?token={token()}", headers) == 101


async def test_http_api_needs_a_token_that_covers_the_document(
    secured: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    writer = await make_client("team-a", url=secured.ws_url, token=token(doc="team-*"))
    writer.doc.get("text", type=Text).insert(0, "x")
    await make_client("private", url=secured.ws_url, token=token(doc="private"))
    await writer.drain()
    base = f"{secured.http_url}/api/docs"

    def bearer(t: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {t}"}

    async with http.get(f"{base}/team-a") as resp:
        assert resp.status == 401
    async with http.get(f"{base}/team-a", headers=bearer(token(doc="private"))) as resp:
        assert resp.status == 403
    async with http.get(f"{base}/team-a", headers=bearer(token(doc="team-*", mode="read"))) as r:
        assert r.status == 200
    async with http.post(
        f"{base}/team-a/update", data=b"\x00\x00", headers=bearer(token("team-*", "read"))
    ) as resp:
        assert resp.status == 403
    async with http.delete(f"{base}/team-a", headers=bearer(token("team-*", "read"))) as resp:
        assert resp.status == 403
    async with http.get(base, headers=bearer(token(doc="team-*", mode="read"))) as resp:
        names = [d["name"] for d in (await resp.json())["docs"]]
    assert names == ["team-a"]  # the listing shows only what the token covers


async def test_open_server_warns_at_startup(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_server()
    assert any("server is OPEN" in r.getMessage() for r in caplog.records)
