"""Whole-document actions in the browser: rename, delete, download, upload, share.

On the document list and in the editor, in a real headless Chromium against
the HTTP API; screenshots of the menus and dialogs go to
``test-artifacts/editor/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page
from pycrdt import Text

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.auth import issue_token
from collab.testing.server import InProcessServer
from tests import test_browser as shared
from tests import test_editor_states as states
from tests.conftest import ClientFactory, ServerFactory
from tests.test_browser import WAIT_MS, editor_url, open_tab
from tests.test_editor_states import SECRET, Opened, server_text

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked
width = states.width
open_page = states.open_page

pytestmark = pytest.mark.timeout(90)


def read_text(path: Any) -> str:
    return Path(str(path)).read_text()


async def write_doc(make_client: ClientFactory, name: str, content: str) -> None:
    client = await make_client(name)
    client.doc.get("text", type=Text).insert(0, content)
    await client.drain()
    await client.close()


async def row_menu(page: Page, doc: str, item: str) -> None:
    await page.locator(f"#docs-body tr[data-doc='{doc}'] .row-menu").click()
    await page.get_by_role("menuitem", name=item).click()


async def test_the_list_shows_lengths_and_renames_a_document(
    frontend_dist: Path,
    server: InProcessServer,
    make_client: ClientFactory,
    open_page: Any,
    browser: Browser,
    width: int,
) -> None:
    await write_doc(make_client, "notes", "shopping list")
    await write_doc(make_client, "plans", "ship it")
    editor = await open_tab(browser, server.http_url, "notes")  # someone has it open
    page: Opened = await open_page(server.http_url + "/")
    row = page.page.locator("#docs-body tr[data-doc='notes']")
    await row.wait_for()
    assert await row.locator(".length").inner_text() == "13 characters"  # not CRDT bytes

    await page.page.locator("#docs-body tr[data-doc='notes'] .row-menu").click()
    await page.snap(f"list-menu-{width}")
    await page.page.get_by_role("menuitem", name="Rename…").click()
    field = page.page.locator("dialog .dialog-input")
    await field.fill("plans")  # taken
    await field.press("Enter")
    await page.page.locator("dialog .dialog-error", has_text="already exists").wait_for()
    await page.snap(f"rename-taken-{width}")
    await field.fill("groceries")
    await field.press("Enter")
    await page.page.locator("#docs-body tr[data-doc='groceries']").wait_for()
    assert await page.page.locator("#docs-body tr[data-doc='notes']").count() == 0
    assert await server_text(server, "groceries") == "shopping list"

    # The open editor is told, and stops taking text under the old name.
    await editor.wait_status("removed")
    assert "renamed" in await editor.page.locator("#banner").inner_text()
    assert not await editor.page.evaluate("window.collab.conn.editable")


async def test_deleting_from_the_list_asks_first(
    frontend_dist: Path,
    server: InProcessServer,
    make_client: ClientFactory,
    open_page: Any,
    width: int,
) -> None:
    await write_doc(make_client, "old draft", "to be deleted")
    page: Opened = await open_page(server.http_url + "/")
    await page.page.locator("#docs-body tr[data-doc='old draft']").wait_for()

    await row_menu(page.page, "old draft", "Delete…")
    dialog = page.page.locator("dialog")
    assert "old draft" in await dialog.inner_text()
    assert "cannot be undone" in await dialog.inner_text()
    await page.snap(f"delete-confirm-{width}")
    await dialog.get_by_role("button", name="Cancel").click()
    assert await server_text(server, "old draft") == "to be deleted"

    await row_menu(page.page, "old draft", "Delete…")
    await page.page.locator("dialog").get_by_role("button", name="Delete").click()
    await page.page.locator(".toast", has_text="Deleted").wait_for()
    await page.page.wait_for_function(
        "() => !document.querySelector(\"#docs-body tr[data-doc='old draft']\")", timeout=WAIT_MS
    )
    assert await server_text(server, "old draft") is None


async def test_downloads_are_the_text_as_md_and_txt_files(
    browser: Browser, frontend_dist: Path, server: InProcessServer, make_client: ClientFactory
) -> None:
    await write_doc(make_client, "team/report", "# Report\n\nAll good.\n")
    page = await (await browser.new_context(accept_downloads=True)).new_page()
    await page.goto(server.http_url + "/")
    await page.locator("#docs-body tr[data-doc='team/report']").wait_for()
    for label, filename in [
        ("Download as Markdown (.md)", "team-report.md"),
        ("Download as plain text (.txt)", "team-report.txt"),
    ]:
        async with page.expect_download() as download:
            await row_menu(page, "team/report", label)
        got = await download.value
        assert got.suggested_filename == filename
        assert read_text(await got.path()) == "# Report\n\nAll good.\n"

    tab = await open_tab(browser, server.http_url, "team/report")
    await tab.type_at_end("Signed.")
    await tab.page.click("#doc-menu")
    async with tab.page.expect_download() as download:
        await tab.page.get_by_role("menuitem", name="Download as plain text (.txt)").click()
    got = await download.value
    assert read_text(await got.path()) == "# Report\n\nAll good.\nSigned."


async def test_uploading_a_text_file_makes_a_new_document(
    frontend_dist: Path, server: InProcessServer, open_page: Any, tmp_path: Path, width: int
) -> None:
    notes = tmp_path / "Meeting notes.md"
    notes.write_text("# Monday\n\n- ship the editor ✓\n")
    page: Opened = await open_page(server.http_url + "/")
    await page.page.locator("#docs-empty").wait_for()
    await page.page.set_input_files("#upload-file", str(notes))
    await page.page.wait_for_url(editor_url(server.http_url, "Meeting notes"))
    await page.tab.wait_status("connected")
    await page.tab.wait_text("text === arg", "# Monday\n\n- ship the editor ✓\n")

    # The same file again does not overwrite the first: it gets a free name.
    await page.page.goto(server.http_url + "/")
    await page.page.locator("#docs-body tr[data-doc='Meeting notes']").wait_for()
    await page.page.set_input_files("#upload-file", str(notes))
    await page.page.wait_for_function(
        "window.collab && window.collab.name === 'Meeting notes (2)'", timeout=WAIT_MS
    )

    # Not a text file: said so, nothing made.
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    await page.page.goto(server.http_url + "/")
    await page.page.locator("#docs-body tr").first.wait_for()
    await page.page.set_input_files("#upload-file", str(picture))
    await page.page.locator(".toast.error", has_text="not a text file").wait_for()
    await page.snap(f"upload-refused-{width}")
    assert await server_text(server, "photo") is None


async def test_renaming_in_the_editor_moves_the_page_to_the_new_name(
    browser: Browser, frontend_dist: Path, server: InProcessServer
) -> None:
    tab = await open_tab(browser, server.http_url, "draft 1")
    await tab.type_at_end("keep me")
    await tab.page.wait_for_function("!window.collab.conn.unsaved", timeout=WAIT_MS)
    await tab.page.click("#doc-title")
    field = tab.page.locator("dialog .dialog-input")
    assert await field.input_value() == "draft 1"
    await field.fill("final")
    await field.press("Enter")
    await tab.page.wait_for_url(editor_url(server.http_url, "final"))
    await tab.wait_status("connected")
    await tab.wait_text("text === 'keep me'")
    assert await tab.page.inner_text("#doc-title") == "final"
    assert await tab.page.locator("#banner").is_hidden()


# --- sharing ------------------------------------------------------------------------


async def test_sharing_with_a_write_token_offers_an_edit_and_a_view_link(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, width: int
) -> None:
    server = await make_server(auth_secret=SECRET)
    write = issue_token(SECRET, "memo", "write", 600)
    owner = await open_tab(
        browser, server.http_url, "memo", query=f"?token={write}", viewport=(width, 760)
    )
    await owner.type_at_end("shared text")
    await owner.page.click("#share-button")
    dialog = owner.page.locator("#share-dialog")
    await dialog.locator("[data-link='edit']").wait_for()
    text = await dialog.inner_text()
    assert "Anyone with the link can edit" not in text
    await Opened(owner.page).snap(f"share-write-{width}")
    edit_link = await dialog.locator("[data-link='edit']").input_value()
    view_link = await dialog.locator("[data-link='view']").input_value()
    assert "?token=" in edit_link and "?token=" in view_link
    assert view_link.split("?token=")[1] != write  # a read token, minted for the viewer
    await owner.page.click("#share-close")

    viewer = await (await browser.new_context()).new_page()
    await viewer.goto(view_link)
    await viewer.wait_for_function("window.collab && window.collab.text() === 'shared text'")
    assert await viewer.locator("#read-only").is_visible()
    assert not await viewer.evaluate("window.collab.conn.editable")

    # A viewer can pass on a view link, and is told why there is no edit link.
    await viewer.click("#share-button")
    viewer_dialog = viewer.locator("#share-dialog")
    await viewer_dialog.locator("[data-link='view']").wait_for()
    assert await viewer_dialog.locator("[data-link='edit']").count() == 0
    assert "Only someone with edit access" in await viewer_dialog.inner_text()

    editor = await (await browser.new_context()).new_page()
    await editor.goto(edit_link)
    await editor.wait_for_function(
        "document.getElementById('status').dataset.status === 'connected'", timeout=WAIT_MS
    )
    assert await editor.evaluate("window.collab.conn.editable")
