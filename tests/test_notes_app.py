"""The worked example of issue #12: a notes app that embeds collab (examples/notes_app).

The app runs in-process on a free port (so the loop check below covers it too)
with its demo users: ada owns "ada-notes", bob may edit "shared-plan" and
nothing else.  A real headless Chromium signs in through the app's own form
and edits in collab's editor, mounted under /collab/ and shown in a frame of
the app's note page; screenshots go to test-artifacts/notes_app/.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Frame, Page

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.closecodes import CloseCode
from collab.testing.server import free_port
from collab.webhooks import headers_for
from examples.notes_app import Config, create_app
from examples.notes_app.app import DB, HOOKS, SECRETS, SERVER
from examples.notes_app.assistant import summarize
from examples.notes_app.hooks import count_words
from tests import test_browser as shared
from tests.helpers import eventually
from tests.test_browser import ARTIFACTS, WAIT_MS

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ARTIFACTS / "notes_app"


@dataclass
class NotesApp:
    url: str
    app: web.Application

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/collab/ws"

    async def cookie(self, login: str, password: str) -> dict[str, str]:
        """The session cookie the app's sign-in form sets."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/login",
                data={"login": login, "password": password},
                allow_redirects=False,
            ) as response,
        ):
            assert response.status == 303, await response.text()
            return {name: morsel.value for name, morsel in response.cookies.items()}


async def start_app(data: Path, **options: Any) -> tuple[web.AppRunner, NotesApp]:
    port = free_port()
    config = Config(data=data, port=port, seed=True, webhook_debounce=0.2, **options)
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, NotesApp(f"http://127.0.0.1:{port}", app)


@pytest.fixture
async def notes_app(tmp_path: Path) -> AsyncIterator[NotesApp]:
    runner, app = await start_app(tmp_path / "data")
    try:
        yield app
    finally:
        await runner.cleanup()


# -- in the browser ---------------------------------------------------------------


async def sign_in(browser: Browser, app: NotesApp, login: str, *, next: str = "/notes") -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{app.url}{next}")
    assert page.url.startswith(f"{app.url}/login"), "not signed in: the app asks to sign in"
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", f"{login}-password")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{app.url}{next}")
    assert not errors, errors
    return page


async def editor_frame(page: Page) -> Frame:
    """The frame of collab's editor on a note page, once its document is synced."""
    handle = await page.wait_for_selector("iframe#editor")
    assert handle is not None
    frame = await handle.content_frame()
    assert frame is not None
    await frame.wait_for_function(
        "window.collab && window.collab.provider.synced"
        " && document.getElementById('status').dataset.status === 'connected'",
        timeout=WAIT_MS,
    )
    return frame


async def words_shown(page: Page) -> int:
    await page.wait_for_selector("#word-count[data-words]")
    return int(await page.get_attribute("#word-count", "data-words") or "-1")


async def snap(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("document.fonts.ready")
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def test_ada_signs_in_types_and_sees_the_word_count_change_then_the_assistant_summary(
    browser: Browser, frontend_dist: Path, notes_app: NotesApp
) -> None:
    page = await sign_in(browser, notes_app, "ada")
    await page.click("text=ada-notes")
    await page.wait_for_url(f"{notes_app.url}/notes/ada-notes")
    frame = await editor_frame(page)
    assert frame.url == f"{notes_app.url}/collab/d/ada-notes"  # collab's editor, mounted
    # The page told the editor who is signed in: the others see "Ada Lovelace".
    assert await frame.evaluate("window.collab.awareness.getLocalState().user.name") == (
        "Ada Lovelace"
    )
    before = await words_shown(page)
    assert before == count_words(await frame.evaluate("window.collab.text()")) == 26

    await frame.evaluate(
        """() => { const v = window.collab.view; v.focus();
                   v.dispatch({ selection: { anchor: v.state.doc.length } }) }"""
    )
    await page.keyboard.type("Three more words.")
    # The page polls the count the on_change hook keeps: it moves by three.
    await page.wait_for_function(
        "n => document.getElementById('word-count').dataset.words === String(n)",
        arg=before + 3,
        timeout=WAIT_MS,
    )
    # The change reached the hook as ada's: the principal came from the app's cookie.
    assert notes_app.app[HOOKS].counts["ada-notes"].authors == ("ada",)
    await snap(page, "ada-typed")

    await page.click("#summarize")
    await frame.wait_for_function(
        "window.collab.text().includes('Summary: The Analytical Engine')", timeout=WAIT_MS
    )
    await page.wait_for_function(
        "document.getElementById('assistant-status').textContent.startsWith('Added: Summary:')",
        timeout=WAIT_MS,
    )
    text = await frame.evaluate("window.collab.text()")
    assert text.endswith(
        "other things besides number.\nThree more words.\n\nSummary: The Analytical Engine "
        "weaves algebraical patterns just as the Jacquard loom weaves flowers and leaves. "
        "(26 words)"
    ), text
    await page.wait_for_function(
        "n => document.getElementById('word-count').dataset.words === String(n)",
        arg=count_words(text),
        timeout=WAIT_MS,
    )
    await snap(page, "assistant-summary")
    # The summary is stored, not only broadcast.
    await notes_app.app[SERVER].store.flush()
    async with notes_app.app[SERVER].open_document("ada-notes", durable=False) as handle:
        assert str(handle) == text


async def test_bob_is_refused_adas_document_and_sees_only_his_own(
    browser: Browser, frontend_dist: Path, notes_app: NotesApp
) -> None:
    page = await sign_in(browser, notes_app, "bob")
    assert await page.locator(".notes a").all_text_contents() == ["shared-plan"]

    # The app's own page for it says no...
    response = await page.goto(f"{notes_app.url}/notes/ada-notes")
    assert response is not None and response.status == 403
    # ...and collab's editor, opened directly, shows the refusal.
    await page.goto(f"{notes_app.url}/collab/d/ada-notes")
    await page.wait_for_function(
        "document.getElementById('status').dataset.status === 'forbidden'", timeout=WAIT_MS
    )
    assert "do not have access" in await page.locator("#banner").inner_text()
    await snap(page, "bob-refused")
    # A socket the browser opens itself (with bob's cookie) is closed with 4403.
    code = await page.evaluate(
        """url => new Promise(resolve => {
            const ws = new WebSocket(url); ws.onclose = event => resolve(event.code) })""",
        f"{notes_app.ws_url}/ada-notes",
    )
    assert code == CloseCode.FORBIDDEN

    # collab's own document list, under the prefix, lists only what bob may open.
    await page.goto(f"{notes_app.url}/collab/")
    await page.wait_for_selector("text=shared-plan")
    assert "ada-notes" not in await page.locator("body").inner_text()
    # And his shared note opens and syncs.
    await page.goto(f"{notes_app.url}/notes/shared-plan")
    frame = await editor_frame(page)
    assert "Bob builds the frame" in await frame.evaluate("window.collab.text()")


async def test_the_owner_changes_access_and_open_sockets_follow_at_once(
    notes_app: NotesApp,
) -> None:
    ada = await notes_app.cookie("ada", "ada-password")
    bob = await notes_app.cookie("bob", "bob-password")
    server = notes_app.app[SERVER]
    async with (
        aiohttp.ClientSession(cookies=bob) as bob_http,
        aiohttp.ClientSession(cookies=ada) as ada_http,
    ):
        ws = await bob_http.ws_connect(f"{notes_app.ws_url}/shared-plan")
        await eventually(lambda: len(server.connections("bob")) == 1)
        assert server.connections("bob")[0].can_write

        async def set_role(role: str) -> None:
            async with ada_http.post(
                f"{notes_app.url}/notes/shared-plan/members",
                data={"login": "bob", "role": role},
                allow_redirects=False,
            ) as response:
                assert response.status == 303, await response.text()

        await set_role("viewer")
        assert not server.connections("bob")[0].can_write
        assert ws.closed is False
        await set_role("none")
        while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.BINARY:
            pass
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CloseCode.FORBIDDEN
        # A new connection is refused too: access comes from the app's table.
        again = await bob_http.ws_connect(f"{notes_app.ws_url}/shared-plan")
        msg = await again.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CloseCode.FORBIDDEN
        # Only the owner changes access.
        async with bob_http.post(
            f"{notes_app.url}/notes/ada-notes/members",
            data={"login": "bob", "role": "editor"},
            allow_redirects=False,
        ) as response:
            assert response.status == 403


async def test_a_new_note_belongs_to_its_creator_and_names_are_checked(
    notes_app: NotesApp,
) -> None:
    bob = await notes_app.cookie("bob", "bob-password")
    async with aiohttp.ClientSession(cookies=bob) as http:
        async with http.post(
            f"{notes_app.url}/notes", data={"name": "bob's list"}, allow_redirects=False
        ) as response:
            assert response.status == 422  # an apostrophe is not allowed
        async with http.post(
            f"{notes_app.url}/notes", data={"name": "bob-list"}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/notes/bob-list"
        async with http.post(f"{notes_app.url}/notes", data={"name": "ada-notes"}) as response:
            assert response.status == 409
        async with http.get(f"{notes_app.url}/api/wordcount/bob-list") as response:
            assert (await response.json())["words"] == 2  # "# bob-list"
    assert await notes_app.app[DB].members("bob-list") == {"bob": "owner"}
    assert await notes_app.app[DB].members("ada-notes") == {"ada": "owner"}


async def test_signing_out_closes_the_users_open_editors_with_4401(notes_app: NotesApp) -> None:
    bob = await notes_app.cookie("bob", "bob-password")
    async with aiohttp.ClientSession(cookies=bob) as http:
        ws = await http.ws_connect(f"{notes_app.ws_url}/shared-plan")
        await eventually(lambda: len(notes_app.app[SERVER].connections("bob")) == 1)
        async with http.post(f"{notes_app.url}/logout", allow_redirects=False) as response:
            assert response.status == 303
        while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.BINARY:
            pass
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CloseCode.UNAUTHORIZED


async def test_without_a_valid_session_collab_closes_with_4401(notes_app: NotesApp) -> None:
    ada = await notes_app.cookie("ada", "ada-password")
    forged = {"notes_session": ada["notes_session"].replace("YWRh", "Ym9i", 1)}  # ada -> bob
    for cookies in ({}, forged):
        async with aiohttp.ClientSession(cookies=cookies) as http:
            ws = await http.ws_connect(f"{notes_app.ws_url}/shared-plan")
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CloseCode.UNAUTHORIZED
            async with http.get(f"{notes_app.url}/collab/api/docs") as response:
                assert response.status == 401
            async with http.get(f"{notes_app.url}/api/wordcount/shared-plan") as response:
                assert response.status == 401


async def test_a_wrong_password_is_refused_and_a_post_from_another_site_too(
    notes_app: NotesApp,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{notes_app.url}/login", data={"login": "ada", "password": "nope"}
        ) as response:
            assert response.status == 401
            assert "Wrong name or password" in await response.text()
            assert "notes_session" not in response.cookies
        async with http.post(
            f"{notes_app.url}/login",
            data={"login": "ada", "password": "ada-password", "next": "//evil.example/"},
            allow_redirects=False,
        ) as response:
            assert response.headers["Location"] == "/notes"
    ada = await notes_app.cookie("ada", "ada-password")
    async with (
        aiohttp.ClientSession(cookies=ada) as http,
        http.post(
            f"{notes_app.url}/assistant/ada-notes/summary",
            headers={"Origin": "http://evil.example"},
        ) as response,
    ):
        assert response.status == 403
    async with notes_app.app[SERVER].open_document("ada-notes", durable=False) as handle:
        assert "Summary:" not in str(handle)


async def test_the_assistant_needs_write_access(notes_app: NotesApp) -> None:
    bob = await notes_app.cookie("bob", "bob-password")
    async with aiohttp.ClientSession(cookies=bob) as http:
        async with http.post(f"{notes_app.url}/assistant/ada-notes/summary") as response:
            assert response.status == 403
            assert (await response.json())["error"] == "forbidden"
        async with http.post(f"{notes_app.url}/assistant/shared-plan/summary") as response:
            assert response.status == 200
            assert (await response.json())["summary"] == (
                "Summary: Bob builds the frame, Ada writes the program. (8 words)"
            )


def test_a_summary_is_the_first_sentence_of_the_text_and_its_word_count() -> None:
    assert summarize("") == "Summary: (nothing written yet)"
    assert summarize("# Title\n\nOne. Two three.\n\nSummary: old") == "Summary: One. (3 words)"
    assert count_words("don't  stop\nwell-known ... 42 words") == 6


# -- webhooks --------------------------------------------------------------------


async def test_the_receiver_keeps_signed_deliveries_once_and_refuses_forged_ones(
    notes_app: NotesApp,
) -> None:
    secret = notes_app.app[SECRETS]["webhook"]
    body = json.dumps(
        {"type": "doc.persisted", "timestamp": "now", "data": {"doc": "ada-notes", "updates": 1}}
    ).encode()
    stamp = int(time.time())
    signed = headers_for([secret], "msg_1", stamp, body)
    forged = headers_for(["another-secret"], "msg_2", stamp, body)
    async with aiohttp.ClientSession() as http:
        for headers, status in ((signed, 204), (signed, 204), (forged, 400)):
            async with http.post(
                f"{notes_app.url}/webhooks/collab", data=body, headers=headers
            ) as response:
                assert response.status == status, await response.text()
    events = await notes_app.app[DB].webhook_events({"ada-notes"})
    # (collab's own deliveries arrive too: the app registers its receiver.)
    mine = [(e.id, e.type) for e in events if e.id in ("msg_1", "msg_2")]
    assert mine == [("msg_1", "doc.persisted")]


async def test_collab_delivers_signed_doc_persisted_webhooks_to_the_app(
    notes_app: NotesApp,
) -> None:
    ada = await notes_app.cookie("ada", "ada-password")
    async with aiohttp.ClientSession(cookies=ada) as http:
        async with http.post(f"{notes_app.url}/assistant/ada-notes/summary") as response:
            assert response.status == 200

        async def delivered() -> bool:
            # The receiver records only deliveries whose signature verified.
            events = await notes_app.app[DB].webhook_events({"ada-notes"})
            return any(
                e.type == "doc.persisted"
                and e.id.startswith("msg_")
                and "server:assistant" in e.payload["data"]["authors"]
                for e in events
            )

        await eventually(delivered, timeout=30, interval=0.2)
        async with http.get(f"{notes_app.url}/webhooks") as response:
            assert "doc.persisted" in await response.text()


# -- the command -------------------------------------------------------------------


async def test_the_documented_command_serves_the_app_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.notes_app",
        "--port",
        str(port),
        "--data",
        str(tmp_path / "data"),
        "--seed",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = (await proc.stdout.readline()).decode()
            while "notes app on" not in first:
                assert first, "the app exited at start"
                first = (await proc.stdout.readline()).decode()
        url = f"http://127.0.0.1:{port}"
        await eventually(lambda: _listening(port), timeout=20, interval=0.05)
        app = NotesApp(url, web.Application())
        bob = await app.cookie("bob", "bob-password")
        async with (
            aiohttp.ClientSession(cookies=bob) as http,
            http.get(f"{url}/api/wordcount/shared-plan") as response,
        ):
            assert (await response.json())["words"] == 13
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_a_domain_name_is_answered_once_it_is_allowed(tmp_path: Path) -> None:
    for allowed, status in (((), 403), (("notes.example.com",), 401)):
        runner, app = await start_app(tmp_path / str(status), allowed_hosts=allowed)
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{app.url}/collab/api/docs", headers={"Host": "notes.example.com"}
                ) as response,
            ):
                # 401: past the Host check, asked to sign in.
                assert response.status == status, await response.text()
        finally:
            await runner.cleanup()


async def test_only_the_owner_deletes_a_note_through_collabs_api(notes_app: NotesApp) -> None:
    bob = await notes_app.cookie("bob", "bob-password")
    ada = await notes_app.cookie("ada", "ada-password")
    async with aiohttp.ClientSession(cookies=bob) as http:
        async with http.delete(f"{notes_app.url}/collab/api/docs/shared-plan") as response:
            assert response.status == 403
            assert "only the owner" in (await response.json())["message"]
        # Writing is still his to do.
        async with http.put(
            f"{notes_app.url}/collab/api/docs/shared-plan/text", data="Bob's plan"
        ) as response:
            assert response.status == 200, await response.text()
    async with (
        aiohttp.ClientSession(cookies=ada) as http,
        http.delete(f"{notes_app.url}/collab/api/docs/shared-plan") as response,
    ):
        assert response.status == 200
