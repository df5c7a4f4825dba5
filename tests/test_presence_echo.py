"""Presence leaves with its socket even when other browsers echo it.

The stock y-websocket client re-sends every awareness change it receives, so
each browser tab echoes the other tabs' states back to the server.  An echo
must not make the echoing connection the owner of that state, or a closed tab
lingers in everyone's "who is here" list until the awareness timeout.
"""

from __future__ import annotations

import aiohttp
from pycrdt import Awareness, Doc

from collab import protocol
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory


def presence_frame(user: str) -> tuple[int, bytes]:
    awareness = Awareness(Doc())
    awareness.set_local_state({"user": {"name": user}})
    update = awareness.encode_awareness_update([awareness.client_id])
    return awareness.client_id, protocol.awareness(update)


async def test_presence_echoed_by_another_tab_still_leaves_with_its_own_socket(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    watcher = await make_client()
    tab_id, tab_frame = presence_frame("tab")
    echoer_id, echoer_frame = presence_frame("echoer")
    async with aiohttp.ClientSession() as http:
        tab = await http.ws_connect(f"{server.ws_url}/doc")
        echoer = await http.ws_connect(f"{server.ws_url}/doc")
        await tab.send_bytes(tab_frame)
        await watcher.wait_for(lambda: tab_id in watcher.awareness.states)

        await echoer.send_bytes(tab_frame)  # what y-websocket does with a state it receives
        await echoer.send_bytes(echoer_frame)  # same socket, so the echo was handled first
        await watcher.wait_for(lambda: echoer_id in watcher.awareness.states)

        await tab.close()
        await watcher.wait_for(lambda: tab_id not in watcher.awareness.states, timeout=5)
        assert echoer_id in watcher.awareness.states
        await echoer.close()
        await watcher.wait_for(lambda: echoer_id not in watcher.awareness.states, timeout=5)


async def test_echoed_presence_is_not_relayed_again(server: InProcessServer) -> None:
    tab_id, tab_frame = presence_frame("tab")
    marker_id, marker = presence_frame("marker")
    async with aiohttp.ClientSession() as http:
        listener = await http.ws_connect(f"{server.ws_url}/doc")
        tab = await http.ws_connect(f"{server.ws_url}/doc")
        echoer = await http.ws_connect(f"{server.ws_url}/doc")
        await tab.send_bytes(tab_frame)
        for _ in range(5):
            await echoer.send_bytes(tab_frame)  # copies of a state everyone already has
        await echoer.send_bytes(marker)  # news, after the echoes on the same socket
        relayed: list[int] = []
        while marker_id not in relayed:
            message = protocol.decode(await listener.receive_bytes(timeout=5))
            if isinstance(message, protocol.AwarenessUpdate):
                relayed += [e.client_id for e in protocol.decode_awareness(message.payload)]
        assert relayed == [tab_id, marker_id]  # the five echoes were not relayed
        for ws in (listener, tab, echoer):
            await ws.close()
