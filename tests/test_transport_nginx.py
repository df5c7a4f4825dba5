"""The browser editor over the HTTP fallback, through a real nginx.

nginx (Debian's package, started here on a free port with a private prefix,
``master_process off`` so one process is the whole proxy) stands in for the
corporate proxy that does not pass WebSockets: its config has no ``Upgrade``
headers, so every upgrade reaches collab as a plain GET and fails.  The
editor's ``CollabTransport`` (clients/collab-transport) must then find plain
HTTP and use it, with the header saying so, while a second tab on the same
document talks to collab directly over a WebSocket.  A second config buffers
every response (``proxy_buffering on``, collab's ``X-Accel-Buffering: no``
ignored, and gzip on the stream): the stream's events never arrive, and the
editor must settle on long-poll within 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Request
from pycrdt import Text

import collab.app  # noqa: F401 - imported now, not on the first test's event loop
from collab.auth import issue_token
from collab.testing.server import InProcessServer, free_port
from tests import test_browser as shared
from tests.conftest import IN_CI, ClientFactory, ServerFactory
from tests.helpers import text_of
from tests.test_browser import ARTIFACTS, WAIT_MS, Tab, open_tab

# The Chromium, build, browser and loop-check fixtures of test_browser.py, by name.
chromium = shared.chromium
frontend_dist = shared.frontend_dist
browser = shared.browser
event_loop_is_never_blocked = shared.event_loop_is_never_blocked

pytestmark = pytest.mark.timeout(120)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHOTS = ARTIFACTS / "editor"

#: A proxy that does not pass WebSockets: no Upgrade/Connection headers, so an
#: upgrade arrives as a plain GET.  Host is kept, as any real deployment does
#: (collab checks a POST's Origin against it).
NO_UPGRADE = """
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
"""

#: The same, buffering every response whatever the upstream asks.  nginx 1.22
#: with ``proxy_buffering on`` alone still passes each read from upstream on at
#: once (a stream's events arrive as they are sent), so responses are also
#: compressed, as a proxy that gzips "text" types does: the compressor holds
#: the stream's small events until its buffer fills, while every complete
#: response (a long-poll's answer, a POST's) passes whole.
BUFFERING = (
    NO_UPGRADE
    + """
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_proxied any;
            gzip_min_length 1;
            gzip_types text/event-stream application/json application/octet-stream;
"""
)


class Nginx:
    """One private nginx in front of one upstream, stoppable and restartable on its port."""

    def __init__(self, directory: Path, upstream_port: int, location: str) -> None:
        self.prefix = directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        for sub in ("logs", "temp"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        temp = directory / "temp"
        (directory / "nginx.conf").write_text(
            f"""
daemon off;
master_process off;
pid {directory}/nginx.pid;
error_log {directory}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/logs/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
{location}
        }}
    }}
}}
"""
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            NGINX,
            "-p",
            str(self.prefix),
            "-c",
            str(self.prefix / "nginx.conf"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(f"nginx exited: {self.errors()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not listen on {self.port}: {self.errors()}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM: nginx's fast shutdown drops every connection at once."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        async with asyncio.timeout(10):
            await self.proc.wait()

    def errors(self) -> str:
        log = self.prefix / "logs" / "error.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def requests(self) -> str:
        log = self.prefix / "logs" / "access.log"
        return log.read_text() if log.exists() else ""


NginxFactory = Callable[[int, str], Awaitable[Nginx]]


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[NginxFactory]:
    """Start private nginx instances (``upstream port``, ``location`` lines); all stop after."""
    if not os.access(NGINX, os.X_OK):
        if IN_CI:
            pytest.fail("nginx is missing (scripts/services installs it in CI)")
        pytest.skip("nginx is missing: apt-get install nginx")
    started: list[Nginx] = []

    async def start(upstream_port: int, location: str) -> Nginx:
        proxy = Nginx(tmp_path / f"nginx{len(started)}", upstream_port, location)
        started.append(proxy)
        await proxy.start()
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


class InFlight:
    """The most requests of each kind a page had open at once, and how many it made."""

    KINDS = ("/sse/", "/send/", "/poll/")

    def __init__(self, page: Page) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _kind(self, request: Request) -> str | None:
        return next((k for k in self.KINDS if k in request.url), None)

    def _started(self, request: Request) -> None:
        if kind := self._kind(request):
            self.now[kind] += 1
            self.count[kind] += 1
            self.most[kind] = max(self.most[kind], self.now[kind])

    def _ended(self, request: Request) -> None:
        if kind := self._kind(request):
            self.now[kind] -= 1


async def transport(tab: Tab) -> str:
    return str(await tab.page.get_attribute("#status", "data-transport"))


async def label(tab: Tab) -> str:
    return (await tab.page.inner_text("#status .status-label")).strip()


def port_of(server: InProcessServer) -> int:
    return int(server.http_url.rsplit(":", 1)[1])


async def test_through_nginx_without_upgrade_headers_the_editor_works_over_http(
    browser: Browser, frontend_dist: Path, server: InProcessServer, nginx: NginxFactory
) -> None:
    proxy = await nginx(port_of(server), NO_UPGRADE)
    doc = "behind nginx"
    behind = await open_tab(browser, proxy.url, doc, user=("Ada Lovelace", "#e5484d"))
    direct = await open_tab(browser, server.http_url, doc, user=("Grace Hopper", "#0090ff"))

    assert await transport(behind) == "sse"
    assert await label(behind) == "Connected · HTTP"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await behind.page.screenshot(path=SHOTS / "connected-over-http.png")
    assert await transport(direct) == "websocket"
    assert await label(direct) == "Connected"
    assert " 101 " not in proxy.requests()  # no WebSocket ever got through nginx
    # (nginx logs a request when it ends: the stream is still open.)
    assert "GET /transport/probe" in proxy.requests() and "POST /send/" in proxy.requests()

    # Typing both ways, and each one's named caret in the other's editor.  The
    # tab keeps to one stream and one POST at a time (HTTP/1.1 allows six
    # connections per host, for every tab together).
    in_flight = InFlight(behind.page)
    await behind.type_at_end("typed behind the proxy. ")
    await direct.wait_text("text === arg", "typed behind the proxy. ")
    await direct.type_at_end("typed directly. ")
    await behind.wait_text("text === arg", "typed behind the proxy. typed directly. ")
    await behind.page.locator(".cm-ySelectionCaret", has_text="Grace Hopper").wait_for()
    await direct.page.locator(".cm-ySelectionCaret", has_text="Ada Lovelace").wait_for()
    await direct.page.locator("#people .person-name", has_text="Ada Lovelace").wait_for()
    assert in_flight.most["/send/"] == 1, in_flight.most
    assert in_flight.most["/sse/"] <= 1, in_flight.most
    assert in_flight.count["/send/"] < len("typed behind the proxy. "), in_flight.count  # batched

    # The proxy goes away: the tab says offline and keeps what is typed meanwhile.
    await proxy.stop()
    await behind.wait_status("offline")
    await behind.type_at_end("while the proxy was down. ")
    await direct.type_at_end("meanwhile, directly. ")
    await proxy.start()  # the same port
    await behind.wait_status("connected")
    for tab in (behind, direct):
        await tab.wait_text(
            "text.includes('while the proxy was down. ') && text.includes('meanwhile, directly. ')"
        )
    assert await behind.text() == await direct.text()
    assert await transport(behind) == "sse"
    remembered = await behind.page.evaluate(
        "k => sessionStorage.getItem(k)", f"collab-transport:{proxy.url}/"
    )
    assert remembered is not None and '"tier":"sse"' in remembered  # no WebSocket wait next time
    assert await label(behind) == "Connected · HTTP"
    await direct.page.locator("#people .person-name", has_text="Ada Lovelace").wait_for()

    # Closing the tab says goodbye (a beacon, POST /send?close=1), and the
    # session lost when the proxy went away was ended by the reconnect: Ada
    # leaves Grace's list at once, not when the server expires a session (30 s).
    await behind.page.close()
    await direct.page.wait_for_function(
        "() => document.querySelectorAll('#people .person').length === 1", timeout=10_000
    )


async def test_behind_a_buffering_nginx_the_editor_settles_on_long_poll_within_10_s(
    browser: Browser,
    frontend_dist: Path,
    server: InProcessServer,
    nginx: NginxFactory,
    make_client: ClientFactory,
) -> None:
    proxy = await nginx(port_of(server), BUFFERING)
    doc = "buffered by nginx"
    bot = await make_client(doc)
    bot.set_presence({"user": {"name": "Direct Bot"}})

    context = await browser.new_context()
    page = await context.new_page()
    started = time.monotonic()
    await page.goto(f"{proxy.url}/d/{doc.replace(' ', '%20')}")
    tab = Tab(page)
    await page.wait_for_function(
        "document.getElementById('status').dataset.status === 'connected'"
        " && window.collab.provider.synced",
        timeout=WAIT_MS,
    )
    assert time.monotonic() - started < 10
    assert await transport(tab) == "poll"
    assert await label(tab) == "Connected · HTTP"

    await tab.type_at_end("polled through nginx. ")
    await bot.wait_for(lambda: text_of(bot) == "polled through nginx. ")
    bot.doc.get("text", type=Text).insert(0, "from the bot. ")
    await tab.wait_text("text === arg", "from the bot. polled through nginx. ")
    await page.locator("#people .person-name", has_text="Direct Bot").wait_for()
    me = bot.awareness.client_id
    await bot.wait_for(lambda: any("user" in s for c, s in bot.awareness.states.items() if c != me))


async def test_over_http_a_token_expiring_while_open_gets_its_own_state_as_on_a_websocket(
    browser: Browser, frontend_dist: Path, make_server: ServerFactory, nginx: NginxFactory
) -> None:
    secret = "transport-nginx-secret-of-32-bytes-or-more"
    server = await make_server(auth_secret=secret, awareness_timeout=5)  # a 0.5 s tick
    proxy = await nginx(port_of(server), NO_UPGRADE)
    short = issue_token(secret, "plans", "write", 8)
    tab = await open_tab(browser, proxy.url, "plans", query=f"?token={short}")
    assert await transport(tab) == "sse"
    await tab.type_at_end("before expiry. ")
    # The server ends the session with 4401 (event: close); the provider sees
    # that code, so the page asks for a token instead of retrying.
    await tab.wait_status("expired")

    fresh = issue_token(secret, "plans", "write", 600)
    await tab.page.fill("#banner .token-input", fresh)
    await tab.page.press("#banner .token-input", "Enter")
    await tab.wait_status("connected")
    assert await transport(tab) == "sse"
    await tab.type_at_end("after.")
    await tab.wait_text("text === arg", "before expiry. after.")
