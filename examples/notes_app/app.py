"""The notes app: its own sign-in and pages, with collab mounted under ``/collab/``.

Routes of the app itself::

    GET  /login, POST /login, POST /logout     sign in with the app's users (SQLite)
    GET  /notes, POST /notes                   your notes; create one
    GET  /notes/{doc}                          the note: collab's editor in a frame,
                                               its word count, the assistant, who has access
    POST /notes/{doc}/members                  the owner changes someone's access (live)
    GET  /api/wordcount/{doc}                  the count kept by the on_change hook
    POST /assistant/{doc}/summary              append a summary with server.open_document
    POST /webhooks/collab, GET /webhooks       receive collab's signed webhooks; list them

and collab's own under ``/collab/``: ``/collab/d/{doc}`` (the editor),
``/collab/ws/{doc}``, ``/collab/api/...``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

import collab
from collab.webhooks import WebhookVerificationError, verify

from . import sessions
from .assistant import append_summary
from .db import AppDB, Role, User
from .hooks import AppHooks
from .pages import page, preload, render

log = logging.getLogger("notes_app")

STATIC = Path(__file__).parent / "static"
#: Document names the app creates: safe in a URL path segment and in a file name.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
WEBHOOK_PATH = "/webhooks/collab"
NO_EVENTS = "Nothing yet: edit a note and wait a few seconds."


@dataclass(frozen=True, slots=True)
class Config:
    """How to run the app (``python -m examples.notes_app --help``)."""

    data: Path
    host: str = "127.0.0.1"
    port: int = 8090
    #: Create the demo users and notes (idempotent).
    seed: bool = False
    #: Register the app's own receiver with ``collab.Webhook``.
    webhooks: bool = True
    #: Seconds collab gathers a document's edits into one ``doc.persisted`` delivery.
    webhook_debounce: float = 2.0
    #: Mark the session cookie ``Secure`` (the app is served over https).
    secure_cookies: bool = False
    #: Domain names the app is reached at (collab answers only these, IP
    #: addresses and localhost: its defence against DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()


DB = web.AppKey("db", AppDB)
HOOKS = web.AppKey("hooks", AppHooks)
SERVER = web.AppKey("server", collab.Server)
CONFIG = web.AppKey("config", Config)
SECRETS = web.AppKey("secrets", dict[str, str])
WEBHOOK = web.AppKey("webhook", collab.Webhook)


def load_secrets(data: Path) -> dict[str, str]:
    """The session key and webhook secret, made once and kept in ``data/secrets.json``."""
    path = data / "secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    made = {"session": secrets.token_urlsafe(32), "webhook": secrets.token_urlsafe(32)}
    path.touch(mode=0o600)
    path.write_text(json.dumps(made))
    return made


def create_app(config: Config) -> web.Application:
    """The notes app with collab mounted under ``/collab/``."""
    config.data.mkdir(parents=True, exist_ok=True)
    keys = load_secrets(config.data)
    preload()
    db = AppDB(config.data / "notes.db")
    hooks = AppHooks(db, keys["session"].encode())
    settings = collab.Settings(
        store=f"sqlite:///{config.data / 'collab.db'}",
        host=config.host,
        allowed_host=config.allowed_hosts,
    )
    stack: list[collab.Hooks] = [hooks]
    webhook = None
    if config.webhooks:
        # The app receives its own webhooks: collab delivers from its durable outbox.
        webhook = collab.Webhook(
            f"http://{config.host}:{config.port}{WEBHOOK_PATH}",
            keys["webhook"],
            debounce=config.webhook_debounce,
        )
        stack.append(webhook)
    server = collab.Server(settings, hooks=stack)
    hooks.bind(server)

    app = web.Application(middlewares=[same_origin_writes])
    app[DB], app[HOOKS], app[SERVER], app[CONFIG], app[SECRETS] = db, hooks, server, config, keys
    if webhook is not None:
        app[WEBHOOK] = webhook
    app.cleanup_ctx.append(database)
    app.on_shutdown.append(stop_counting)  # before collab's own shutdown (added below)
    app.router.add_get("/", home)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/notes", notes)
    app.router.add_post("/notes", create_note)
    app.router.add_get("/notes/{doc}", note)
    app.router.add_post("/notes/{doc}/members", change_access)
    app.router.add_get("/api/wordcount/{doc}", word_count)
    app.router.add_post("/assistant/{doc}/summary", summary)
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/webhooks", webhooks_page)
    app.router.add_static("/static/", STATIC)
    # collab's startup (store, rooms, hooks) runs as part of the app's; the
    # seed below runs after it, when open_document works.
    app.add_subapp("/collab/", server.app)
    if config.seed:
        app.on_startup.append(seed_notes)
    return app


async def database(app: web.Application) -> AsyncIterator[None]:
    await app[DB].setup()
    if app[CONFIG].seed:
        await seed_users(app[DB])
    yield


async def stop_counting(app: web.Application) -> None:
    app[HOOKS].stop()


# -- the demo data ----------------------------------------------------------------

DEMO_USERS = [("ada", "Ada Lovelace", "ada-password"), ("bob", "Bob Builder", "bob-password")]
DEMO_NOTES: dict[str, tuple[dict[str, Role], str]] = {
    "ada-notes": (
        {"ada": "owner"},
        "# Ada's notes\n\nThe Analytical Engine weaves algebraical patterns "
        "just as the Jacquard loom weaves flowers and leaves. It might act upon "
        "other things besides number.\n",
    ),
    "shared-plan": (
        {"ada": "owner", "bob": "editor"},
        "# Plan for the week\n\nBob builds the frame, Ada writes the program.\n",
    ),
}


async def seed_users(db: AppDB) -> None:
    for login, name, password in DEMO_USERS:
        if await db.user(login) is None:
            await db.add_user(login, name, password)
    for doc, (members, _) in DEMO_NOTES.items():
        for login, role in members.items():
            await db.set_role(doc, login, role)


async def seed_notes(app: web.Application) -> None:
    for doc, (_, text) in DEMO_NOTES.items():
        async with app[SERVER].open_document(doc, origin="seed") as handle:
            if not str(handle):
                handle.append(text)


# -- sessions and guards ----------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def same_origin_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a POST that a page of another site made (its ``Origin`` is not ours).

    With the ``SameSite=Lax`` cookie this is the app's CSRF defence.  collab's
    routes under ``/collab/`` have their own check (``--allowed-origin``).
    """
    origin = request.headers.get("Origin")
    if (
        request.method not in SAFE_METHODS
        and origin is not None
        and not request.path.startswith("/collab/")
        and origin != f"{request.scheme}://{request.host}"
    ):
        raise web.HTTPForbidden(text="cross-site request refused")
    return await handler(request)


async def current_user(request: web.Request) -> User | None:
    secret = request.app[SECRETS]["session"].encode()
    login = sessions.verify(secret, request.cookies.get(sessions.COOKIE))
    return await request.app[DB].user(login) if login else None


async def signed_in(request: web.Request) -> User:
    """The user, or a redirect to the sign-in page (back here afterwards)."""
    user = await current_user(request)
    if user is None:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return user


async def role_of(request: web.Request, user: User, doc: str) -> Role:
    role = (await request.app[DB].roles(user.login)).get(doc)
    if role is None:
        raise web.HTTPForbidden(text=f"you have no access to {doc!r}")
    return role


def _api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


# -- signing in -------------------------------------------------------------------


async def home(request: web.Request) -> web.Response:
    user = await current_user(request)
    raise web.HTTPSeeOther("/notes" if user else "/login")


def _local(target: str) -> str:
    """A redirect target on this site only (no ``//evil.example``)."""
    return target if target.startswith("/") and not target.startswith("//") else "/notes"


async def login_form(request: web.Request) -> web.Response:
    body = render(
        "login.html", next=_local(request.query.get("next", "/notes")), login="", error_html=""
    )
    return page("Sign in", body)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("login", "")), str(form.get("password", ""))
    target = _local(str(form.get("next", "/notes")))
    user = await request.app[DB].sign_in(name, password)
    if user is None:
        error = '<p class="notice error" role="alert">Wrong name or password.</p>'
        body = render("login.html", next=target, login=name, error_html=error)
        return page("Sign in", body, status=401)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        sessions.COOKIE,
        sessions.sign(request.app[SECRETS]["session"].encode(), user.login),
        max_age=sessions.LIFETIME,
        path="/",  # also /collab/: the editor's socket and API calls carry it
        httponly=True,
        samesite="Lax",
        secure=request.app[CONFIG].secure_cookies,
    )
    log.info("%s signed in", user.login)
    raise response


async def logout(request: web.Request) -> web.Response:
    user = await current_user(request)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(sessions.COOKIE, path="/")
    if user is not None:
        # Signing out also ends the user's open editors (4401: sign in again).
        request.app[SERVER].disconnect(user.login, collab.CloseCode.UNAUTHORIZED, "signed out")
    raise response


# -- notes --------------------------------------------------------------------------


def editor_url(doc: str) -> str:
    return f"/collab/d/{quote(doc, safe='')}"


def note_url(doc: str) -> str:
    return f"/notes/{quote(doc, safe='')}"


async def notes(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    user = await signed_in(request)
    roles = await request.app[DB].roles(user.login)
    counts = request.app[HOOKS].counts
    items = (
        "".join(
            f'<li><a href="{note_url(doc)}">{_e(doc)}</a> <span class="badge">{role}</span>'
            + (f' <span class="muted">{counts[doc].words} words</span>' if doc in counts else "")
            + "</li>"
            for doc, role in sorted(roles.items())
        )
        or '<li class="muted">No notes yet.</li>'
    )
    error_html = f'<p class="notice error" role="alert">{_e(error)}</p>' if error else ""
    return page(
        "Your notes",
        render("notes.html", items_html=items, error_html=error_html),
        user=user.login,
        status=status,
    )


async def create_note(request: web.Request) -> web.Response:
    user = await signed_in(request)
    name = str((await request.post()).get("name", "")).strip()
    if not NAME.fullmatch(name):
        return await notes(request, "Use letters, digits, space, dot, dash or underscore.", 422)
    if not await request.app[DB].create_document(name, user.login):
        return await notes(request, f"There is already a note named {name!r}.", 409)
    async with request.app[SERVER].open_document(name, origin="notes-app") as handle:
        if not str(handle):
            handle.append(f"# {name}\n\n")
    raise web.HTTPSeeOther(note_url(name))


async def note(request: web.Request) -> web.Response:
    user = await signed_in(request)
    doc = request.match_info["doc"]
    role = await role_of(request, user, doc)
    can_write = role in ("owner", "editor")
    assistant = (
        '<button id="summarize" class="button" type="button">Add a summary</button>'
        if can_write
        else ""
    )
    members = await members_panel(request, doc) if role == "owner" else ""
    body = render(
        "note.html",
        doc=doc,
        role=role,
        can_write="true" if can_write else "false",
        editor_url=editor_url(doc),
        assistant_html=assistant,
        members_html=members,
        user_name=user.name,
    )
    return page(doc, body, user=user.login)


async def members_panel(request: web.Request, doc: str) -> str:
    db = request.app[DB]
    members = await db.members(doc)
    rows = "".join(
        f"<li>{_e(login)} <span class='badge'>{role}</span></li>" for login, role in members.items()
    )
    others = [u for u in await db.users() if members.get(u.login) != "owner"]
    people = "".join(f'<option value="{_e(u.login)}">{_e(u.name)}</option>' for u in others)
    return render(
        "members.html",
        rows_html=rows,
        people_html=people,
        action=f"{note_url(doc)}/members",
    )


async def change_access(request: web.Request) -> web.Response:
    """The owner gives or takes access; open connections follow at once."""
    user = await signed_in(request)
    doc = request.match_info["doc"]
    if await role_of(request, user, doc) != "owner":
        raise web.HTTPForbidden(text="only the owner changes who has access")
    form = await request.post()
    login, wanted = str(form.get("login", "")), str(form.get("role", ""))
    db = request.app[DB]
    if await db.user(login) is None or wanted not in FORM_ROLES:
        raise web.HTTPBadRequest(text="unknown person or access")
    if (await db.members(doc)).get(login) == "owner":
        raise web.HTTPBadRequest(text="the owner keeps their access")
    role = FORM_ROLES[wanted]
    await db.set_role(doc, login, role)
    changed = apply_live(request.app[SERVER], login, doc, role)
    log.info(
        "%s set %s's access to %r to %s (%d open connections)",
        user.login,
        login,
        doc,
        wanted,
        changed,
    )
    raise web.HTTPSeeOther(note_url(doc))


FORM_ROLES: dict[str, Role | None] = {"editor": "editor", "viewer": "viewer", "none": None}


def apply_live(server: collab.Server, login: str, doc: str, role: Role | None) -> int:
    """Apply a new role to ``login``'s open connections to ``doc``; how many there were.

    ``Server.set_read_only`` and ``Server.disconnect`` act on every document of
    a user; here only one document changes, so its connections are picked out.
    """
    conns = [c for c in server.connections(login) if c.doc == doc]
    for conn in conns:
        if role is None:
            conn.close(collab.CloseCode.FORBIDDEN, "access revoked")
        else:
            conn.can_write = role in ("owner", "editor")
    return len(conns)


# -- word count and assistant ---------------------------------------------------------


async def word_count(request: web.Request) -> web.Response:
    user = await current_user(request)
    if user is None:
        return _api_error(401, "unauthenticated", "sign in first")
    doc = request.match_info["doc"]
    if doc not in await request.app[DB].roles(user.login):
        return _api_error(403, "forbidden", f"you have no access to {doc!r}")
    hooks = request.app[HOOKS]
    count = hooks.counts.get(doc) or await hooks.recount(doc)
    return web.json_response(
        {
            "doc": doc,
            "words": count.words,
            "characters": count.characters,
            "updated_at": count.updated_at,
            "authors": list(count.authors),
            "changes": count.changes,
        },
        headers={"Cache-Control": "no-store"},
    )


async def summary(request: web.Request) -> web.Response:
    user = await current_user(request)
    if user is None:
        return _api_error(401, "unauthenticated", "sign in first")
    doc = request.match_info["doc"]
    role = (await request.app[DB].roles(user.login)).get(doc)
    if role not in ("owner", "editor"):
        return _api_error(403, "forbidden", f"you may not change {doc!r}")
    text = await append_summary(request.app[SERVER], doc)
    log.info("assistant summarized %r for %s", doc, user.login)
    return web.json_response({"doc": doc, "summary": text})


# -- webhooks -------------------------------------------------------------------------


async def receive_webhook(request: web.Request) -> web.Response:
    """collab's deliveries: verified (signature and timestamp), kept once per id."""
    body = await request.read()
    try:
        payload = verify(request.app[SECRETS]["webhook"], request.headers, body)
    except (WebhookVerificationError, ValueError) as exc:
        log.warning("webhook refused: %s", exc)
        return _api_error(400, "bad_signature", str(exc))
    fresh = await request.app[DB].record_webhook(request.headers["webhook-id"], payload)
    log.info(
        "webhook %s %s for %r%s",
        request.headers["webhook-id"],
        payload.get("type"),
        (payload.get("data") or {}).get("doc"),
        "" if fresh else " (again: already recorded)",
    )
    return web.Response(status=204)


async def webhooks_page(request: web.Request) -> web.Response:
    user = await signed_in(request)
    docs = set(await request.app[DB].roles(user.login))
    events = await request.app[DB].webhook_events(docs)
    rows = (
        "".join(
            "<tr>"
            f"<td>{time.strftime('%H:%M:%S', time.localtime(e.received_at))}</td>"
            f"<td><code>{_e(e.type)}</code></td><td>{_e(e.doc or '')}</td>"
            f"<td>{_e(', '.join(e.payload.get('data', {}).get('authors', [])))}</td>"
            f"<td>{_e(e.payload.get('data', {}).get('updates', ''))}</td>"
            f"<td><code>{_e(e.id)}</code></td>"
            "</tr>"
            for e in events
        )
        or f'<tr><td colspan="6" class="muted">{NO_EVENTS}</td></tr>'
    )
    status = (
        "Deliveries are on." if WEBHOOK in request.app else "Deliveries are off (--no-webhooks)."
    )
    return page(
        "Webhooks",
        render("webhooks.html", rows_html=rows, status_html=_e(status)),
        user=user.login,
    )


def _e(value: object) -> str:
    return html.escape(str(value))
