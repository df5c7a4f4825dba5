"""How the browser editor looks and where things are, in a real headless Chromium.

Remote name tags, a long document under the sticky bars, the find panel,
the dark theme and every function on a phone-sized screen.  Screenshots go
to ``test-artifacts/editor/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.testing.server import InProcessServer
from tests import test_browser as shared
from tests import test_editor_states as states
from tests.test_browser import WAIT_MS, editor_url, open_tab
from tests.test_editor_states import Opened

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked
width = states.width
open_page = states.open_page

pytestmark = pytest.mark.timeout(90)

LINES = "\n".join(f"Line {i}: a sentence long enough to wrap on a phone screen." for i in range(3))


async def test_remote_name_tags_show_after_a_move_and_on_hover_beside_the_caret(
    browser: Browser, frontend_dist: Path, server: InProcessServer, width: int
) -> None:
    doc = "tags"
    ada = await open_tab(
        browser, server.http_url, doc, user=("Ada", "#8e4ec6"), viewport=(width, 720)
    )
    grace = await open_tab(
        browser, server.http_url, doc, user=("Grace Hopper", "#f76b15"), viewport=(width, 720)
    )
    await ada.type_at_end(LINES)
    await grace.wait_text("text === arg", LINES)
    await grace.select(": a sentence", caret=True)  # on line 0
    await grace.page.evaluate(  # then to the start of line 1
        "() => { const v = window.collab.view;"
        "        v.dispatch({ selection: { anchor: v.state.doc.line(2).from + 6 } }) }"
    )

    caret = ada.page.locator(".cm-ySelectionCaret", has_text="Grace Hopper")
    await caret.wait_for()
    tag = caret.locator(".cm-ySelectionInfo")
    shown = (
        "() => { const el = document.querySelector('.cm-ySelectionInfo');"
        " return el ? getComputedStyle(el).opacity : null }"
    )
    await tag.wait_for()
    await ada.page.wait_for_function(f"() => ({shown})() === '1'")
    # The tag sits on the caret's own line: the line above stays readable.
    line_top = await caret.evaluate("el => el.closest('.cm-line').getBoundingClientRect().top")
    tag_box = await tag.bounding_box()
    assert tag_box is not None and tag_box["y"] >= line_top - 1
    await states.Opened(ada.page).snap(f"name-tag-{width}")
    # It goes away by itself, and comes back when the caret is pointed at.
    await ada.page.wait_for_function(
        f"() => ({shown})() === '0'",
        timeout=WAIT_MS,
    )
    await caret.hover(force=True)
    await ada.page.wait_for_function(
        f"() => ({shown})() === '1'",
        timeout=WAIT_MS,
    )
    # Never wider than the page, even at the end of a line.
    assert await ada.page.evaluate("document.documentElement.scrollWidth <= innerWidth")


async def test_a_long_document_scrolls_under_the_bars_and_find_sits_below_them(
    frontend_dist: Path, server: InProcessServer, open_page: Any, width: int
) -> None:
    page: Opened = await open_page(editor_url(server.http_url, "long"))
    await page.tab.wait_status("connected")
    await page.page.evaluate(
        """() => { const v = window.collab.view; let t = ''
            for (let i = 0; t.length < 200000; i++)
                t += `Paragraph ${i}: words words words words words words words.\\n`
            v.dispatch({ changes: { from: 0, insert: t }, userEvent: 'input.paste' }) }"""
    )
    await page.wait_saved()
    await page.page.evaluate("window.scrollTo(0, document.body.scrollHeight / 2)")

    # Whatever is at the bars' place on screen belongs to the bars, not the text.
    on_top = """sel => { const r = document.querySelector(sel).getBoundingClientRect()
        const el = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)
        return document.querySelector(sel).contains(el) }"""
    assert await page.page.evaluate(on_top, ".toolbar")
    assert await page.page.evaluate(on_top, ".topbar")
    toolbar = await page.page.locator(".toolbar").bounding_box()
    assert toolbar is not None and abs(toolbar["y"] - 60) <= 1  # stuck under the top bar

    await page.page.keyboard.press("Control+f")
    field = page.page.locator(".cm-search .cm-textfield").first
    await field.wait_for()
    panel = await page.page.locator(".cm-panels-top").bounding_box()
    assert panel is not None and panel["y"] >= toolbar["y"] + toolbar["height"] - 1
    assert await page.page.evaluate(on_top, "#doc-title")  # the title stays visible
    assert await field.evaluate("el => getComputedStyle(el).borderRadius") == "7px"
    await page.page.keyboard.type("Paragraph 1234:")
    await page.page.keyboard.press("Enter")
    await page.page.locator(".cm-searchMatch-selected").wait_for()
    await page.snap(f"find-in-long-document-{width}")


async def test_the_dark_theme_follows_the_system_setting(
    browser: Browser, frontend_dist: Path, server: InProcessServer, width: int
) -> None:
    context = await browser.new_context(
        viewport={"width": width, "height": 720}, color_scheme="dark"
    )
    context.set_default_timeout(WAIT_MS)
    page = await Opened(await context.new_page()).goto(editor_url(server.http_url, "night"))
    await page.tab.wait_status("connected")
    await page.tab.type_at_end("# Night shift\n\nWritten after dark, **in bold**.")
    background = await page.page.evaluate("getComputedStyle(document.body).backgroundColor")
    ink = await page.page.evaluate("getComputedStyle(document.querySelector('.cm-content')).color")
    assert background == "rgb(17, 19, 21)", background
    assert ink == "rgb(230, 232, 235)", ink
    await page.snap(f"dark-{width}")
    await page.page.goto(server.http_url + "/")
    await page.page.locator("#docs-body tr[data-doc='night']").wait_for()
    await page.snap(f"dark-list-{width}")


@pytest.mark.parametrize("screen", [1024, 390, 360])
async def test_every_function_is_reachable_on_a_small_screen(
    browser: Browser, frontend_dist: Path, server: InProcessServer, screen: int
) -> None:
    tab = await open_tab(browser, server.http_url, "phone", viewport=(screen, 740))
    other = await open_tab(browser, server.http_url, "phone", user=("Grace Hopper", "#0090ff"))
    page = tab.page
    await tab.type_at_end("Shared from a small screen.")
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    for control in (
        "#undo",
        "#redo",
        "#find",
        "#doc-menu",
        "#share-button",
        "#avatars",
        "#me-button",
    ):
        assert await page.locator(control).is_visible(), control

    await page.click("#avatars")  # who is here
    panel = page.locator("#people-panel")
    await panel.locator(".person-name", has_text="Grace Hopper").wait_for()
    await Opened(page).snap(f"people-{screen}")
    await page.keyboard.press("Escape")

    await page.click("#share-button")  # sharing, with what it really allows
    dialog = page.locator("#share-dialog")
    await dialog.locator("[data-link='open']").wait_for()
    assert "anyone who can reach it can open and edit" in await dialog.inner_text()
    await Opened(page).snap(f"share-{screen}")
    await page.click("#share-close")

    await page.click("#doc-menu")  # rename, download, delete
    items = await page.locator(".menu-item").all_inner_texts()
    assert items[0] == "Rename…" and items[-1] == "Delete…", items
    assert any(".md" in item for item in items) and any(".txt" in item for item in items)
    await Opened(page).snap(f"menu-{screen}")
    async with page.expect_download() as download:
        await page.get_by_role("menuitem", name="Download as Markdown (.md)").click()
    assert (await download.value).suggested_filename == "phone.md"
    await other.page.close()
