"""HTML pages from ``templates/`` with ``string.Template``: escaped unless named ``*_html``."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template

from aiohttp import web

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _template(name: str) -> Template:
    # Read once per process (at the first request that needs it).
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(name: str, **values: object) -> str:
    """Fill ``templates/{name}``; a value is HTML-escaped unless its key ends in ``_html``."""
    filled = {
        key: str(value) if key.endswith("_html") else html.escape(str(value))
        for key, value in values.items()
    }
    return _template(name).substitute(filled)


def page(title: str, body_html: str, *, user: str = "", status: int = 200) -> web.Response:
    """A whole page: ``body_html`` inside the layout."""
    nav = render("nav.html", user=user) if user else '<a class="brand" href="/">Notes</a>'
    text = render("layout.html", title=title, nav_html=nav, body_html=body_html)
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


def preload() -> None:
    """Read every template now (call before serving: no file reads on the event loop)."""
    for path in TEMPLATES.glob("*.html"):
        _template(path.name)
