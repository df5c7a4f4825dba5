"""Issue #18 for the HTTP API: reads that leave the event loop alone, a request budget per
client, and documents nested too deeply to show as JSON (findings 4 and 6)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map, Text

import collab.app  # noqa: F401  (InProcessServer.start would import it on the event loop)
from collab.auth import issue_token
from collab.keys import MANAGER, STORE
from collab.ratelimit import ClientLimiter
from collab.readcache import ReadCache
from collab.render import RenderCrashed, Renderer, RendererBusy
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import eventually, text_of

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def api(server: InProcessServer, name: str, suffix: str = "") -> str:
    return f"{server.http_url}/api/docs/{name}{suffix}"


# -- finding 4: big reads off the event loop ----------------------------------------------


@pytest.fixture(scope="module")
def fragmented_update() -> bytes:
    """200,000 items, each typed before the previous one: a few MB that are slow to decode.

    (Built here, outside the event loop.)  Decoding it as JSON took 0.66 s
    on the loop on the machine this test was written on.
    """
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    for _ in range(200_000):
        text.insert(0, "ab")
    return doc.get_update()


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Executing "):
            self.messages.append(record.getMessage())


@pytest.fixture
def slow_callbacks() -> Iterator[_SlowCallbacks]:
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    yield handler
    logging.getLogger("asyncio").removeHandler(handler)


async def test_reading_a_big_document_leaves_the_event_loop_to_the_editors(
    server: InProcessServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    fragmented_update: bytes,
    slow_callbacks: _SlowCallbacks,
) -> None:
    loop = asyncio.get_running_loop()
    default = loop.slow_callback_duration
    a = await make_client("honest")
    b = await make_client("honest")
    # Seeding the store applies the update on the loop: that is not what is tested.
    loop.slow_callback_duration = 60
    server.app[STORE].append("big", fragmented_update)
    await asyncio.sleep(0)  # the detector times whole callbacks: end this one first
    # The loop's own detector (debug mode, on for every test) names any
    # callback that holds the loop this long; reading the document on the
    # loop did, for far longer, and delayed every editor meanwhile.
    loop.slow_callback_duration = 0.3
    try:

        async def read(suffix: str) -> int:
            async with http.get(api(server, "big", suffix)) as resp:
                await resp.read()
                return resp.status

        async def edit(k: int) -> None:
            a.doc.get("text", type=Text).insert(0, f"[{k}]")
            await b.wait_for(lambda: text_of(b).startswith(f"[{k}]"))

        reads = asyncio.gather(read(""), read("/text"), read(""))
        for k in range(5):
            await edit(k)
        assert list(await reads) == [200, 200, 200]
    finally:
        loop.slow_callback_duration = default
    assert slow_callbacks.messages == []


async def test_a_repeated_read_of_an_unchanged_open_document_is_served_from_cache(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    editor = await make_client("cached")
    text = editor.doc.get("text", type=Text)
    text.insert(0, "x" * 10_000)
    await editor.drain()
    room_doc = server.app[MANAGER].rooms["cached"].doc
    original = room_doc.get_update
    encodes = 0

    def counting(*args: Any) -> bytes:
        nonlocal encodes
        encodes += 1
        return original(*args)

    async def fetch() -> str:
        async with http.get(api(server, "cached")) as resp:
            return str((await resp.json())["content"]["text"])

    room_doc.get_update = counting  # type: ignore[method-assign,assignment]
    try:
        assert await fetch() == "x" * 10_000
        assert await fetch() == "x" * 10_000
        assert encodes == 1
        text.insert(0, "y")
        await editor.drain()

        async def changed() -> bool:
            return (await fetch()).startswith("y")

        await eventually(changed)
        assert encodes >= 2
    finally:
        del room_doc.get_update


# -- finding 4: a request budget per client -----------------------------------------------


async def test_a_client_over_its_request_budget_gets_429_with_retry_after(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    limited = await make_server(api_rate=0.2)  # one request per 5 s, bursts of one
    async with http.get(f"{limited.http_url}/api/docs") as resp:
        assert resp.status == 200
    async with http.get(f"{limited.http_url}/api/docs") as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
        assert body["error"] == "rate_limited" and body["message"]
    async with http.get(f"{limited.http_url}/healthz") as resp:
        assert resp.status == 200  # only the API is limited


async def test_each_token_has_its_own_budget_and_bad_tokens_share_the_address_one(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    limited = await make_server(api_rate=0.2, auth_secret=SECRET)
    url = f"{limited.http_url}/api/docs"

    def bearer(value: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {value}"}

    alice = bearer(issue_token(SECRET, "*", "read", 600, glob=True))
    bob = bearer(issue_token(SECRET, "b-*", "read", 600, glob=True))
    async with http.get(url, headers=alice) as resp:
        assert resp.status == 200
    async with http.get(url, headers=alice) as resp:
        assert resp.status == 429
    async with http.get(url, headers=bob) as resp:
        assert resp.status == 200
    async with http.get(url, headers=bearer("forged.1")) as resp:
        assert resp.status == 401  # the address's budget, spent on a refusal
    async with http.get(url, headers=bearer("forged.2")) as resp:
        assert resp.status == 429  # a new garbage token buys no new budget


def test_the_limiter_refills_and_charges_big_responses_after_the_fact() -> None:
    now = [0.0]
    limiter = ClientLimiter(rate=2, burst=4, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(4)] == [0, 0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0  # another client
    now[0] += 1.0  # +2
    assert limiter.take("a") == 0
    limiter.charge("a", 5)  # a big response: into debt
    assert limiter.take("a") == pytest.approx(2.5)
    now[0] += 2.5
    assert limiter.take("a") == 0


# -- finding 6: deep nesting is a clear error, never a 500 ---------------------------------


def nested_maps(depth: int) -> bytes:
    doc: Doc[Any] = Doc()
    node = doc.get("tree", type=Map)
    for _ in range(depth):
        node["child"] = Map()
        node = node["child"]
    return doc.get_update()


def nested_value(depth: int) -> bytes:
    doc: Doc[Any] = Doc()
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    doc.get("meta", type=Map)["deep"] = value
    return doc.get_update()


@pytest.mark.parametrize(
    "update", [nested_maps(1200), nested_value(1500)], ids=["shared-types", "json-value"]
)
async def test_a_document_nested_too_deeply_answers_422_too_deep(
    update: bytes, server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    server.app[STORE].append("deep", update)  # as an older server may have stored it
    async with http.get(api(server, "deep")) as resp:
        assert resp.status == 422
        body = await resp.json()
        assert body["error"] == "too_deep"
    async with http.get(api(server, "deep", "/update")) as resp:
        assert resp.status == 200  # the raw state stays exportable


def crash(update: bytes) -> None:
    os._exit(3)  # what a stack overflow in yrs does to a process


def size(update: bytes) -> int:
    return len(update)


async def test_a_worker_that_dies_fails_one_render_and_is_replaced() -> None:
    renderer = Renderer(workers=1, inline_limit=0)
    try:
        with pytest.raises(RenderCrashed):
            await renderer.run(crash, b"x" * 10)
        assert await renderer.run(size, b"x" * 10) == 10
    finally:
        await renderer.close()


def stuck(update: bytes, started: str) -> None:
    Path(started).touch()
    time.sleep(600)


async def test_closing_the_renderer_does_not_wait_for_a_running_render(tmp_path: Path) -> None:
    renderer = Renderer(workers=1, inline_limit=0)
    warm = await renderer.run(size, b"x")
    started = tmp_path / "started"
    running = asyncio.ensure_future(renderer.run(stuck, b"x", str(started)))
    await eventually(started.exists, timeout=30)
    async with asyncio.timeout(30):  # far below the render's 600 s
        await renderer.close()
        with pytest.raises(RenderCrashed):
            await running
    assert warm == 1


async def test_the_renderer_refuses_work_beyond_its_queue() -> None:
    renderer = Renderer(workers=1, inline_limit=0)
    try:
        runs = [asyncio.ensure_future(renderer.run(size, b"x")) for _ in range(4)]
        await asyncio.sleep(0)  # each takes its slot and waits for the worker
        with pytest.raises(RendererBusy):
            await renderer.run(size, b"x")
        assert await asyncio.gather(*runs) == [1, 1, 1, 1]
    finally:
        await renderer.close()


# -- the read cache -----------------------------------------------------------------------


def test_a_documents_version_changes_with_every_change() -> None:
    cache = ReadCache()
    doc: Doc[Any] = Doc()
    first = cache.version(doc)
    assert cache.version(doc) == first
    doc.get("text", type=Text).insert(0, "x")
    second = cache.version(doc)
    assert second != first
    del doc.get("text", type=Text)[0:1]  # a deletion changes no state vector, but the version
    assert cache.version(doc) != second


def test_the_cache_keeps_the_most_recently_used_within_its_budget() -> None:
    cache = ReadCache(budget=2000)
    for key in "abcd":
        cache.put(key, key * 400)
    cache.get("a")
    cache.put("e", "e" * 400)  # over budget: the least recently used goes
    assert cache.get("b") is None
    assert cache.get("a") == "a" * 400 and cache.get("e") == "e" * 400
    cache.put("huge", "h" * 900)  # over a quarter of the budget: not kept
    assert cache.get("huge") is None


async def test_concurrent_reads_of_one_version_render_once() -> None:
    cache = ReadCache()
    renders = 0
    gate = asyncio.Event()

    async def make() -> str:
        nonlocal renders
        renders += 1
        await gate.wait()
        return "rendered"

    readers = [asyncio.ensure_future(cache.compute("k", make)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*readers) == ["rendered"] * 5
    assert renders == 1
    assert await cache.compute("k", make) == "rendered" and renders == 1
