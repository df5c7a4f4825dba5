"""The stock y-websocket client with ``CollabTransport`` (clients/collab-transport).

Each JS client is ``tests/interop/client.mjs`` (real ``yjs`` and ``y-websocket``
from npm) with ``COLLAB_TRANSPORT=auto``, so the provider is constructed with
``WebSocketPolyfill: CollabTransport`` and nothing else changes.  The collab
server is real; the middlebox in front of it is netem's proxy, whose
``refuse_upgrade`` answers WebSocket upgrades with 403 as a proxy that blocks
them does, and whose ``buffer_responses`` holds responses back as a buffering
proxy does.  The package's own ``node --test`` suite runs here too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from collab.testing.netem import NetemProxy
from collab.testing.server import InProcessServer
from tests.helpers import eventually
from tests.jsclient import CLIENT_SCRIPT, INTEROP_DIR, REPLY_TIMEOUT, JsClient, JsClientFactory

PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "collab-transport"

StartJs = Callable[..., Awaitable[JsClient]]


@pytest.fixture
async def start_js(require_node: None) -> AsyncIterator[StartJs]:
    """Start ``client.mjs`` on any URL with ``COLLAB_TRANSPORT`` set; all are killed after."""
    clients: list[JsClient] = []

    async def start(url: str, doc: str, transport: str = "auto") -> JsClient:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT_SCRIPT),
            url,
            doc,
            str(int(REPLY_TIMEOUT * 1000)),
            cwd=INTEROP_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLLAB_TRANSPORT": transport},
        )
        client = JsClient(doc, proc)
        clients.append(client)
        await client.wait_ready()
        return client

    yield start
    await asyncio.gather(*(c.cleanup() for c in clients), return_exceptions=True)


async def transport_of(client: JsClient) -> tuple[str, list[dict[str, Any]]]:
    reply = await client.request("transport")
    return str(reply["transport"]), list(reply["events"])


def event_names(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["event"]) for e in events]


async def wait_for_state(client: JsClient, client_id: int, field: str, value: Any) -> None:
    """Wait until ``client`` sees ``client_id``'s awareness ``field`` equal to ``value``."""

    async def seen() -> bool:
        return bool((await client.awareness_states()).get(client_id, {}).get(field) == value)

    await eventually(seen)


async def converge_and_see_each_other(http: JsClient, ws: JsClient) -> None:
    """Both edit at once, end with the same text, and see each other's presence."""
    await asyncio.gather(http.insert(0, "over HTTP. "), ws.insert(0, "over WS. "))

    async def same() -> bool:
        a, b = await ws.text(), await http.text()
        return a == b and "over HTTP. " in a and "over WS. " in a

    await eventually(same)
    await http.set_awareness_field("user", {"name": "behind the proxy"})
    await ws.set_awareness_field("user", {"name": "direct"})
    await wait_for_state(ws, http.client_id, "user", {"name": "behind the proxy"})
    await wait_for_state(http, ws.client_id, "user", {"name": "direct"})


async def test_behind_a_proxy_refusing_upgrades_the_stock_client_connects_over_sse_and_converges(
    server: InProcessServer, start_js: StartJs, make_js_client: JsClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        ws = await make_js_client("shared")
        http = await start_js(await proxy.endpoint("corp"), "shared")

        transport, events = await transport_of(http)
        assert transport == "sse"
        assert proxy.faults["refuse upgrade"] >= 2  # switched on, then the upgrade refused
        # (The provider's first "connecting" is emitted before a listener can be added.)
        assert event_names(events)[:2] == ["connected", "sync:true"], events
        connected_ms = next(e["ms"] for e in events if e["event"] == "connected")
        assert connected_ms < 6000, events
        assert (await transport_of(ws))[0] == "websocket"

        await converge_and_see_each_other(http, ws)
        # The connection stayed up throughout: one connect, no close.
        assert event_names((await transport_of(http))[1]).count("connected") == 1


async def test_behind_a_buffering_proxy_the_stock_client_picks_long_poll_within_10_s(
    server: InProcessServer, start_js: StartJs, make_js_client: JsClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        proxy.buffer_responses(["corp"])
        ws = await make_js_client("buffered")
        http = await start_js(await proxy.endpoint("corp"), "buffered")

        transport, events = await transport_of(http)
        assert transport == "poll"
        synced_ms = next(e["ms"] for e in events if e["event"] == "sync:true")
        assert synced_ms < 10_000, events
        assert event_names(events)[:2] == ["connected", "sync:true"], events
        await converge_and_see_each_other(http, ws)


async def test_a_stream_cut_by_the_network_resumes_without_the_provider_noticing(
    server: InProcessServer, start_js: StartJs, make_js_client: JsClientFactory
) -> None:
    async with NetemProxy(server.ws_url) as proxy:
        proxy.refuse_upgrade(["corp"])
        ws = await make_js_client("cut")
        http = await start_js(await proxy.endpoint("corp"), "cut")
        assert (await transport_of(http))[0] == "sse"
        await ws.insert(0, "before the cut. ")
        await http.wait_text("before the cut. ")

        assert proxy.drop(["corp"]) >= 1  # the stream's connection is reset
        await ws.insert(16, "during the cut. ")  # sent while the stream is down
        await http.wait_text("before the cut. during the cut. ")
        await http.insert(0, "after: ")
        await ws.wait_text("after: before the cut. during the cut. ")

        # The stream resumed from its last event: the provider never saw a close.
        names = event_names((await transport_of(http))[1])
        assert names.count("connected") == 1 and "disconnected" not in names, names


async def test_when_websockets_work_the_transport_is_a_plain_websocket(
    server: InProcessServer, start_js: StartJs
) -> None:
    client = await start_js(server.ws_url, "direct")
    assert (await transport_of(client))[0] == "websocket"
    await client.insert(0, "hello")
    assert await client.text() == "hello"


def test_the_package_tests_pass(require_node: None) -> None:
    """``node --test`` in clients/collab-transport: the ladder against a scripted server."""
    # Node 20 has a WebSocket behind this flag (22 has it anyway; 18 has neither,
    # and the package's WebSocket tests skip themselves).
    flag = subprocess.run(["node", "--experimental-websocket", "-e", "0"], capture_output=True)
    run = subprocess.run(
        [
            "node",
            *(["--experimental-websocket"] if flag.returncode == 0 else []),
            "--test",
            "test/",
        ],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
