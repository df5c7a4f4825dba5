"""Health, readiness, metrics and machine-readable logs."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pycrdt import Text

from collab.logs import JsonFormatter
from collab.testing.server import InProcessServer, ServerProcess
from tests.conftest import ClientFactory
from tests.helpers import eventually, text_of


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sample(metrics: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} ([0-9.e+-]+)$", metrics, re.M)
    assert match, f"{name}{labels} missing from /metrics"
    return float(match.group(1))


async def scrape(http: aiohttp.ClientSession, server: InProcessServer) -> str:
    async with http.get(f"{server.http_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return await resp.text()


async def test_metrics_move_with_traffic(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, server)
    assert sample(before, "collab_connections") == 0
    a = await make_client()
    b = await make_client()
    for word in ("one ", "two ", "three"):
        a.doc.get("text", type=Text).insert(len(text_of(a)), word)
        await b.wait_for(lambda w=word: text_of(b).endswith(w))  # type: ignore[misc]
    after = await scrape(http, server)
    assert sample(after, "collab_connections") == 2
    assert sample(after, "collab_documents_loaded") == 1
    assert sample(after, "collab_messages_received_total") > sample(
        before, "collab_messages_received_total"
    )
    assert sample(after, "collab_bytes_sent_total") > 0
    assert sample(after, "collab_update_apply_seconds_count") >= 3
    await b.close()
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    await ws.send_str("text frames are refused")
    await ws.receive(timeout=5)
    await ws.close()

    async def counted() -> bool:
        text = await scrape(http, server)
        return (
            'collab_connections_closed_total{code="1000"}' in text
            and 'collab_requests_refused_total{reason="text_frame"}' in text
            and 'collab_connections_closed_total{code="1003"}' in text
        )

    await eventually(counted)


async def test_healthz_and_readyz_report_the_store(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.http_url}/healthz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ok"
        assert body["store"] == {"url": "memory://", "healthy": True}
    async with http.get(f"{server.http_url}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"


def test_json_log_lines_carry_structured_fields() -> None:
    import logging

    record = logging.LogRecord("collab.ws", logging.WARNING, __file__, 1, "close %s", ("x",), None)
    record.doc, record.peer, record.code = "notes", "127.0.0.1:5", 1002
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "close x"
    assert (entry["doc"], entry["peer"], entry["code"], entry["level"]) == (
        "notes",
        "127.0.0.1:5",
        1002,
        "warning",
    )


async def test_serve_with_json_logs_writes_one_object_per_line() -> None:
    async with ServerProcess("--store", "memory://", "--log-format", "json") as server:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{server.ws_url}/logged")
            await ws.close()
        await eventually(lambda: any('"event": "close"' in line for line in server.log))
    lines = [json.loads(line) for line in server.log]  # every line is one JSON object
    assert any("serving" in str(line.get("message")) for line in lines)
    close = next(line for line in lines if line.get("event") == "close")
    assert close["doc"] == "logged" and close["code"] == 1000 and "peer" in close


async def test_close_codes_chosen_by_clients_add_no_label_values(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    for code in (4999, 3123, 4000, 1000):
        ws = await http.ws_connect(f"{server.ws_url}/doc")
        await ws.close(code=code)

    async def counted() -> bool:
        return 'collab_connections_closed_total{code="other"} 3.0' in await scrape(http, server)

    await eventually(counted)
    text = await scrape(http, server)
    assert 'collab_connections_closed_total{code="1000"} 1.0' in text
    for label in ("4999", "3123", "4000"):
        assert f'code="{label}"' not in text
