"""POST /api/tokens: a token holder mints links for exactly its own documents, never wider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

import collab.app  # noqa: F401  (InProcessServer.start would import it on the event loop)
from collab.auth import issue_token
from collab.testing.server import InProcessServer
from tests.conftest import ServerFactory

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def secured(make_server: ServerFactory) -> InProcessServer:
    return await make_server(auth_secret=SECRET)


def token(doc: str = "notes", mode: str = "write", ttl: float = 3600, *, glob: bool = False) -> str:
    return issue_token(SECRET, doc, mode, ttl, glob=glob)  # type: ignore[arg-type]


async def mint(
    http: aiohttp.ClientSession,
    server: InProcessServer,
    caller: str | None,
    body: Any,
    *,
    status: int = 200,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {caller}"} if caller else {}
    async with http.post(f"{server.http_url}/api/tokens", json=body, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        answer: dict[str, Any] = await resp.json()
        return answer


def claims(value: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(value, SECRET, algorithms=["HS256"])
    return decoded


async def status_of(
    http: aiohttp.ClientSession, server: InProcessServer, name: str, minted: str
) -> int:
    headers = {"Authorization": f"Bearer {minted}"}
    async with http.get(f"{server.http_url}/api/docs/{name}/update", headers=headers) as resp:
        return resp.status


async def test_a_write_token_mints_read_and_write_tokens_for_the_same_document(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    caller = token("notes", ttl=600)
    async with http.put(
        f"{secured.http_url}/api/docs/notes/text",
        data="hello",
        headers={"Authorization": f"Bearer {caller}"},
    ) as resp:
        assert resp.status == 200
    for mode in ("read", "write"):
        answer = await mint(http, secured, caller, {"mode": mode})
        assert answer["mode"] == mode and answer["doc"] == "notes"
        assert answer["doc_pattern"] is None
        minted = claims(answer["token"])
        assert minted["mode"] == mode and minted["doc"] == "notes"
        assert "doc_pattern" not in minted
        assert answer["expires_at"] == minted["exp"] <= claims(caller)["exp"]
        assert await status_of(http, secured, "notes", answer["token"]) == 200
        assert await status_of(http, secured, "other", answer["token"]) == 403


async def test_a_pattern_token_mints_the_same_pattern_and_keeps_other_claims(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    caller = jwt.encode(
        {
            "doc_pattern": "team-*",
            "mode": "write",
            "sub": "alice",
            "exp": int(time.time()) + 600,
        },
        SECRET,
        algorithm="HS256",
    )
    answer = await mint(http, secured, caller, {"mode": "read"})
    assert answer["doc"] is None and answer["doc_pattern"] == "team-*"
    minted = claims(answer["token"])
    assert minted["doc_pattern"] == "team-*" and minted["sub"] == "alice"
    assert "doc" not in minted


async def test_a_read_token_cannot_mint_a_write_token(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    reader = token(mode="read")
    refused = await mint(http, secured, reader, {"mode": "write"}, status=403)
    assert refused["error"] == "read_only"
    answer = await mint(http, secured, reader, {"mode": "read"})
    assert claims(answer["token"])["mode"] == "read"


async def test_a_minted_token_never_outlives_its_caller_and_ttl_shortens_it(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    caller = token(ttl=120)
    longer = await mint(http, secured, caller, {"mode": "read", "ttl": 86400})
    assert longer["expires_at"] <= claims(caller)["exp"]
    shorter = await mint(http, secured, caller, {"mode": "read", "ttl": 30})
    assert shorter["expires_at"] <= time.time() + 31


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"mode": "admin"}, "invalid_mode"),
        ({}, "invalid_mode"),
        (["read"], "invalid_json"),
        ({"mode": "read", "ttl": -5}, "invalid_ttl"),
        ({"mode": "read", "ttl": "soon"}, "invalid_ttl"),
    ],
)
async def test_a_bad_mint_request_is_400(
    body: Any, code: str, secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    assert (await mint(http, secured, token(), body, status=400))["error"] == code


@pytest.mark.parametrize(
    ("caller", "code"),
    [(None, "token_required"), ("not.a.jwt", "token_invalid"), ("expired", "token_expired")],
)
async def test_minting_needs_a_valid_token_of_ones_own(
    caller: str | None, code: str, secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    if caller == "expired":
        caller = token(ttl=-10)
    assert (await mint(http, secured, caller, {"mode": "read"}, status=401))["error"] == code


async def test_an_open_server_answers_auth_disabled(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    open_server = await make_server()
    answer = await mint(http, open_server, None, {"mode": "write"}, status=404)
    assert answer["error"] == "auth_disabled"


async def test_a_token_in_the_query_string_can_mint_too(
    secured: InProcessServer, http: aiohttp.ClientSession
) -> None:
    url = f"{secured.http_url}/api/tokens?token={token('notes')}"
    async with http.post(url, json={"mode": "read"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["doc"] == "notes"
