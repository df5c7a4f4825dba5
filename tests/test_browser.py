"""The browser editor in a real headless Chromium, against real collab servers.

Each test opens tabs (one Playwright browser context each, so each has its own
localStorage and identity) on pages served by the collab server itself, and
waits on conditions in the page, never on fixed sleeps.  Chromium comes from
Debian's ``chromium`` package (``scripts/services`` installs it in CI) and the
pages from ``frontend/dist`` (``scripts/build-frontend``, run here too so the
tests always see the current sources).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Text

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.auth import issue_token
from collab.static import DEFAULT_DIST, setup_frontend
from collab.testing.server import InProcessServer, ServerProcess, free_port
from tests.conftest import (
    IN_CI,
    SLOW_CALLBACK_SECONDS,
    ClientFactory,
    ServerFactory,
    _SlowCallbacks,
    node_available,
)
from tests.helpers import text_of

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - reported by the fixtures below
    async_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long any one condition in a page may take (the Playwright default is 30 s).
WAIT_MS = 15_000


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI: scripts/install and scripts/services set it up)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium and Playwright for Python; in CI their absence is a failure."""
    if async_playwright is None:
        _unavailable("Playwright for Python is missing: run scripts/install")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable("Chromium is missing: apt-get install chromium (or scripts/services)")
    return CHROMIUM


@pytest.fixture(scope="session")
def frontend_dist() -> Path:
    """``frontend/dist``, rebuilt first when its sources changed (Node.js needed)."""
    if node_available():
        build = subprocess.run(
            [str(ROOT / "scripts" / "build-frontend")], capture_output=True, text=True
        )
        if build.returncode != 0:
            pytest.fail(f"scripts/build-frontend failed:\n{build.stdout}\n{build.stderr}")
    if not (DEFAULT_DIST / "editor.html").is_file():
        _unavailable("frontend/dist is not built and Node.js is missing: run scripts/install")
    return DEFAULT_DIST


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """One browser tab on one document's editor page."""

    page: Page

    async def text(self) -> str:
        return str(await self.page.evaluate("window.collab.text()"))

    async def status(self) -> str:
        return str(await self.page.get_attribute("#status", "data-status"))

    async def type_at_end(self, text: str, delay: float = 0) -> None:
        """Put the caret at the end of the document and type like a person."""
        await self.page.evaluate(
            """() => { const v = window.collab.view; v.focus();
                       v.dispatch({ selection: { anchor: v.state.doc.length } }) }"""
        )
        await self.page.keyboard.type(text, delay=delay)

    async def select(self, needle: str, *, caret: bool = False) -> None:
        """Select the first ``needle`` in the document (or put the caret before it)."""
        await self.page.evaluate(
            """([needle, caret]) => {
                const v = window.collab.view, i = v.state.doc.toString().indexOf(needle)
                v.focus()
                v.dispatch({ selection: { anchor: i, head: caret ? i : i + needle.length } })
            }""",
            [needle, caret],
        )

    async def wait_text(self, predicate: str, arg: Any = None) -> None:
        """Wait until ``predicate(text, arg)`` (a JS expression) holds for the document."""
        await self.page.wait_for_function(
            f"([arg]) => {{ const text = window.collab.text(); return {predicate} }}",
            arg=[arg],
            timeout=WAIT_MS,
        )

    async def wait_status(self, status: str) -> None:
        await self.page.wait_for_function(
            "s => document.getElementById('status').dataset.status === s",
            arg=status,
            timeout=WAIT_MS,
        )

    async def people(self) -> list[str]:
        names = await self.page.locator("#people .person-name").all_text_contents()
        return [n.strip() for n in names]


def editor_url(base: str, doc: str, query: str = "") -> str:
    return f"{base}/d/{quote(doc, safe='')}{query}"


async def open_tab(
    browser: Browser,
    base: str,
    doc: str,
    *,
    user: tuple[str, str] | None = None,
    viewport: tuple[int, int] = (1280, 800),
    query: str = "",
) -> Tab:
    """A new tab (its own context: its own localStorage) synced on ``doc``."""
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(WAIT_MS)
    if user is not None:
        saved = json.dumps({"name": user[0], "color": user[1]})
        await context.add_init_script(  # the first visit only, as if chosen before
            f"localStorage.getItem('collab.user') || localStorage.setItem('collab.user', "
            f"{json.dumps(saved)})"
        )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(editor_url(base, doc, query))
    tab = Tab(page)
    await tab.wait_status("connected")
    await page.wait_for_function("window.collab.provider.synced", timeout=WAIT_MS)
    assert not errors, f"errors in the page: {errors}"
    return tab


#: Playwright's driver pipe: its big messages (screenshots, page state) are
#: decoded on the test's event loop, which the server shares.
_PLAYWRIGHT_PIPE = "_UnixReadPipeTransport._read_ready"


@pytest.fixture(autouse=True)
async def event_loop_is_never_blocked() -> AsyncIterator[None]:
    """conftest's check that nothing blocks the loop, less Playwright's own pipe reads.

    The server runs on the same loop as Playwright's client here; a slow
    decode of a screenshot under load is the test's own work, not the server's.
    """
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    handler = _SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    try:
        yield
    finally:
        asyncio_log.removeHandler(handler)
        loop.set_debug(False)
    blocked = [m for m in handler.messages if _PLAYWRIGHT_PIPE not in m]
    if blocked:
        pytest.fail("the event loop was blocked:\n" + "\n".join(blocked))


# --- editing together --------------------------------------------------------


async def test_typing_in_one_tab_appears_in_the_others_and_simultaneous_typing_converges(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    doc = "three tabs"
    a, b, c = [await open_tab(browser, server.http_url, doc) for _ in range(3)]

    await a.type_at_end("Hello from A. ")
    for tab in (b, c):
        await tab.wait_text("text === arg", "Hello from A. ")

    # Two people typing at the same moment, keystroke by keystroke.
    await asyncio.gather(
        b.type_at_end("bbbb from B ", delay=15), c.type_at_end("cccc from C ", delay=15)
    )
    for tab in (a, b, c):
        await tab.wait_text("text.includes('bbbb from B') && text.includes('cccc from C')")
    await a.page.wait_for_function(
        "t => window.collab.text() === t", arg=await b.text(), timeout=WAIT_MS
    )
    texts = {await tab.text() for tab in (a, b, c)}
    assert len(texts) == 1, texts
    assert texts.pop().startswith("Hello from A. ")


async def test_a_python_bot_edit_shows_in_the_tab_and_the_tab_edit_reaches_the_bot(
    browser: Browser, frontend_dist: Path, server: InProcessServer, make_client: ClientFactory
) -> None:
    doc = "bot and browser"
    tab = await open_tab(browser, server.http_url, doc)
    bot = await make_client(doc)
    bot.set_presence({"user": {"name": "Build Bot"}})
    bot.doc.get("text", type=Text).insert(0, "written by the bot\n")

    await tab.wait_text("text === arg", "written by the bot\n")
    await tab.page.locator("#people .person-name", has_text="Build Bot").wait_for()
    assert "Build Bot" in await tab.people()

    await tab.type_at_end("and by a person")
    await bot.wait_for(lambda: text_of(bot) == "written by the bot\nand by a person")


async def test_undo_reverts_only_your_own_changes(
    browser: Browser, frontend_dist: Path, server: InProcessServer, make_client: ClientFactory
) -> None:
    doc = "undo"
    tab = await open_tab(browser, server.http_url, doc)
    bot = await make_client(doc)
    await tab.type_at_end("mine")
    await bot.wait_for(lambda: text_of(bot) == "mine")
    bot.doc.get("text", type=Text).insert(0, "theirs ")
    await tab.wait_text("text === 'theirs mine'")

    await tab.page.keyboard.press("Control+z")
    await tab.wait_text("text === 'theirs '")
    await bot.wait_for(lambda: text_of(bot) == "theirs ")

    await tab.page.keyboard.press("Control+Shift+KeyZ")  # key "Z", as a real keyboard sends
    await tab.wait_text("text === 'theirs mine'")


# --- presence ------------------------------------------------------------------


async def test_tabs_see_each_other_in_the_list_and_as_named_cursors(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    doc = "presence"
    ada = await open_tab(browser, server.http_url, doc, user=("Ada Lovelace", "#e5484d"))
    grace = await open_tab(browser, server.http_url, doc, user=("Grace Hopper", "#0090ff"))

    await ada.page.locator("#people .person-name", has_text="Grace Hopper").wait_for()
    assert await ada.people() == ["Ada Lovelace", "Grace Hopper"]  # you first
    assert await ada.page.locator("#avatars .avatar[data-name='Grace Hopper']").count() == 1
    assert (
        await ada.page.locator("#people .person", has_text="Ada Lovelace")
        .locator(".tag")
        .inner_text()
        == "you"
    )

    # Grace's caret, with her name on it, in Ada's editor.
    await grace.type_at_end("Grace was here")
    caret = ada.page.locator(".cm-ySelectionCaret", has_text="Grace Hopper")
    await caret.wait_for()
    assert "#0090ff" in (await caret.get_attribute("style") or "")  # her colour

    # Grace's connection drops and comes back: she is back in Ada's list at once,
    # not at her next presence renewal (every 15 s).
    grace_id = await grace.page.evaluate("window.collab.ydoc.clientID")
    seen = "([id]) => window.collab.awareness.meta.get(id).clock"
    before = await ada.page.evaluate(seen, [grace_id])
    await grace.page.evaluate("window.dropped = window.collab.provider.ws; window.dropped.close()")
    await grace.page.wait_for_function(
        "window.collab.provider.ws !== window.dropped && window.collab.provider.wsconnected"
    )
    await ada.page.wait_for_function(
        "([id, before]) => window.collab.awareness.meta.get(id).clock > before"
        " && window.collab.awareness.getStates().has(id)",
        arg=[grace_id, before],
        timeout=5000,
    )
    await ada.page.locator("#people .person-name", has_text="Grace Hopper").wait_for()

    # Grace renames herself: Ada sees the new name; Grace's tab remembers it.
    await grace.page.click("#me-button")
    await grace.page.fill("#me-input", "Rear Admiral Hopper")
    await grace.page.click("#me-panel button[type=submit]")
    await ada.page.locator("#people .person-name", has_text="Rear Admiral Hopper").wait_for()
    await ada.page.locator(".cm-ySelectionCaret", has_text="Rear Admiral Hopper").wait_for()
    await grace.page.reload()
    await grace.wait_status("connected")
    assert await grace.page.inner_text("#me-name") == "Rear Admiral Hopper"
    # Her old tab's presence left with it: no ghost in Ada's list.
    await ada.page.wait_for_function(
        "() => document.querySelectorAll('#people .person').length === 2", timeout=WAIT_MS
    )
    assert await ada.people() == ["Ada Lovelace", "Rear Admiral Hopper"]


async def test_a_new_tab_gets_a_friendly_name_it_keeps(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(editor_url(server.http_url, "names"))
    await page.wait_for_function("document.getElementById('me-name').textContent.length > 0")
    name = await page.inner_text("#me-name")
    assert len(name.split()) == 2, name  # "Curious Otter"
    await page.reload()
    await page.wait_for_function(
        "n => document.getElementById('me-name').textContent === n", arg=name
    )


# --- connection ------------------------------------------------------------------


async def test_tabs_reconnect_after_a_server_restart_and_keep_what_was_typed_offline(
    browser: Browser, frontend_dist: Path, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/collab.db"
    server = ServerProcess("--store", store, "--unload-grace", "0.2")
    await server.start()
    try:
        doc = "restart"
        a = await open_tab(browser, server.http_url, doc)
        b = await open_tab(browser, server.http_url, doc)
        await a.type_at_end("before. ")
        await b.wait_text("text === 'before. '")

        assert await server.stop() == 0  # SIGTERM: sockets closed with 1001, store flushed
        for tab in (a, b):
            await tab.wait_status("offline")
        assert await a.page.inner_text("#status") == "Offline"

        # Both keep typing while the server is down.
        await a.type_at_end("A offline. ")
        await b.type_at_end("B offline. ")
        assert await a.text() == "before. A offline. "

        await server.start()  # the same port
        for tab in (a, b):
            await tab.wait_status("connected")
        for tab in (a, b):
            await tab.wait_text(
                "text.startsWith('before. ') && text.includes('A offline. ')"
                " && text.includes('B offline. ')"
            )
        assert await a.text() == await b.text()

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.http_url}/api/docs/{doc}") as response,
        ):
            stored = (await response.json())["content"]["text"]
        assert stored == await a.text()
    finally:
        if server.running:
            await server.kill()


async def test_a_token_in_the_page_url_opens_a_server_that_requires_one(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory
) -> None:
    secret = "browser-test-secret-of-32-bytes-or-more"
    server = await make_server(auth_secret=secret)
    write = issue_token(secret, "*", "write", 600, glob=True)
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(WAIT_MS)
    authorizations: list[str | None] = []
    sockets: list[str] = []
    page.on(
        "request",
        lambda r: (
            authorizations.append(r.headers.get("authorization")) if "/api/docs" in r.url else None
        ),
    )
    page.on("websocket", lambda ws: sockets.append(ws.url))

    await page.goto(f"{server.http_url}/?token={write}")
    await page.locator("#docs-empty").wait_for()  # the list loaded: the API took the token
    assert await page.locator("#docs-error").is_hidden()
    assert await page.get_attribute("a.brand", "href") == f"/?token={write}"
    await page.fill("#open-name", "a/b c")
    await page.press("#open-name", "Enter")
    tab = Tab(page)
    await tab.wait_status("connected")
    assert page.url == f"{server.http_url}/d/a%2Fb%20c?token={write}"
    assert f"Bearer {write}" in authorizations
    assert sockets == [f"ws://127.0.0.1:{server.port}/ws/a%2Fb%20c?token={write}"]
    await tab.type_at_end("signed")
    assert await page.locator("#read-only").is_hidden()

    # A read-only token: the editor shows the text and takes no typing.
    read = issue_token(secret, "a/b c", "read", 600)
    reader = await open_tab(browser, server.http_url, "a/b c", query=f"?token={read}")
    await reader.wait_text("text === 'signed'")
    assert await reader.page.locator("#read-only").is_visible()
    await reader.page.click(".cm-content")
    await reader.page.keyboard.type("nope")
    await tab.type_at_end(" twice")
    await reader.wait_text("text === 'signed twice'")

    # No token: the list asks for one, and so does the editor (it does not retry).
    anonymous = await (await browser.new_context()).new_page()
    await anonymous.goto(f"{server.http_url}/")
    await anonymous.locator("#token-form").wait_for()
    await anonymous.fill("#token-input", f"{server.http_url}/?token={write}")
    await anonymous.press("#token-input", "Enter")
    await anonymous.locator("#docs-body tr[data-doc='a/b c']").wait_for()
    assert anonymous.url == f"{server.http_url}/?token={write}"
    await anonymous.goto(editor_url(server.http_url, "a/b c"))
    await Tab(anonymous).wait_status("signin")


# --- the document list -------------------------------------------------------------


async def test_the_document_list_shows_documents_and_opens_one_by_name(
    browser: Browser, frontend_dist: Path, server: InProcessServer, make_client: ClientFactory
) -> None:
    for name, content in [("notes", "shopping list"), ("team/plan ü", "ship it")]:
        client = await make_client(name)
        client.doc.get("text", type=Text).insert(0, content)
        await client.drain()

    page = await (await browser.new_context()).new_page()
    await page.goto(server.http_url + "/")
    row = page.locator("#docs-body tr[data-doc='team/plan ü']")
    await row.wait_for()
    assert await page.locator("#docs-body tr[data-doc='notes']").count() == 1
    assert await row.locator("a").get_attribute("href") == "/d/team%2Fplan%20%C3%BC"
    assert "here" in await row.inner_text()  # its bot is still connected

    await row.locator("a").click()
    await page.wait_for_url(editor_url(server.http_url, "team/plan ü"))
    await page.wait_for_function("window.collab && window.collab.text() === 'ship it'")
    assert await page.inner_text("#doc-title") == "team/plan ü"

    # A new name opens (and creates) a document.
    await page.goto(server.http_url + "/")
    await page.fill("#open-name", "fresh ideas/2026")
    await page.press("#open-name", "Enter")
    await page.wait_for_url(editor_url(server.http_url, "fresh ideas/2026"))
    tab = Tab(page)
    await tab.wait_status("connected")
    await tab.type_at_end("first line")
    watcher = await make_client("fresh ideas/2026")
    await watcher.wait_for(lambda: text_of(watcher) == "first line")

    await page.goto(server.http_url + "/")
    await page.locator("#docs-body tr[data-doc='fresh ideas/2026']").wait_for()


async def test_without_a_build_the_home_page_explains_how_to_build(
    browser: Browser, tmp_path: Path
) -> None:
    app = web.Application()
    setup_frontend(app, dist=tmp_path / "missing")
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        page = await (await browser.new_context()).new_page()
        for path in ("/", "/d/notes"):
            response = await page.goto(f"http://127.0.0.1:{port}{path}")
            assert response is not None and response.status == 200
            body = await page.inner_text("body")
            assert "npm ci && npm run build" in body, body
            assert "scripts/serve" in body
    finally:
        await runner.cleanup()


# --- how it looks --------------------------------------------------------------------

SAMPLE = """# Launch plan

We ship the **collaborative editor** on Friday. Everyone writes in the same document \
and sees the others' cursors as they type.

## Checklist

- [x] Presence: names, colours and cursors
- [x] Works offline, merges on reconnect
- [ ] Invite the design team

> Undo only takes back your own changes.
"""


async def test_screenshot_of_the_editor_with_two_people(
    browser: Browser,
    frontend_dist: Path,
    server: InProcessServer,
    make_client: ClientFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = "Launch plan"
    for name, content in [
        ("team/meeting notes", "Monday: planning\n" * 40),
        ("Reading list", "- Designing Data-Intensive Applications\n"),
        (doc, SAMPLE),
    ]:
        bot = await make_client(name)
        bot.doc.get("text", type=Text).insert(0, content)
        await bot.drain()
        await bot.close()
    size = (1440, 900)
    ada = await open_tab(
        browser, server.http_url, doc, user=("Ada Lovelace", "#8e4ec6"), viewport=size
    )
    grace = await open_tab(
        browser, server.http_url, doc, user=("Grace Hopper", "#f76b15"), viewport=size
    )
    # Grace selects "same document"; Ada's caret sits after "Friday.".
    await grace.select("same document")
    await ada.select(" Everyone", caret=True)
    await ada.page.locator(".cm-ySelectionCaret", has_text="Grace Hopper").wait_for()
    await ada.page.locator(".cm-ySelection").first.wait_for()
    await ada.page.evaluate("document.fonts.ready")

    ARTIFACTS.mkdir(exist_ok=True)
    editor_png = ARTIFACTS / "editor.png"
    await ada.page.screenshot(path=str(editor_png))
    list_page = await (
        await browser.new_context(viewport={"width": 1280, "height": 720})
    ).new_page()
    await list_page.goto(server.http_url + "/")
    await list_page.locator("#docs-body tr[data-doc='Launch plan']").wait_for()
    await list_page.evaluate("document.fonts.ready")
    list_png = ARTIFACTS / "documents.png"
    await list_page.screenshot(path=str(list_png))

    with capsys.disabled():
        print(f"\n  screenshots: {editor_png} {list_png}")
    assert editor_png.stat().st_size > 20_000
    with contextlib.suppress(Exception):
        await grace.page.close()


# --- habits from other editors ------------------------------------------------------


async def test_markdown_shortcuts_wrap_and_unwrap_the_selection(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    tab = await open_tab(browser, server.http_url, "shortcuts")
    await tab.type_at_end("make this bold")
    await tab.select("bold")
    await tab.page.keyboard.press("Control+b")
    await tab.wait_text("text === 'make this **bold**'")
    await tab.page.keyboard.press("Control+b")
    await tab.wait_text("text === 'make this bold'")
    await tab.page.evaluate("window.collab.undoManager.stopCapturing()")  # a new undo step
    await tab.select("this")
    await tab.page.keyboard.press("Control+i")
    await tab.wait_text("text === 'make *this* bold'")
    await tab.page.keyboard.press("Control+z")  # one undo step takes the markers back
    await tab.wait_text("text === 'make this bold'")


async def test_clicking_a_person_scrolls_to_their_cursor(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    doc = "far away"
    ada = await open_tab(browser, server.http_url, doc, user=("Ada", "#8e4ec6"))
    grace = await open_tab(browser, server.http_url, doc, user=("Grace", "#0090ff"))
    await ada.page.evaluate(
        "() => window.collab.view.dispatch({ changes: { from: 0,"
        " insert: Array.from({ length: 400 }, (_, i) => `line ${i}`).join('\\n') } })"
    )
    await grace.wait_text("text.includes('line 399')")
    await grace.select("line 390", caret=True)
    await ada.page.evaluate("window.scrollTo(0, 0)")
    person = ada.page.locator("#people .person", has_text="Grace")
    await ada.page.wait_for_function(
        "() => document.querySelector('#people .person.can-jump') !== null", timeout=WAIT_MS
    )
    await person.click()
    caret = ada.page.locator(".cm-ySelectionCaret", has_text="Grace")
    await ada.page.wait_for_function(
        "() => { const r = document.querySelector('.cm-ySelectionCaret').getBoundingClientRect();"
        "        return r.top > 0 && r.bottom < innerHeight }",
        timeout=WAIT_MS,
    )
    assert await caret.count() == 1
