"""The browser editor on a big document (issue #16): "Loading 45%", locked until synced.

The page and its socket go through the netem proxy at 1.5 MB/s, so a 6 MB
document sent in pieces takes seconds to arrive and the page can be watched
while it does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser
from pycrdt import Doc, Text

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.keys import MANAGER
from collab.origins import LOCAL
from collab.testing.netem import NetemProxy
from tests import test_browser as shared
from tests.conftest import ServerFactory
from tests.test_browser import WAIT_MS

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def proxies() -> AsyncIterator[list[NetemProxy]]:
    started: list[NetemProxy] = []
    yield started
    for proxy in started:
        await proxy.close()


async def test_the_editor_shows_loading_progress_and_stays_locked_until_synced(
    make_server: ServerFactory,
    browser: Browser,
    frontend_dist: Any,
    proxies: list[NetemProxy],
) -> None:
    server = await make_server(sync_chunk_bytes=64 * 1024)
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    line = "A big document, arriving in pieces: ünïcödé 👋\n"
    for _ in range(4):
        text += line * 30_000  # ~1.5 MB each
    room = await server.app[MANAGER].acquire("big")
    room.hold()
    room.apply_update(doc.get_update(), LOCAL)
    room.flush()

    proxy = NetemProxy(server.ws_url)
    await proxy.start()
    proxies.append(proxy)
    proxy.set_bandwidth(1.5e6)
    port = (await proxy.endpoint("tab")).split(":")[2].split("/")[0]

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{port}/d/big")

    label = "document.querySelector('#status .status-label').textContent"
    await page.wait_for_function(f"/^Loading [1-9][0-9]?%$/.test({label})", timeout=WAIT_MS)
    first = int((await page.evaluate(label)).split()[1].rstrip("%"))
    assert await page.evaluate("window.collab.provider.synced") is False
    # Locked: nothing typed lands in a document that is not all here.
    assert await page.evaluate("window.collab.view.contentDOM.contentEditable") == "false"
    await page.wait_for_function(
        f"(first) => {{ const m = /^Loading ([0-9]+)%$/.exec({label}); "
        "return m && Number(m[1]) > first }",
        arg=first,
        timeout=WAIT_MS,
    )
    await page.wait_for_function("window.collab.provider.synced", timeout=30_000)
    assert not (await page.evaluate(label)).startswith("Loading")
    assert await page.evaluate("window.collab.view.contentDOM.contentEditable") == "true"
    assert await page.evaluate("window.collab.text()") == str(text)
    assert not errors, errors
    await context.close()
