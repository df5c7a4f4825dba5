"""The fault-injecting proxy: every fault it offers, on real sockets.

These tests use the ``collab`` pytest plugin's fixtures the way an app's test
suite would (``collab_server``, ``collab_client``, ``collab_proxy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Text

from collab.testing import ConvergenceError, assert_converged, converged
from collab.testing.netem import Direction, FaultUnavailable, NetemProxy, _FrameCutter
from collab.testing.plugin import ClientFactory, ProxyFactory
from collab.testing.server import free_port
from tests.helpers import eventually


def text(session: object) -> Text:
    return session.doc.get("text", type=Text)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A WebSocket server that sends every message straight back."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"ws://127.0.0.1:{port}/echo"
    await runner.cleanup()


@contextlib.asynccontextmanager
async def socket_to(url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        yield ws


async def round_trip(ws: aiohttp.ClientWebSocketResponse, payload: bytes) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ws.send_bytes(payload)
    msg = await ws.receive(timeout=10)
    assert msg.data == payload
    return loop.time() - started


async def test_clients_through_the_proxy_converge_as_if_it_were_not_there(
    collab_client: ClientFactory, collab_proxy: NetemProxy
) -> None:
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    bob = await collab_client("doc", proxy=collab_proxy, label="bob")
    text(alice).insert(0, "[a]")
    text(bob).insert(0, "[b]")
    final = await converged([alice, bob], timeout=5)
    assert final in ("[a][b]", "[b][a]")
    assert {c.label for c in collab_proxy.connections()} == {"alice", "bob"}


async def test_latency_delays_every_frame_each_way_and_clears(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    async with socket_to(await proxy.endpoint("a")) as ws:
        assert await round_trip(ws, b"warm up") < 0.25
        proxy.set_latency(0.25)
        assert 0.5 <= await round_trip(ws, b"slow") < 2.0
        proxy.set_latency(0)
        assert await round_trip(ws, b"fast again") < 0.25
    assert proxy.faults["latency"] == 1


async def test_latency_for_one_label_leaves_the_others_alone(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    proxy.set_latency(0.25, labels=["slow"])
    slow_url, fast_url = await proxy.endpoint("slow"), await proxy.endpoint("fast")
    async with socket_to(slow_url) as slow, socket_to(fast_url) as fast:
        assert await round_trip(fast, b"x") < 0.25
        assert await round_trip(slow, b"x") >= 0.5


async def test_jitter_never_reorders_frames_of_one_connection(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url, seed=3)
    proxy.set_latency(0.02, jitter=0.02)
    async with socket_to(await proxy.endpoint("a")) as ws:
        for i in range(40):
            await ws.send_bytes(i.to_bytes(2, "big"))
        got = [int.from_bytes((await ws.receive(timeout=10)).data, "big") for _ in range(40)]
    assert got == list(range(40))


async def test_bandwidth_cap_slows_a_large_message(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    async with socket_to(await proxy.endpoint("a")) as ws:
        big = os.urandom(20_000)
        assert await round_trip(ws, big) < 0.3
        proxy.set_bandwidth(50_000)  # 0.4 s per direction for 20 kB
        assert await round_trip(ws, big) >= 0.78
        proxy.set_bandwidth(None)
        assert await round_trip(ws, big) < 0.3


async def test_held_frames_arrive_late_and_in_order(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    async with socket_to(await proxy.endpoint("a")) as ws:
        async with proxy.holding("a", Direction.UP):
            for i in range(3):
                await ws.send_bytes(bytes([i]))
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.3)
        got = [(await ws.receive(timeout=5)).data for _ in range(3)]
    assert got == [b"\x00", b"\x01", b"\x02"]
    assert proxy.faults["hold"] == 1


async def test_a_partitioned_group_misses_edits_until_healed_then_everyone_converges(
    collab_client: ClientFactory, collab_proxy: NetemProxy
) -> None:
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    bob = await collab_client("doc", proxy=collab_proxy, label="bob")
    carol = await collab_client("doc", proxy=collab_proxy, label="carol")
    async with collab_proxy.partition(["carol"], name="carol-alone"):
        text(alice).insert(0, "[a]")
        text(carol).insert(0, "[c]")
        await converged([alice, bob], timeout=5)
        with pytest.raises(ConvergenceError):
            assert_converged([alice, carol])
    final = await converged([alice, bob, carol], timeout=10)
    assert sorted([final[:3], final[3:]]) == ["[a]", "[c]"]
    assert collab_proxy.log[-1].kind == "partition"
    assert "carol-alone" in collab_proxy.log[-1].detail


async def test_a_reset_partition_refuses_new_connections_until_healed(
    collab_client: ClientFactory, collab_proxy: NetemProxy
) -> None:
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    carol = await collab_client("doc", proxy=collab_proxy, label="carol")
    name = collab_proxy.cut(["carol"], mode="reset")
    await eventually(lambda: not carol.synced.is_set(), timeout=5)
    text(carol).insert(0, "offline edit")
    assert not collab_proxy.connections("carol")
    collab_proxy.heal(name)
    await carol.wait_synced(10)
    assert await converged([alice, carol], timeout=10) == "offline edit"


async def test_drop_resets_connections_and_the_client_reconnects(
    collab_client: ClientFactory, collab_proxy: NetemProxy
) -> None:
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    bob = await collab_client("doc", proxy=collab_proxy, label="bob")
    assert collab_proxy.drop("alice") == 1
    await eventually(lambda: alice.connects == 2 and alice.synced.is_set(), timeout=10)
    assert bob.connects == 1
    text(alice).insert(0, "after the drop")
    assert await converged([alice, bob], timeout=5) == "after the drop"


async def test_restart_runs_the_given_callable_and_clients_catch_up(
    collab_client: ClientFactory, collab_proxy: NetemProxy
) -> None:
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    bob = await collab_client("doc", proxy=collab_proxy, label="bob")
    text(alice).insert(0, "before ")
    await converged([alice, bob], timeout=5)
    await collab_proxy.restart_server()  # the in-process server: every socket gets 1001
    await eventually(lambda: alice.connects >= 2 and bob.connects >= 2, timeout=10)
    text(bob).insert(len(text(bob)), "after")
    assert await converged([alice, bob], timeout=10) == "before after"
    assert collab_proxy.faults["restart"] == 1


async def test_restart_without_a_way_to_restart_is_reported(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    assert not proxy.can_restart
    with pytest.raises(FaultUnavailable, match="restart"):
        await proxy.restart_server()


async def test_heal_all_clears_every_fault(
    collab_proxy_factory: ProxyFactory, echo_url: str
) -> None:
    proxy = await collab_proxy_factory(echo_url)
    proxy.set_latency(0.3, jitter=0.1)
    proxy.set_bandwidth(1000, labels="a")
    proxy.hold("a")
    proxy.cut(["b"])
    proxy.heal_all()
    async with socket_to(await proxy.endpoint("a")) as ws:
        assert await round_trip(ws, b"x" * 5000) < 0.3
    assert sorted(proxy.faults) == ["bandwidth", "hold", "latency", "partition"]


def test_a_wss_upstream_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="TLS"):
        NetemProxy("wss://example.com/ws")


def frame(payload: bytes, *, masked: bool) -> bytes:
    n = len(payload)
    head = bytes([0x82])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if masked else b"") + payload


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("masked", [True, False])
def test_frames_are_cut_whole_whatever_the_read_boundaries(size: int, masked: bool) -> None:
    header = b"GET /ws/doc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
    frames = [frame(os.urandom(size), masked=masked), frame(b"tail", masked=masked)]
    stream = header + b"".join(frames)
    for step in (1, 7, 4096, len(stream)):
        cutter = _FrameCutter()
        out: list[bytes] = []
        for i in range(0, len(stream), step):
            out.extend(cutter.feed(stream[i : i + step]))
        assert out == [header, *frames], step


def test_a_plain_http_request_and_its_body_pass_as_bytes() -> None:
    # The HTTP fallback's POSTs: their bodies are not WebSocket frames.
    cutter = _FrameCutter()
    head = b"POST /send/doc HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    assert cutter.feed(head + b"\x82\x7f\xff\xff") == [head, b"\x82\x7f\xff\xff"]
    assert cutter.feed(b"GET /sse/doc HTTP/1.1\r\n\r\n") == [b"GET /sse/doc HTTP/1.1\r\n\r\n"]


def test_response_ends_are_found_for_lengths_chunks_and_no_body() -> None:
    from collab.testing.netem import _Responses

    fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    stream = fixed + chunked + empty
    ends = [len(fixed), len(fixed) + len(chunked), len(stream)]
    for step in (1, 3, 10, len(stream)):
        responses = _Responses()
        found = []
        for i in range(0, len(stream), step):
            found += [i + end for end in responses.feed(stream[i : i + step])]
        assert found == ends, step


def test_a_refused_upgrade_is_passed_through_as_bytes() -> None:
    cutter = _FrameCutter()
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\n"
    assert cutter.feed(head + b"n") == [head, b"n"]
    assert cutter.feed(b"o!") == [b"o!"]
