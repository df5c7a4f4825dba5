"""Tokens, read-only connections and the origin check, over real sockets and HTTP."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.app import create_app
from collab.auth import issue_token
from collab.client import ConnectionClosed, Session
from collab.closecodes import CloseCode
from collab.config import Settings
from collab.keys import MANAGER
from collab.testing.server import InProcessServer, free_port
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import logged, text_of

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token(
    doc: str = "doc",
    mode: str = "write",
    ttl: float = 3600,
    secret: str = SECRET,
    *,
    glob: bool = False,
) -> str:
    return issue_token(secret, doc, mode, ttl, glob=glob)  # type: ignore[arg-type]


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
        ("glob that does not match", f"?token={token(doc='team-*', glob=True)}", 403),
        ("exact document", f"?token={token(doc='doc')}", 101),
        ("glob", f"?token={token(doc='d*', glob=True)}", 101),
        ("a doc claim is a literal name, not a glob", f"?token={token(doc='d*')}", 403),
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
    doc: Doc[Any] = Doc()
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
    writer = await make_client("team-a", url=secured.ws_url, token=token("team-*", glob=True))
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
    team_reader = bearer(token("team-*", "read", glob=True))
    async with http.get(f"{base}/team-a", headers=team_reader) as r:
        assert r.status == 200
    async with http.post(f"{base}/team-a/update", data=b"\x00\x00", headers=team_reader) as resp:
        assert resp.status == 403
    async with http.delete(f"{base}/team-a", headers=team_reader) as resp:
        assert resp.status == 403
    async with http.get(base, headers=team_reader) as resp:
        names = [d["name"] for d in (await resp.json())["docs"]]
    assert names == ["team-a"]  # the listing shows only what the token covers


async def test_open_server_warns_at_startup(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_server()
    assert any("server is OPEN" in r.getMessage() for r in caplog.records)


# -- issue #18: literal names, JSON refusals, expiry on open sockets, the secret ---------


async def test_a_token_for_a_name_with_glob_characters_opens_exactly_that_document(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    literal = token("report[1]")
    assert await handshake_status(http, f"{secured.ws_url}/report%5B1%5D?token={literal}") == 101
    assert await handshake_status(http, f"{secured.ws_url}/report1?token={literal}") == 403


async def test_a_pattern_token_matches_by_glob_and_brackets_can_be_escaped(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    pattern = token("report[[]*]", glob=True)
    assert await handshake_status(http, f"{secured.ws_url}/report%5B7%5D?token={pattern}") == 101
    assert await handshake_status(http, f"{secured.ws_url}/report7?token={pattern}") == 403
    # A token may carry both claims: one exact name and one pattern.
    both = jwt.encode(
        {"doc": "notes", "doc_pattern": "team-*", "mode": "read", "exp": time.time() + 60},
        SECRET,
        algorithm="HS256",
    )
    for name, status in (("notes", 101), ("team-x", 101), ("other", 403)):
        assert await handshake_status(http, f"{secured.ws_url}/{name}?token={both}") == status


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "token_required"),
        ({"Authorization": "Bearer not.a.jwt"}, 401, "token_invalid"),
        ({"Authorization": f"Bearer {token(ttl=-10)}"}, 401, "token_expired"),
        ({"Authorization": f"Bearer {token('other')}"}, 403, "document_not_allowed"),
    ],
)
async def test_refusals_are_json_errors_with_a_stable_code(
    headers: dict[str, str],
    status: int,
    error: str,
    secured: InProcessServer,
    http: aiohttp.ClientSession,
) -> None:
    for url in (f"{secured.http_url}/api/docs/doc", f"{secured.http_url}/ws/doc"):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == status
            body = await resp.json()
            assert body["error"] == error and body["message"], url


async def test_an_open_socket_is_closed_with_4401_when_its_token_expires(
    make_server: ServerFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collab.loop")
    # awareness_timeout 1 s: the server-wide tick runs every 0.1 s.
    server = await make_server(auth_secret=SECRET, awareness_timeout=1.0)
    short = issue_token(SECRET, "doc", "write", 2)
    lasting = token()
    expiring = await http.ws_connect(f"{server.ws_url}/doc?token={short}")
    staying = await http.ws_connect(f"{server.ws_url}/doc?token={lasting}")
    while True:
        msg = await expiring.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert expiring.close_code == CloseCode.UNAUTHORIZED
    assert msg.extra == "token expired"
    assert not staying.closed  # a token that has not expired keeps its socket
    await logged(caplog, "code=4401", "reason=token expired")
    room = server.app[MANAGER].rooms["doc"]
    assert len(room.connections) == 1
    await staying.close()


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "collab", "serve", "--store", "memory://", *args]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_serve_refuses_an_empty_secret(how: str) -> None:
    port = str(free_port())
    env = dict(os.environ)
    if how == "flag":
        command = serve_command("--port", port, "--auth-secret", "")
    else:
        command = serve_command("--port", port)
        env["COLLAB_AUTH_SECRET"] = ""
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("collab serve started an open server with an empty secret")
    assert done.returncode != 0
    assert "secret" in done.stderr and "empty" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_empty_secret_is_refused_by_create_app_too() -> None:
    with pytest.raises(ValueError, match="empty"):
        create_app(Settings(auth_secret=""))


async def test_a_short_secret_is_loudly_warned_about(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_server(auth_secret="x" * 31)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("--auth-secret is only 31 bytes" in r.getMessage() for r in warnings)
    caplog.clear()
    await make_server(auth_secret="x" * 32)
    assert not any("--auth-secret is only" in r.getMessage() for r in caplog.records)


def test_collab_token_mints_a_name_or_a_pattern() -> None:
    def claims(*args: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "collab", "token", "--secret", SECRET, *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        decoded: dict[str, object] = jwt.decode(out, SECRET, algorithms=["HS256"])
        return decoded

    named = claims("--doc", "report[1]")
    assert named["doc"] == "report[1]" and "doc_pattern" not in named
    pattern = claims("--pattern", "team-*", "--mode", "read")
    assert pattern["doc_pattern"] == "team-*" and "doc" not in pattern
    assert pattern["mode"] == "read"


async def test_an_old_glob_token_is_refused_with_a_hint_to_mint_a_pattern(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    old = token("team-*")  # before doc_pattern, doc held the glob
    headers = {"Authorization": f"Bearer {old}"}
    async with http.get(f"{secured.http_url}/api/docs/team-a", headers=headers) as resp:
        assert resp.status == 403
        message = (await resp.json())["message"]
    assert "names one document exactly" in message and "--pattern" in message
