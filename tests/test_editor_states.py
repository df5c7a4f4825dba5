"""Every state of the browser editor's connection, in a real headless Chromium.

Each refusal the server can make (no token, a token for other documents, an
expired one, a paste above ``--max-message-size``, a deleted document, a
read-only connection that holds unsaved changes, "slow down") must show its
own state, stop retrying where a retry cannot help, and never let a person
type into a page that will not keep the text.  The tests run at a laptop
width and a phone width and keep a screenshot of each state in
``test-artifacts/editor/`` (look at them: they are the review of the layout).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, WebSocket

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.auth import issue_token
from collab.testing.server import InProcessServer
from tests import test_browser as shared
from tests.conftest import ServerFactory
from tests.test_browser import ARTIFACTS, WAIT_MS, Tab, editor_url

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked

pytestmark = pytest.mark.timeout(90)

SECRET = "editor-states-secret-of-32-bytes-or-more"
SHOTS = ARTIFACTS / "editor"


@pytest.fixture(params=[1280, 390], ids=["1280px", "390px"])
def width(request: pytest.FixtureRequest) -> int:
    """A laptop and a phone."""
    return int(request.param)


class Opened:
    """A page on one URL with the WebSockets it opened and the errors it threw."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.tab = Tab(page)
        self.sockets: list[WebSocket] = []
        self.errors: list[str] = []
        page.on("websocket", lambda ws: self.sockets.append(ws))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def goto(self, url: str) -> Opened:
        await self.page.goto(url)
        return self

    async def banner(self) -> str:
        return await self.page.locator("#banner").inner_text()

    async def snap(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.page.evaluate("document.fonts.ready")
        await self.page.screenshot(path=str(path))
        return path

    async def assert_locked(self) -> None:
        """Typing changes nothing: the page does not pretend to keep it."""
        before = await self.tab.text()
        assert await self.page.evaluate("window.collab.view.contentDOM.contentEditable") == "false"
        await self.page.locator(".cm-content").click(force=True)
        await self.page.keyboard.type("typed into a refused page")
        assert await self.tab.text() == before

    async def wait_saved(self) -> None:
        await self.page.wait_for_function(
            "window.collab.conn.connected && !window.collab.conn.unsaved", timeout=WAIT_MS
        )


@pytest.fixture
async def open_page(browser: Browser, width: int) -> AsyncIterator[Any]:
    async def opener(url: str, context: Any = None) -> Opened:
        if context is None:
            context = await browser.new_context(viewport={"width": width, "height": 720})
            context.set_default_timeout(WAIT_MS)
        return await Opened(await context.new_page()).goto(url)

    yield opener


async def server_text(server: InProcessServer, doc: str, token: str | None = None) -> str | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.http_url}/api/docs/{doc}", headers=headers) as response,
    ):
        if response.status == 404:
            return None
        content = (await response.json())["content"]
        return str(content.get("text", ""))


# --- the token ---------------------------------------------------------------------


async def test_without_a_token_the_editor_asks_for_one_and_opens_no_socket(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(auth_secret=SECRET)
    page = await open_page(editor_url(server.http_url, "plans"))
    await page.tab.wait_status("signin")
    assert "needs an access token" in await page.banner()
    assert page.sockets == []  # the API said why: no doomed socket, no retry loop
    await page.assert_locked()
    await page.snap(f"token-needed-{width}")

    write = issue_token(SECRET, "plans", "write", 600)
    await page.page.fill("#banner .token-input", f"{server.http_url}/d/plans?token={write}")
    await page.page.press("#banner .token-input", "Enter")
    await page.tab.wait_status("connected")
    assert page.page.url == f"{server.http_url}/d/plans?token={write}"
    await page.tab.type_at_end("let in")
    await page.wait_saved()
    assert await server_text(server, "plans", write) == "let in"
    assert not page.errors


async def test_a_token_for_other_documents_says_so_instead_of_offline(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(auth_secret=SECRET)
    other = issue_token(SECRET, "team-*", "write", 600, glob=True)
    page = await open_page(editor_url(server.http_url, "private", f"?token={other}"))
    await page.tab.wait_status("forbidden")
    banner = await page.banner()
    assert "do not have access" in banner and "team-*" in banner
    assert page.sockets == []
    await page.assert_locked()
    await page.snap(f"no-access-{width}")


async def test_an_expired_token_asks_for_a_new_one(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(auth_secret=SECRET)
    expired = issue_token(SECRET, "plans", "write", 60, now=time.time() - 3600)
    page = await open_page(editor_url(server.http_url, "plans", f"?token={expired}"))
    await page.tab.wait_status("expired")
    assert "expired" in await page.banner()
    assert await page.page.locator("#banner .token-input").is_visible()
    assert page.sockets == []
    await page.snap(f"expired-{width}")


async def test_a_token_that_expires_while_open_locks_the_page_until_a_new_one_is_given(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(auth_secret=SECRET, awareness_timeout=5)  # a 0.5 s tick
    short = issue_token(SECRET, "plans", "write", 8)
    page = await open_page(editor_url(server.http_url, "plans", f"?token={short}"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("before expiry. ")
    await page.wait_saved()
    await page.tab.wait_status("expired")  # closed with 4401 by the server
    assert "expired" in await page.banner()
    await page.assert_locked()
    await page.snap(f"expired-while-open-{width}")
    sockets = len(page.sockets)

    fresh = issue_token(SECRET, "plans", "write", 600)
    await page.page.fill("#banner .token-input", fresh)
    await page.page.press("#banner .token-input", "Enter")
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("after.")
    await page.wait_saved()
    assert len(page.sockets) == sockets + 1
    assert await server_text(server, "plans", fresh) == "before expiry. after."


# --- refused changes ------------------------------------------------------------------


PASTE = "() => { const v = window.collab.view; v.dispatch({ changes: { from: v.state.doc.length, insert: 'x'.repeat(200000) }, userEvent: 'input.paste' }) }"  # noqa: E501


async def test_a_paste_above_the_message_limit_is_refused_once_and_can_be_removed(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(max_message_size=64 * 1024)
    page = await open_page(editor_url(server.http_url, "big paste"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("before the paste. ")
    await page.wait_saved()

    await page.page.evaluate(PASTE)
    await page.tab.wait_status("too-big")
    # 1009, or (when the server reset the connection under the message) the
    # same message dropping the socket twice.
    banner = await page.banner()
    assert "too large to save" in banner or "did not get through" in banner, banner
    # Refused once (1009), or twice when the server reset the connection under
    # the message and the page saw 1006: never the old reconnect loop.
    refused = len(page.sockets)
    assert refused <= 2
    await page.assert_locked()
    await page.snap(f"paste-too-large-{width}")
    assert await server_text(server, "big paste") == "before the paste. "

    await page.page.get_by_role("button", name="Remove it and reconnect").click()
    await page.wait_saved()
    assert await page.tab.text() == "before the paste. "
    assert len(page.sockets) == refused + 1
    assert await page.page.get_attribute("#status", "data-status") == "connected"

    # The page learned the limit: the same paste is now stopped before it is made.
    await page.page.evaluate(PASTE)
    await page.page.locator(".toast.error", has_text="too large").wait_for()
    assert await page.tab.text() == "before the paste. "
    assert len(page.sockets) == refused + 1
    assert not page.errors


async def test_a_change_that_would_overfill_the_document_is_refused_and_can_be_removed(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(max_doc_size=20_000)
    page = await open_page(editor_url(server.http_url, "full"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("a small start. ")
    await page.wait_saved()
    await page.page.evaluate(
        "() => { const v = window.collab.view; v.dispatch({ changes: { from: v.state.doc.length,"
        " insert: 'y'.repeat(30000) }, userEvent: 'input.paste' }) }"
    )
    await page.tab.wait_status("doc-full")  # close 4413, once
    assert "document is full" in await page.banner()
    assert len(page.sockets) == 1
    await page.assert_locked()
    await page.snap(f"document-full-{width}")

    await page.page.get_by_role("button", name="Remove it and reconnect").click()
    await page.wait_saved()
    assert await page.tab.text() == "a small start. "
    await page.tab.type_at_end("and a little more")
    await page.wait_saved()
    assert await server_text(server, "full") == "a small start. and a little more"


async def test_a_document_deleted_while_open_stops_editing_and_reopens_as_new(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server()
    page = await open_page(editor_url(server.http_url, "doomed"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("soon gone")
    await page.wait_saved()

    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{server.http_url}/api/docs/doomed") as response,
    ):
        assert response.status == 200
    await page.tab.wait_status("removed")
    assert "was deleted" in await page.banner()
    assert await page.page.text_content("#status .status-label") == "Deleted"
    await page.assert_locked()
    await page.snap(f"deleted-{width}")

    # Reopening says the document is new, and this browser's copy did not
    # bring the old text back.
    await page.page.reload()
    await page.tab.wait_status("connected")
    assert "New document" in await page.banner()
    assert await page.tab.text() == ""
    assert await server_text(server, "doomed") in (None, "")


async def test_a_copy_of_a_document_deleted_elsewhere_is_not_silently_put_back(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, width: int
) -> None:
    server = await make_server()
    context = await browser.new_context(viewport={"width": width, "height": 720})
    context.set_default_timeout(WAIT_MS)
    first = await Opened(await context.new_page()).goto(editor_url(server.http_url, "agenda"))
    await first.tab.wait_status("connected")
    await first.tab.type_at_end("1. budget")
    await first.wait_saved()
    await first.page.close()
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{server.http_url}/api/docs/agenda") as response,
    ):
        assert response.status == 200

    # This browser still holds the text: it asks before putting it back.
    page = await Opened(await context.new_page()).goto(editor_url(server.http_url, "agenda"))
    await page.tab.wait_status("gone")
    assert "not on the server" in await page.banner()
    assert await page.tab.text() == "1. budget"
    assert page.sockets == []
    await page.assert_locked()
    await page.snap(f"gone-{width}")
    await page.page.get_by_role("button", name="Restore it on the server").click()
    await page.wait_saved()
    assert await server_text(server, "agenda") == "1. budget"


async def test_a_read_only_tab_holding_changes_the_server_refused_says_they_are_not_saved(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path, width: int
) -> None:
    server = await make_server(auth_secret=SECRET, store=f"sqlite:///{tmp_path}/c.db")
    write = issue_token(SECRET, "memo", "write", 600)
    read = issue_token(SECRET, "memo", "read", 600)
    context = await browser.new_context(viewport={"width": width, "height": 720})
    context.set_default_timeout(WAIT_MS)
    writer = await Opened(await context.new_page()).goto(
        editor_url(server.http_url, "memo", f"?token={write}")
    )
    await writer.tab.wait_status("connected")
    await writer.tab.type_at_end("shared. ")
    await writer.wait_saved()
    await server.stop()
    await writer.tab.wait_status("offline")
    await writer.tab.type_at_end("draft. ")  # kept in this browser only
    await writer.page.wait_for_function(
        "async () => (await window.collab.storedText()) === 'shared. draft. '", polling=100
    )
    await writer.page.close()
    await server.start()

    reader = await Opened(await context.new_page()).goto(
        editor_url(server.http_url, "memo", f"?token={read}")
    )
    await reader.tab.wait_status("denied")
    assert "not saved" in await reader.banner()
    assert await reader.tab.text() == "shared. draft. "
    assert await reader.page.locator("#read-only").is_visible()
    await reader.assert_locked()
    await reader.snap(f"read-only-unsaved-{width}")
    assert await server_text(server, "memo", read) == "shared. "

    await reader.page.get_by_role("button", name="Discard them").click()
    await reader.page.wait_for_function(
        "window.collab && window.collab.text() === 'shared. '"
        " && document.getElementById('status').dataset.status === 'connected'",
        timeout=WAIT_MS,
    )
    assert await reader.page.locator("#banner").is_hidden()


async def test_sending_too_fast_pauses_then_resumes_without_losing_typing(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, width: int
) -> None:
    server = await make_server(rate_messages=4)
    page = await open_page(editor_url(server.http_url, "fast"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("typing fast enough to be told to slow down", delay=5)
    await page.tab.wait_status("busy")
    assert "paused" in (await page.banner()).lower()
    assert await page.page.evaluate("window.collab.conn.editable")
    await page.snap(f"rate-limited-{width}")
    await page.tab.type_at_end(" and more")  # kept while paused
    await page.page.wait_for_function(
        "window.collab.conn.connected && !window.collab.conn.unsaved", timeout=30_000
    )
    text = "typing fast enough to be told to slow down and more"
    assert await page.tab.text() == text
    assert await server_text(server, "fast") == text


# --- offline -----------------------------------------------------------------------------


async def test_typing_while_the_server_is_down_survives_a_reload_and_reaches_it_later(
    frontend_dist: Path, make_server: ServerFactory, open_page: Any, tmp_path: Path, width: int
) -> None:
    server = await make_server(store=f"sqlite:///{tmp_path}/c.db")
    page = await open_page(editor_url(server.http_url, "kept"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("before. ")
    await page.wait_saved()
    assert await page.page.inner_text("#sync-note") == "All changes saved"

    await server.stop()
    await page.tab.wait_status("offline")
    await page.tab.type_at_end("while down. ")
    assert "kept in this browser" in await page.page.inner_text("#sync-note")
    await page.snap(f"offline-{width}")

    # Leaving with changes the server has not confirmed asks first.
    dialogs: list[str] = []
    stay = True  # the first time, stay on the page

    async def answer(dialog: Any) -> None:
        dialogs.append(dialog.type)
        await (dialog.dismiss() if stay else dialog.accept())

    page.page.on("dialog", answer)
    await page.page.close(run_before_unload=True)
    await page.page.wait_for_function("window.collab.conn.unsaved")  # the page stayed
    assert dialogs == ["beforeunload"]

    # Closing the tab anyway; the page cannot even load while its server is down.
    await page.page.wait_for_function(
        "async () => (await window.collab.storedText()) === 'before. while down. '", polling=100
    )
    stay = False
    context = page.page.context
    await page.page.close(run_before_unload=True)

    await server.start()
    again = await open_page(editor_url(server.http_url, "kept"), context)
    await again.tab.wait_text("text === 'before. while down. '")
    await again.wait_saved()
    assert await server_text(server, "kept") == "before. while down. "
