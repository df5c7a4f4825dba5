"""The real JavaScript client (yjs + y-websocket) against the server, next to Python clients.

Each JS client is a ``node tests/interop/client.mjs`` subprocess driven with one
JSON command per line on stdin; it answers each with one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import pytest
from pycrdt import Text

from collab.auth import issue_token
from collab.keys import MANAGER
from collab.testing.server import InProcessServer, ServerProcess
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import eventually, random_marker_edits, text_of
from tests.jsclient import JsClient, JsClientFactory, utf16_len

pytestmark = pytest.mark.timeout(60)

MARKER = re.compile(r"\[[pj]\d+\.\d+\]")


async def test_js_client_and_python_client_see_each_others_edits(
    make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    py = await make_client("interop-edits")
    js = await make_js_client("interop-edits")
    text = py.doc.get("text", type=Text)

    text += "hello from python"
    await js.wait_text("hello from python")

    await js.insert(0, "JS: ")
    await py.wait_for(lambda: str(text) == "JS: hello from python")

    await js.delete(4, 6)  # "hello "
    await py.wait_for(lambda: str(text) == "JS: from python")

    del text[0:4]
    text.insert(len(text), "!")
    await js.wait_text("from python!")

    # Beyond ASCII: each side appends at its own notion of the end.
    current = "from python! naïve ☃ 👋"
    await js.insert(utf16_len("from python!"), " naïve ☃ 👋")
    await py.wait_for(lambda: str(text) == current)
    text += " 🎉 ünïcode"
    await js.wait_text(current + " 🎉 ünïcode")


async def test_js_late_joiner_receives_full_state(
    make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    writer = await make_client("interop-late")
    text = writer.doc.get("text", type=Text)
    for i in range(50):
        text.insert(len(text), f"line {i}\n")
    del text[0 : len("line 0\n")]
    text += "the end ✓\n"
    expected = str(text)
    # close() sends everything queued and completes the closing handshake, which
    # the server answers only after applying every frame before it.
    await writer.close()

    js = await make_js_client("interop-late")
    assert js.initial_text == expected  # all of it in the sync step 2, nothing later
    assert await js.text() == expected

    # And the document the JS client got is a live one a Python client shares.
    await js.insert(0, "js was here\n")
    reader = await make_client("interop-late")
    await reader.wait_for(lambda: text_of(reader) == "js was here\n" + expected)


async def _js_edits(
    js: JsClient, who: int, ops: int, rng: random.Random
) -> tuple[set[str], set[str]]:
    inserted: set[str] = set()
    deleted: set[str] = set()
    current = js.initial_text
    for k in range(ops):
        markers = MARKER.findall(current)
        if markers and rng.random() < 0.3:
            victim = rng.choice(markers)
            # By content, in the client itself: the text may have moved meanwhile.
            reply = await js.request("delete", find=victim)
            if reply["applied"]:
                deleted.add(victim)
        else:
            marker = f"[j{who}.{k}]"
            anchor = rng.choice([None, *markers])
            reply = {"applied": False}
            if anchor is not None:
                reply = await js.request("insert", after=anchor, text=marker)
            if not reply["applied"]:
                reply = await js.request("insert", index=0, text=marker)
            inserted.add(marker)
        current = str(reply["text"])
    return inserted, deleted


@pytest.mark.parametrize("seed", [7, 2024])
async def test_python_and_js_clients_converge_under_concurrent_edits(
    make_client: ClientFactory, make_js_client: JsClientFactory, seed: int
) -> None:
    name = f"interop-concurrent-{seed}"
    ops = 30
    pys = [await make_client(name) for _ in range(3)]
    jss = [await make_js_client(name) for _ in range(3)]

    results = await asyncio.gather(
        *(
            random_marker_edits(s, f"p{i}", ops, random.Random(seed * 100 + i), MARKER)
            for i, s in enumerate(pys)
        ),
        *(_js_edits(j, i, ops, random.Random(seed * 100 + 50 + i)) for i, j in enumerate(jss)),
    )

    async def texts() -> list[str]:
        return [text_of(s) for s in pys] + list(await asyncio.gather(*(j.text() for j in jss)))

    async def same() -> bool:
        return len(set(await texts())) == 1

    try:
        await eventually(same, timeout=30, interval=0.05)
    except AssertionError:
        listing = "\n".join(f"  {i}: {t!r}" for i, t in enumerate(await texts()))
        raise AssertionError(f"3 Python + 3 JS clients did not converge:\n{listing}") from None

    final = text_of(pys[0])
    inserted = set().union(*(r[0] for r in results))
    deleted = set().union(*(r[1] for r in results))
    survivors = MARKER.findall(final)
    assert len(survivors) == len(set(survivors)), "a marker appears twice"
    assert set(survivors) == inserted - deleted
    assert MARKER.sub("", final) == "", "text holds fragments of markers"


@pytest.mark.parametrize("how", ["killed", "clean-exit"])
async def test_js_awareness_reaches_python_and_is_removed_when_js_client_exits(
    make_client: ClientFactory, make_js_client: JsClientFactory, how: str
) -> None:
    py = await make_client("interop-presence")
    py.set_presence({"user": {"name": "python"}})
    js = await make_js_client("interop-presence")
    user = {"name": "js", "color": "#ff8800"}
    await js.set_awareness_field("user", user)

    def js_seen() -> bool:
        return py.awareness.states.get(js.client_id, {}).get("user") == user

    await py.wait_for(js_seen, timeout=10)

    # The other way round: the JS client sees the Python client's presence.
    async def python_seen() -> bool:
        states = await js.awareness_states()
        state = states.get(py.awareness.client_id) or {}
        return bool(state.get("user") == {"name": "python"})

    await eventually(python_seen, timeout=10, interval=0.05)

    if how == "killed":
        await js.kill()
    else:
        await js.exit()
    # Well before the 30 s awareness timeout: the server drops it when the socket closes.
    await py.wait_for(lambda: js.client_id not in py.awareness.states, timeout=10)
    assert py.awareness.states.get(py.awareness.client_id) == {"user": {"name": "python"}}


async def test_js_client_offline_edits_reach_server_after_reconnect(
    server: InProcessServer, make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    py = await make_client("interop-offline")
    js = await make_js_client("interop-offline")
    text = py.doc.get("text", type=Text)
    text += "base."
    await js.wait_text("base.")

    await server.stop()
    # Both edit while the server is down (and, once it is back, knows nothing:
    # the memory store starts empty).  Only what the clients re-send survives.
    await js.insert(0, "[js offline]")
    text += "[py offline]"
    await server.start()

    expected = "[js offline]base.[py offline]"
    await py.wait_for(lambda: str(text) == expected, timeout=20)
    await js.wait_text(expected, timeout=20)

    # A newcomer gets it all from the server alone.
    late = await make_js_client("interop-offline")
    assert late.initial_text == expected


async def test_js_edits_survive_a_sigkilled_sqlite_server(
    tmp_path: Path, make_js_client: JsClientFactory
) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    server = ServerProcess("--store", store)
    await server.start()
    try:
        writer = await make_js_client("persisted", url=server.ws_url)
        for i in range(20):
            await writer.insert(utf16_len(await writer.text()), f"js line {i}\n")
        expected = await writer.text()
        await asyncio.sleep(1.0)  # SIGKILL one second after the last edit
        await server.kill()
        # The writer must not re-send its copy: only the store may restore it.
        await writer.kill()
    finally:
        if server.running:
            await server.kill()
    async with ServerProcess("--store", store, port=server.port) as again:
        reader = await make_js_client("persisted", url=again.ws_url)
        assert reader.initial_text == expected


async def test_read_only_js_client_edits_never_reach_the_document_or_others(
    make_server: ServerFactory, make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    secret = "interop-secret-that-is-long-enough-for-hs256"
    server = await make_server(auth_secret=secret)
    writer = await make_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "write", 600)
    )
    writer.doc.get("text", type=Text).insert(0, "original")
    reader = await make_js_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "read", 600)
    )
    await reader.wait_text("original")
    await reader.insert(0, "vandal ")  # applied locally in the tab, refused by the server
    writer.doc.get("text", type=Text).insert(8, "!")
    await reader.wait_text("vandal original!")  # it still receives live changes
    other = await make_js_client(
        "guarded", url=server.ws_url, token=issue_token(secret, "guarded", "read", 600)
    )
    assert other.initial_text == "original!"
    assert text_of(writer) == "original!"
    assert str(server.app[MANAGER].rooms["guarded"].doc.get("text", type=Text)) == "original!"
