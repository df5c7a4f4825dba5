"""Deleting a document on one process deletes it on all of them (issue #18, finding 8's sibling)."""

from __future__ import annotations

from typing import Any

import aiohttp

from collab.closecodes import CloseCode
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, RedisServer
from tests.helpers import eventually


async def test_a_delete_closes_the_other_processes_editors_and_stays_deleted(
    make_client: ClientFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    settings: dict[str, Any] = {
        "store": postgres_url,
        "redis_url": redis_server.url,
        "unload_grace": 0.1,
    }
    async with InProcessServer(**settings) as one, InProcessServer(**settings) as two:
        writer = await make_client("doomed", url=one.ws_url, reconnect=False)
        elsewhere = await make_client("doomed", url=two.ws_url, reconnect=False)
        writer.text().insert(0, "soon gone")
        await eventually(lambda: str(elsewhere.text()) == "soon gone")
        await one.server.store.flush()
        async with aiohttp.ClientSession() as http:
            response = await http.delete(f"{one.http_url}/api/docs/doomed")
            assert response.status == 200
        # The editor on the other process is told, as the one on this process is.
        await eventually(lambda: elsewhere.close_code == CloseCode.NOT_FOUND)
        await eventually(lambda: writer.close_code == CloseCode.NOT_FOUND)
        # Once the other process has let its room go, nothing brought the document back.
        await eventually(lambda: "doomed" not in two.server.manager.rooms)
        await two.server.store.flush()
        assert await two.server.store.load("doomed") is None
        names = [d.name for d in await two.server.store.list()]
        assert "doomed" not in names
