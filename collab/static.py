"""The browser editor: serve the built ``frontend/dist`` next to the API.

``/`` is the document list, ``/d/{doc}`` the editor (its script reads the
document name from the path) and ``/assets/...`` the content-hashed bundles
Vite writes, cached for a year.  The pages themselves are ``no-cache`` so a
new build is picked up at once.  The build is looked up on every request: a
server started before ``npm run build`` serves the editor as soon as it exists,
and without a build ``/`` explains in one line how to make one.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

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

    def page(filename: str) -> web.Response | web.FileResponse:
        path = root / filename
        if not path.is_file():
            body = _NOT_BUILT.format(dist=html.escape(str(root)))
            return web.Response(
                text=body, content_type="text/html", headers={"Cache-Control": HTML_CACHE}
            )
        return web.FileResponse(path, headers={"Cache-Control": HTML_CACHE})

    async def index(request: web.Request) -> web.StreamResponse:
        return page("index.html")

    async def editor(request: web.Request) -> web.StreamResponse:
        # editor.html, or a single-page build's index.html.
        return page("editor.html" if (root / "editor.html").is_file() else "index.html")

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

    app.router.add_get("/", index)
    # [\s\S]: "." would not match a newline (%0A) in a document name.
    app.router.add_get(r"/d/{doc:[\s\S]+}", editor)
    app.router.add_get(r"/assets/{path:[\s\S]+}", asset)
