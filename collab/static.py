"""The browser editor: serve the built ``frontend/dist`` next to the API.

``/`` is the document list, ``/d/{doc}`` the editor (its script reads the
document name from the path) and ``/assets/...`` the content-hashed bundles
Vite writes, cached for a year.  The pages themselves are ``no-cache`` so a
new build is picked up at once.  The build is looked up on every request: a
server started before ``npm run build`` serves the editor as soon as it exists,
and without a build ``/`` explains in one line how to make one.

Mounted under a prefix (``parent.add_subapp("/collab/", server.app)``), the
pages get ``<base href="/collab/">``: the build's asset URLs are relative and
the scripts take their API and WebSocket paths from that base.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
from pathlib import Path

from aiohttp import web

from .guard import add_route

#: Where ``npm run build`` in ``frontend/`` writes (a source checkout).
DEFAULT_DIST = Path(__file__).resolve().parent.parent / "frontend" / "dist"

HTML_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=31536000, immutable"

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>collab: editor not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.6 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;
color:#1c2024}}code{{background:#f2f4f7;padding:.1em .35em;border-radius:4px}}</style></head>
<body><h1>collab is running</h1>
<p>The browser editor is not built ({dist} is missing): run <code>scripts/serve</code> with
Node.js installed, or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p>
<p>The WebSocket endpoint <code>/ws/{{doc}}</code> and the <a href="/api/docs">HTTP API</a>
work without it.</p></body></html>
"""


def setup_frontend(app: web.Application, dist: Path | None = None) -> None:
    """Serve the editor from ``dist`` (default: ``frontend/dist`` of this checkout).

    Adds only ``/``, ``/d/{doc}`` and ``/assets/{path}``: ``/ws/``, ``/api/``,
    ``/healthz`` and ``/readyz`` stay with their own handlers.
    """
    root = (dist if dist is not None else DEFAULT_DIST).resolve()

    async def page(request: web.Request, filename: str) -> web.Response:
        path = root / filename
        if not path.is_file():
            explain = _NOT_BUILT.format(dist=html.escape(str(root)))
            return web.Response(
                text=explain, content_type="text/html", headers={"Cache-Control": HTML_CACHE}
            )
        # The home route's path after aiohttp prefixed it: "/" alone, "/collab/" mounted.
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        body = with_base(text, home.resource.canonical if home.resource else "/").encode()
        etag = hashlib.sha256(body).hexdigest()[:32]
        headers = {"Cache-Control": HTML_CACHE, "ETag": f'"{etag}"'}
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    async def index(request: web.Request) -> web.StreamResponse:
        return await page(request, "index.html")

    async def editor(request: web.Request) -> web.StreamResponse:
        # editor.html, or a single-page build's index.html.
        return await page(
            request, "editor.html" if (root / "editor.html").is_file() else "index.html"
        )

    async def asset(request: web.Request) -> web.StreamResponse:
        assets = root / "assets"
        try:
            path = (assets / request.match_info["path"]).resolve()
            found = path.is_relative_to(assets) and path.is_file()
        except (ValueError, OSError):  # a NUL byte (/assets/%00), a name too long...
            found = False
        if not found:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": ASSET_CACHE})

    async def not_found(request: web.Request) -> web.StreamResponse:
        if not (root / "404.html").is_file():
            raise web.HTTPNotFound()
        response = await page(request, "404.html")
        if response.status == 200:
            response.set_status(404)
        return response

    home = add_route(app, "GET", "/", index)
    # [\s\S]: "." would not match a newline (%0A) in a document name.
    add_route(app, "GET", r"/d/{doc:[\s\S]+}", editor)
    add_route(app, "GET", r"/assets/{path:[\s\S]+}", asset)
    # Last: any other page path a person may type or follow gets the styled 404;
    # machine routes keep their own (JSON) not-found answers.
    add_route(app, "GET", r"/{tail:(?!(?:api|ws|assets)(?:/|$))[\s\S]+}", not_found)


_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)


def with_base(page: str, base: str) -> str:
    """``page`` with ``<base href="{base}">`` first in its head (relative URLs resolve there)."""
    tag = f'<base href="{html.escape(base)}">'
    head = _HEAD.search(page)
    if head is not None:
        return f"{page[: head.end()]}\n    {tag}{page[head.end() :]}"
    doctype = re.match(r"\s*<!doctype[^>]*>", page, re.IGNORECASE)
    at = doctype.end() if doctype else 0
    return f"{page[:at]}{tag}{page[at:]}"
