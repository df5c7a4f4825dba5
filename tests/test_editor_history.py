"""The editor's history panel in a real headless Chromium, against real collab servers.

A tab types, pauses, types more; its history panel lists the two editing
sessions, previews the earlier one (the text of then, with what was added
since marked) and restores it, and another tab sees the restored text
through the normal sync.  Named versions are saved, listed after a reload,
opened and deleted; a read-only token sees the history but is offered no
restore; the panel works under a URL prefix and says what to do when the
server cannot be reached or the point asked for was thinned away.  History
needs a store that keeps it (SQLite here; the memory store keeps none).
Screenshots go to ``test-artifacts/editor/history-*.png``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, Route
from playwright.async_api import TimeoutError as PlaywrightTimeout

import collab
import collab.app  # imported now, not on the first test's event loop
from collab.auth import issue_token
from collab.testing.server import InProcessServer, free_port
from tests import test_browser as shared
from tests.conftest import ServerFactory
from tests.test_browser import ARTIFACTS, WAIT_MS, Tab, open_tab

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked

pytestmark = pytest.mark.timeout(120)

SECRET = "editor-history-secret-of-32-bytes-or-more"
SHOTS = ARTIFACTS / "editor"

#: The preview's text as it was then: everything but the runs added since.
PREVIEW_TEXT = """() => [...document.querySelector('#history-preview .history-text').childNodes]
    .filter((n) => !(n.classList && n.classList.contains('diff-insert')))
    .map((n) => n.textContent).join('')"""


async def history_server(
    make_server: ServerFactory, tmp_path: Path, **settings: Any
) -> InProcessServer:
    return await make_server(store=f"sqlite:///{tmp_path}/history.db", **settings)


async def saved(tab: Tab) -> None:
    """Every change of this tab is on the server."""
    await tab.page.wait_for_function(
        "window.collab.conn.connected && !window.collab.conn.unsaved", timeout=WAIT_MS
    )


async def snap(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("document.fonts.ready")
    await page.screenshot(path=str(SHOTS / f"history-{name}.png"))


async def open_history(page: Page, *, sessions: int = 1, gap_ms: int | None = None) -> None:
    """Open the panel (from the keyboard) and wait for at least ``sessions`` sessions."""
    await page.locator("#history-button").focus()
    await page.keyboard.press("Enter")
    await page.locator("#history-panel").wait_for(state="visible")
    assert await page.get_attribute("#history-button", "aria-expanded") == "true"
    if gap_ms is not None:
        await page.select_option("#history-panel .history-gap", str(gap_ms))
    try:
        await page.wait_for_function(
            "n => document.querySelectorAll('#history-panel .history-sessions .history-point')"
            ".length >= n",
            arg=sessions,
            timeout=WAIT_MS,
        )
    except PlaywrightTimeout:
        said = await page.locator("#history-panel").inner_text()
        raise AssertionError(f"fewer than {sessions} sessions; the panel says:\n{said}") from None


async def preview(page: Page, point: str) -> str:
    """Click a point of the panel; the text the preview shows as it was then."""
    await page.locator(point).click()
    await page.locator("#history-preview[data-state='shown']").wait_for()
    assert await page.locator("#editor").is_hidden()  # the preview takes the editor's place
    return str(await page.evaluate(PREVIEW_TEXT))


async def server_text(url: str, doc: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/docs/{doc}/text?root=text", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.text()


# --- preview and restore -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_an_earlier_point_previews_as_typed_then_and_its_restore_reaches_every_tab(
    browser: Browser,
    frontend_dist: Path,
    make_server: ServerFactory,
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "postgresql":
        server = await make_server(store=request.getfixturevalue("postgres_url"))
    else:
        server = await history_server(make_server, tmp_path)
    ada = await open_tab(browser, server.http_url, "minutes", user=("Ada", "#e5484d"))
    grace = await open_tab(browser, server.http_url, "minutes", user=("Grace", "#0090ff"))

    await ada.type_at_end("First draft: we meet on Monday. ")
    await saved(ada)
    then = await ada.text()
    await server.server.store.flush()  # stored (and timed) before the pause starts
    # A pause longer than the panel's finest split makes the next typing another session.
    await asyncio.sleep(1.5)
    await ada.type_at_end("Second thoughts: Tuesday.")
    await saved(ada)
    await grace.wait_text("text.endsWith('Tuesday.')")
    now = await ada.text()
    await server.server.store.flush()

    page = ada.page
    await open_history(page, sessions=2, gap_ms=1000)
    sessions = page.locator("#history-panel .history-sessions .history-point")
    assert "latest" in await sessions.first.inner_text()
    await snap(page, "sessions-1280")

    # The oldest session: the document as it was when the first typing stopped.
    assert (
        await preview(page, "#history-panel .history-sessions li:last-child .history-point") == then
    )
    added = await page.locator("#history-preview .history-text .diff-insert").all_inner_texts()
    assert "".join(added) == now[len(then) :], added  # what was typed since is marked
    assert await page.locator("#history-preview .history-text .diff-delete").count() == 0
    assert "added" in await page.locator("#history-preview .history-summary").inner_text()
    await snap(page, "preview-1280")

    seq = int(await page.get_attribute("#history-preview", "data-seq") or 0)
    await page.locator("#history-preview .history-restore").click()
    dialog = page.get_by_role("dialog", name="Restore this version?")
    async with page.expect_request("**/api/docs/minutes/restore") as posted:
        await dialog.get_by_role("button", name="Restore").click()
    posted_request = await posted.value
    assert posted_request.headers.get("idempotency-key")  # a retry in the dialog is applied once
    assert json.loads(posted_request.post_data or "{}") == {"to": seq}
    await dialog.wait_for(state="detached")
    # The server applies it as a forward update: both editors get it through the sync.
    for tab in (ada, grace):
        await tab.wait_text("text === arg", then)
    assert await page.locator("#editor").is_visible()
    assert await server_text(server.http_url, "minutes") == then

    # Grace's editor still works on the restored text, and Ada sees her typing.
    await grace.type_at_end("Agreed.")
    await ada.wait_text("text === arg", then + "Agreed.")
    # The restore is in the history: the newest session is it.
    await page.locator("#history-panel .history-refresh").click()
    await page.wait_for_function(
        """() => /Restore/.test(document.querySelector('#history-panel .history-sessions'
            + ' .history-point .history-authors')?.textContent || '')""",
        timeout=WAIT_MS,
    )


async def test_unticking_a_person_in_the_restore_undoes_only_the_others_changes(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await history_server(make_server, tmp_path, auth_secret=SECRET)
    alice_token = issue_token(SECRET, "plan", "write", 600, sub="alice", name="Alice")
    bob_token = issue_token(SECRET, "plan", "write", 600, sub="bob", name="Bob")
    alice = await open_tab(browser, server.http_url, "plan", query=f"?token={alice_token}")
    bob = await open_tab(browser, server.http_url, "plan", query=f"?token={bob_token}")
    await alice.type_at_end("Alice one. ")
    await saved(alice)
    await server.server.store.flush()
    await asyncio.sleep(1.5)
    await bob.wait_text("text === arg", "Alice one. ")
    await bob.type_at_end("Bob's line. ")
    await saved(bob)
    await alice.wait_text("text.endsWith(arg)", "Bob's line. ")
    await alice.type_at_end("Alice two.")
    await saved(alice)
    await server.server.store.flush()

    page = alice.page
    await open_history(page, sessions=2, gap_ms=1000)
    oldest = "#history-panel .history-sessions li:last-child .history-point"
    assert await preview(page, oldest) == "Alice one. "
    await page.locator("#history-preview .history-restore").click()
    dialog = page.get_by_role("dialog", name="Restore this version?")
    await dialog.get_by_label("alice").uncheck()  # keep what Alice did since
    assert await dialog.get_by_label("bob").is_checked()
    await snap(page, "restore-by-1280")
    async with page.expect_request("**/api/docs/plan/restore") as posted:
        await dialog.get_by_role("button", name="Restore").click()
    assert json.loads((await posted.value).post_data or "{}")["by"] == ["bob"]
    await dialog.wait_for(state="detached")
    for tab in (alice, bob):
        await tab.wait_text("text === arg", "Alice one. Alice two.")


async def test_a_named_version_is_listed_after_a_reload_opens_as_it_was_and_can_be_deleted(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await history_server(make_server, tmp_path)
    tab = await open_tab(browser, server.http_url, "book")
    await tab.type_at_end("Chapter one.")
    await saved(tab)
    await server.server.store.flush()
    page = tab.page
    await open_history(page)

    await page.locator("#history-panel .history-save").click()
    dialog = page.get_by_role("dialog", name="Save a version")
    await dialog.locator("input").fill("Before review")
    await dialog.locator("input").press("Enter")
    await dialog.wait_for(state="detached")
    versions = page.locator("#history-panel .history-versions")
    await versions.get_by_text("Before review").wait_for()
    await tab.type_at_end(" Chapter two.")
    await saved(tab)

    # Another tab, later: the version is stored, not only shown.
    again = await open_tab(browser, server.http_url, "book")
    await open_history(again.page)
    listed = again.page.locator("#history-panel .history-versions .history-point")
    await listed.get_by_text("Before review").wait_for()
    assert (
        await preview(again.page, "#history-panel .history-versions .history-point")
        == "Chapter one."
    )
    assert await again.page.locator(
        "#history-preview .history-text .diff-insert"
    ).all_inner_texts() == [" Chapter two."]
    await snap(again.page, "version-1280")

    await again.page.get_by_role("button", name="Delete the version “Before review”").click()
    await (
        again.page.get_by_role("dialog", name="Delete this version?")
        .get_by_role("button", name="Delete")
        .click()
    )
    await listed.first.wait_for(state="detached")
    assert await again.page.locator("#history-preview").is_hidden()
    third = await open_tab(browser, server.http_url, "book")
    await open_history(third.page)  # the versions come with the first page of sessions
    assert await third.page.locator("#history-panel .history-versions .history-point").count() == 0


async def test_a_read_only_token_sees_the_history_but_is_offered_no_restore(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await history_server(make_server, tmp_path, auth_secret=SECRET)
    write = issue_token(SECRET, "memo", "write", 600)
    read = issue_token(SECRET, "memo", "read", 600)
    writer = await open_tab(browser, server.http_url, "memo", query=f"?token={write}")
    await writer.type_at_end("Written by the editor.")
    await saved(writer)
    await server.server.store.flush()

    for width in (1280, 390):
        reader = await open_tab(
            browser, server.http_url, "memo", query=f"?token={read}", viewport=(width, 760)
        )
        page = reader.page
        await open_history(page)
        assert await page.locator("#history-panel .history-save").is_hidden()
        assert "need edit access" in await page.locator("#history-panel .history-note").inner_text()
        assert await page.locator("#history-panel .history-delete").count() == 0
        text = await preview(page, "#history-panel .history-sessions .history-point")
        assert text == "Written by the editor."
        assert await page.locator("#history-preview .history-restore").is_hidden()
        note = page.locator("#history-preview .history-restore-note")
        assert await note.is_visible() and "needs edit access" in await note.inner_text()
        await snap(page, f"read-only-{width}")

    # Not only hidden: the server refuses a restore with that token.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.http_url}/api/docs/memo/restore",
            json={"to": 1},
            headers={"Authorization": f"Bearer {read}", "Idempotency-Key": "read-only-try"},
        ) as response,
    ):
        assert response.status == 403, await response.text()
    assert await server_text(server.http_url, "memo", read) == "Written by the editor."


async def test_the_panel_works_from_the_keyboard_and_loads_older_sessions_page_by_page(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await history_server(make_server, tmp_path)
    tab = await open_tab(browser, server.http_url, "pages")
    for i, word in enumerate(("alpha ", "beta ", "gamma")):
        if i:
            await asyncio.sleep(1.5)  # a new session each time
        await tab.type_at_end(word)
        await saved(tab)
        await server.server.store.flush()
    await server.server.store.flush()
    page = tab.page

    async def one_per_page(route: Route) -> None:
        """The real server, asked for one session a page: three pages to go through."""
        await route.continue_(url=route.request.url.replace("limit=50", "limit=1"))

    await page.route("**/api/docs/pages/history?*", one_per_page)
    await page.keyboard.press("Control+Alt+Shift+H")
    panel = page.locator("#history-panel")
    await panel.wait_for()
    assert await page.evaluate("document.activeElement.id") == "history-panel"
    await page.select_option("#history-panel .history-gap", "1000")
    points = panel.locator(".history-sessions .history-point")
    more = panel.get_by_role("button", name="Load older changes")
    for shown in (1, 2, 3):
        await page.wait_for_function(
            "n => document.querySelectorAll('#history-panel .history-sessions .history-point')"
            ".length === n",
            arg=shown,
            timeout=WAIT_MS,
        )
        if shown < 3:
            await more.click()
    await more.wait_for(state="hidden")  # the oldest page says there is no next

    # Up and Down move between points, Enter opens one, Escape closes the preview, then the panel.
    await panel.focus()
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    assert await page.evaluate("document.activeElement.dataset.key") == await points.nth(
        1
    ).get_attribute("data-key")
    await page.keyboard.press("Enter")
    await page.locator("#history-preview[data-state='shown']").wait_for()
    assert await page.evaluate(PREVIEW_TEXT) == "alpha beta "
    await page.keyboard.press("Escape")
    await page.locator("#history-preview").wait_for(state="hidden")
    assert await page.locator("#editor").is_visible()
    await page.keyboard.press("Escape")
    await panel.wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.id") == "history-button"
    assert await page.get_attribute("#history-button", "aria-expanded") == "false"


# --- errors ----------------------------------------------------------------------


async def test_without_the_server_the_panel_says_so_and_fills_in_when_it_is_back(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await history_server(make_server, tmp_path)
    tab = await open_tab(browser, server.http_url, "away")
    await tab.type_at_end("Kept on the server.")
    await saved(tab)
    await server.stop()
    await tab.wait_status("offline")

    page = tab.page
    await page.locator("#history-button").click()
    error = page.locator("#history-panel .history-error")
    await error.wait_for()
    assert "cannot be reached" in await error.inner_text()
    assert await error.get_by_role("button", name="Try again").is_visible()
    await snap(page, "offline-1280")

    await server.start()
    await tab.wait_status("connected")
    # The panel asks again by itself once the editor is connected.
    await page.locator("#history-panel .history-sessions .history-point").first.wait_for()
    assert await error.is_hidden()


async def test_a_point_thinned_away_after_its_preview_offers_the_nearest_point_kept(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    """Real thinning: a one-second window, a checkpoint at every compaction, and a
    named version that keeps the oldest checkpoint (versions are never thinned)."""
    server = await history_server(make_server, tmp_path, history_retention=1)
    store = server.server.store
    store.checkpoint_every = 0  # type: ignore[attr-defined]  # default: one per 10 minutes
    tab = await open_tab(browser, server.http_url, "kept")
    page = tab.page
    # Another tab writes: in this one the preview takes the editor's place.
    writer = await open_tab(browser, server.http_url, "kept")

    async def write(text: str, *, compact: bool = False) -> None:
        await asyncio.sleep(1.5)  # older than the window, and another session
        await writer.type_at_end(text)
        await saved(writer)
        await store.flush()
        if compact:
            await store.compact("kept")

    await writer.type_at_end("One. ")
    await saved(writer)
    await store.compact("kept")  # a snapshot at "One. ", a checkpoint at the next compaction
    await open_history(page)
    await page.locator("#history-panel .history-save").click()
    dialog = page.get_by_role("dialog", name="Save a version")
    await dialog.locator("input").fill("One")
    await dialog.locator("input").press("Enter")
    await dialog.wait_for(state="detached")
    await write("Two. ")
    await write("Six.")
    await page.select_option("#history-panel .history-gap", "1000")
    await page.locator("#history-panel .history-refresh").click()
    await page.wait_for_function(
        "document.querySelectorAll('#history-panel .history-sessions .history-point').length >= 3",
        timeout=WAIT_MS,
    )
    # The session that typed "Two. " (the second newest): previewed while it is kept...
    assert (
        await preview(page, "#history-panel .history-sessions li:nth-child(2) .history-point")
        == "One. Two. "
    )
    # ...then two compactions a window apart fold its rows into checkpoints and drop them.
    await write(" Seven.", compact=True)
    await write(" Eight.", compact=True)
    await page.locator("#history-preview .history-restore").click()
    dialog = page.get_by_role("dialog", name="Restore this version?")
    await dialog.get_by_role("button", name="Restore").click()
    await dialog.wait_for(state="detached")
    error = page.locator("#history-preview .history-error")
    said = await error.inner_text()
    assert "no longer kept" in said and "nearby point" in said, said
    assert "no longer kept" in await page.locator("#history-panel .history-error").inner_text()
    await tab.wait_text("text === arg", "One. Two. Six. Seven. Eight.")  # not restored
    await snap(page, "thinned-nearest-1280")
    # The server named the nearest point it kept: the named version's checkpoint.
    await error.get_by_role("button", name="Open the nearest point kept").click()
    await page.wait_for_function(
        "document.querySelector('#history-preview').dataset.state === 'shown' && document"
        ".querySelector('#history-preview .history-text').textContent.startsWith('One. ')",
        timeout=WAIT_MS,
    )
    assert await page.evaluate(PREVIEW_TEXT) == "One. "


# --- under a prefix ------------------------------------------------------------------


@pytest.fixture
async def mounted(tmp_path: Path, frontend_dist: Path) -> AsyncIterator[tuple[str, collab.Server]]:
    """collab mounted under /collab/ in a parent application: its URL and the server."""
    port = free_port()
    server = collab.Server(collab.Settings(store=f"sqlite:///{tmp_path}/m.db", port=port))
    parent = web.Application()
    parent.add_subapp("/collab/", server.app)
    runner = web.AppRunner(parent, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}/collab", server
    finally:
        await runner.cleanup()


async def test_under_a_url_prefix_the_panel_asks_the_prefixed_api(
    browser: Browser, mounted: tuple[str, collab.Server]
) -> None:
    url, server = mounted
    tab = await open_tab(browser, url, "prefixed")
    requests: list[str] = []
    tab.page.on("request", lambda request: requests.append(request.url))
    await tab.type_at_end("Under a prefix.")
    await saved(tab)
    await server.store.flush()
    await open_history(tab.page)
    assert (
        await preview(tab.page, "#history-panel .history-sessions .history-point")
        == "Under a prefix."
    )
    api = [u for u in requests if "/api/" in u]
    assert any("/history?" in u for u in api) and any("/at/" in u for u in api), api
    assert all(u.startswith(f"{url}/api/docs/prefixed/") for u in api), api
