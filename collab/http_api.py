"""The HTTP document API: list, read, export, import, edit as text, rename and delete documents.

Reads come from the live room when the document is open (so they show
what editors see right now) and from the store otherwise; writes always
go through the room, so they are broadcast and stored like any edit.

Reading is kept off the event loop (issue #18, finding 4): decoding a
document runs in ``collab.render``'s worker processes, and what was read
is cached per document version (``collab.readcache``), so a client that
polls a big document costs the editors nothing.  Every error is JSON
(``collab.apierror``); every client has a request budget
(``collab.ratelimit``).  docs/http-api.md describes each route.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from . import render
from .apierror import ApiError, json_errors, json_object, no_route
from .auth import AuthError, authenticate, request_of
from .closecodes import CloseCode
from .guard import add_route
from .hooks import Principal
from .keys import HOOKS, MANAGER, METRICS, SERVER, SETTINGS, STORE
from .origins import LOCAL
from .protocol import ProtocolError
from .ratelimit import rate_limit
from .readcache import ReadCache
from .render import Renderer, RendererBusy, RenderError
from .room import Room
from .store import CorruptDocument, DocInfo, StoreError
from .tokens_api import routes as token_routes
from .ws import document_name

log = logging.getLogger("collab.http")

T = TypeVar("T")

#: Re-exported: the webhooks render documents with it too.
document_content = render.document_content

routes = web.RouteTableDef()

#: A document's path; ``[\s\S]`` because a name may hold a newline (%0A).
DOC = r"/api/docs/{doc:[\s\S]+}"
#: The root a text route reads and writes unless ``?root=`` says otherwise.
DEFAULT_ROOT = "text"
MAX_ROOT_LENGTH = 256
#: The state vector of a document that holds nothing.
EMPTY_STATE = b"\x00"
#: How long a listing waits for lengths it has to compute; the rest are null.
LIST_WAIT = 0.5
#: Lengths computed at once for listings (each loads a document).
LENGTH_SLOTS = 2


@dataclass
class ApiState:
    """The API's own state: its workers, its caches and its per-document locks."""

    renderer: Renderer = field(default_factory=Renderer)
    cache: ReadCache = field(default_factory=ReadCache)
    #: name -> ((size, updated_at) it was computed for, characters of the text root).
    lengths: dict[str, tuple[tuple[int, float], int | None]] = field(default_factory=dict)
    length_tasks: dict[str, asyncio.Task[int | None]] = field(default_factory=dict)
    length_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LENGTH_SLOTS))
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, name: str) -> asyncio.Lock:
        """Serializes the text writes and renames of one document."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock


API = web.AppKey("api", ApiState)


def setup_api(app: web.Application) -> None:
    """Add the API's routes, its JSON errors and rate limit, and its workers' lifecycle."""
    settings = app[SETTINGS]
    app[API] = ApiState()
    from .history_api import routes as history_routes

    limit = rate_limit(settings.api_rate, settings.auth_secret)
    # Before ours: GET {DOC} would take ".../history" for a document name.
    for route in (*token_routes, *history_routes, *routes):
        assert isinstance(route, web.RouteDef), route
        handler = json_errors(limit(route.handler))
        add_route(app, route.method, route.path, handler, **route.kwargs)
    # Last: what matches no route under /api/ still answers JSON.
    add_route(app, "*", "/api", no_route)
    add_route(app, "*", r"/api/{tail:[\s\S]*}", no_route)
    app.on_cleanup.append(_close)
    app.on_cleanup.append(_close_history)


async def _close_history(app: web.Application) -> None:
    await app[SERVER].history_engine.close()


async def _close(app: web.Application) -> None:
    state = app[API]
    for task in state.length_tasks.values():
        task.cancel()
    await state.renderer.close()


async def require(request: web.Request, doc: str | None, *, write: bool) -> Principal:
    """Who the caller is, through the ``authenticate`` hooks (as for a WebSocket), or a JSON
    401/403 saying why not; ``doc`` None is a listing."""
    try:
        return await authenticate(request.app[HOOKS], request_of(request, doc, write=write))
    except AuthError as exc:
        request.app[METRICS].refused(exc.metric)
        raise exc.http() from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no document named {name!r}")


@contextlib.contextmanager
def _store_errors(name: str) -> Iterator[None]:
    try:
        yield
    except CorruptDocument as exc:
        log.error("document %r cannot be read: %s", name, exc)
        raise ApiError(500, "corrupt_document", f"document {name!r} is corrupt: {exc}") from None
    except StoreError as exc:
        raise ApiError(
            503,
            "store_unavailable",
            f"the store cannot answer: {exc}",
            headers={"Retry-After": "5"},
        ) from None


async def _snapshot(request: web.Request, name: str) -> tuple[bytes, Hashable]:
    """The document's whole state and a key of its version: from its room if open, else stored."""
    state = request.app[API]
    room = request.app[MANAGER].rooms.get(name)
    if room is not None:
        return state.cache.update_of(room.doc)
    with _store_errors(name):
        update = await request.app[STORE].load(name)
    if update is None:
        raise _not_found(name)
    if len(update) > render.INLINE_LIMIT:  # hashlib lets go of the GIL for big inputs
        digest = await asyncio.to_thread(_digest, update)
    else:
        digest = _digest(update)
    return update, ("stored", digest)


def _digest(update: bytes) -> bytes:
    return hashlib.blake2b(update, digest_size=16).digest()


async def _run(request: web.Request, fn: Callable[..., T], update: bytes, *args: Any) -> T:
    """``fn(update, *args)`` through the workers, uncached; failures as API errors."""
    try:
        return await request.app[API].renderer.run(fn, update, *args)
    except RenderError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    except RendererBusy as exc:
        raise _busy(exc) from None


def _busy(exc: RendererBusy) -> ApiError:
    return ApiError(
        503, "busy", f"too many documents are being read: {exc}", headers={"Retry-After": "1"}
    )


async def _rendered(
    request: web.Request, kind: str, version: Hashable, fn: Any, update: bytes, *args: Any
) -> Any:
    """``fn(update, *args)`` through the workers, cached per (kind, version, args)."""
    state = request.app[API]

    async def make() -> Any:
        try:
            return await state.renderer.run(fn, update, *args)
        except RenderError as exc:
            return exc  # remembered too: a document that breaks a worker must not do it again

    try:
        value = await state.cache.compute((kind, version, *args), make)
    except RendererBusy as exc:
        raise _busy(exc) from None
    if isinstance(value, RenderError):
        raise ApiError(value.status, value.code, str(value))
    return value


def _root(request: web.Request) -> str:
    root = request.query.get("root", DEFAULT_ROOT)
    if not 1 <= len(root) <= MAX_ROOT_LENGTH:
        raise ApiError(400, "invalid_root", f"root must be 1 to {MAX_ROOT_LENGTH} characters")
    return root


# -- listing ----------------------------------------------------------------------------


@routes.get("/api/docs")
async def list_documents(request: web.Request) -> web.Response:
    principal = await require(request, None, write=False)
    manager = request.app[MANAGER]
    with _store_errors("*"):
        stored = {info.name: info for info in await request.app[STORE].list()}
    names = sorted(n for n in set(stored) | set(manager.rooms) if principal.covers(n))
    lengths = await _lengths(request, names, stored)
    _forget_lengths(request.app[API], set(stored) | set(manager.rooms))
    docs = []
    for name in names:
        info = stored.get(name)
        room = manager.rooms.get(name)
        docs.append(
            {
                "name": name,
                "size": info.size if info else 0,
                "updates": info.updates if info else 0,
                "updated_at": info.updated_at if info else None,
                "connections": len(room.connections) if room else 0,
                "length": lengths.get(name),
            }
        )
    return web.json_response({"docs": docs})


async def _lengths(
    request: web.Request, names: list[str], stored: dict[str, DocInfo]
) -> dict[str, int | None]:
    """Characters of each document's ``text`` root, as of its stored version.

    Cached by (size, updated_at); what is not cached is computed in the
    background, and whatever is not ready within ``LIST_WAIT`` is None
    (the next listing has it).
    """
    state = request.app[API]
    known: dict[str, int | None] = {}
    pending: dict[str, asyncio.Task[int | None]] = {}
    for name in names:
        info = stored.get(name)
        if info is None:
            continue  # open but not stored yet: unknown for now
        version = (info.size, info.updated_at)
        cached = state.lengths.get(name)
        if cached is not None and cached[0] == version:
            known[name] = cached[1]
        else:
            pending[name] = _length_task(request.app, name, version)
    if pending:
        await asyncio.wait(pending.values(), timeout=LIST_WAIT)
        for name, task in pending.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                known[name] = task.result()
    return known


def _length_task(
    app: web.Application, name: str, version: tuple[int, float]
) -> asyncio.Task[int | None]:
    state = app[API]
    task = state.length_tasks.get(name)
    if task is not None and not task.done():
        return task  # the version may be older: the next listing sees the new one

    async def compute() -> int | None:
        try:
            async with state.length_slots:
                update = await app[STORE].load(name)
                length = (
                    None if update is None else await state.renderer.run(render.text_length, update)
                )
        except (StoreError, RendererBusy, RenderError) as exc:
            log.debug("no length for %r: %s", name, exc)
            length = None
        state.lengths[name] = (version, length)
        return length

    task = asyncio.get_running_loop().create_task(compute(), name=f"collab-length-{name}")
    state.length_tasks[name] = task
    task.add_done_callback(
        lambda t: state.length_tasks.pop(name, None) if state.length_tasks.get(name) is t else None
    )
    return task


def _forget_lengths(state: ApiState, existing: set[str]) -> None:
    for name in [n for n in state.lengths if n not in existing]:
        del state.lengths[name]


# -- Yjs updates ------------------------------------------------------------------------


@routes.get(DOC + "/update")
async def get_update(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=False)
    update, _ = await _snapshot(request, name)
    sv = request.query.get("sv")
    if sv is not None:
        try:
            state_vector = base64.b64decode(sv, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, "invalid_state_vector", f"sv is not base64: {exc}") from None
        update = await _run(request, render.diff_update, update, state_vector)
    return web.Response(body=update, content_type="application/octet-stream")


@routes.post(DOC + "/update")
async def post_update(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=True)
    body = await request.read()
    if not body:
        raise ApiError(400, "invalid_update", "empty body: expected a binary Yjs update")
    manager = request.app[MANAGER]
    room = await manager.acquire(name)
    room.hold()  # it waits for the end of the turn: the room must stay
    try:
        await _submit(request, room, body)
    finally:
        room.release()
        manager.release_if_idle(room)
    return web.json_response({"state_vector": _b64(room.doc.get_state())})


async def _submit(request: web.Request, room: Room, update: bytes) -> None:
    """``_apply``, merged with the other updates POSTed in the same event-loop turn:
    appending to a big document costs yrs time in proportion to it per update
    applied (issue #16)."""
    try:
        await room.submit(update, LOCAL)
    except ProtocolError as exc:
        if exc.code == CloseCode.DOCUMENT_TOO_LARGE:
            limit = request.app[SETTINGS].max_doc_size
            raise ApiError(
                413, "too_large", f"the document would exceed --max-doc-size ({limit} bytes)"
            ) from None
        raise ApiError(400, "invalid_update", exc.reason) from None


def _apply(request: web.Request, room: Room, update: bytes) -> None:
    """Apply ``update`` to ``room`` as a local edit, or raise the API error saying why not."""
    try:
        room.apply_update(update, LOCAL)
    except ProtocolError as exc:
        if exc.code == CloseCode.DOCUMENT_TOO_LARGE:
            limit = request.app[SETTINGS].max_doc_size
            raise ApiError(
                413, "too_large", f"the document would exceed --max-doc-size ({limit} bytes)"
            ) from None
        raise ApiError(400, "invalid_update", exc.reason) from None


# -- text -------------------------------------------------------------------------------

_MARKDOWN = "text/markdown"
_FORMATS = {"md": _MARKDOWN, "markdown": _MARKDOWN, "txt": "text/plain", "text": "text/plain"}


def _text_type(request: web.Request) -> str:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in _FORMATS:
            raise ApiError(400, "invalid_format", "format must be md or txt")
        return _FORMATS[fmt]
    return _MARKDOWN if _MARKDOWN in request.headers.get("Accept", "") else "text/plain"


@routes.get(DOC + "/text")
async def get_text(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=False)
    root = _root(request)
    content_type = _text_type(request)
    update, version = await _snapshot(request, name)
    value = await _rendered(request, "text", version, render.text_content, update, root)
    return web.Response(text=value, content_type=content_type, charset="utf-8")


@routes.put(DOC + "/text")
async def put_text(request: web.Request) -> web.Response:
    """Make the root equal the body by a diff applied as an edit: concurrent typing survives."""
    name = document_name(request)
    await require(request, name, write=True)
    root = _root(request)
    # No Content-Type at all reads as application/octet-stream: take it as text.
    content_type = request.content_type
    if not content_type.startswith("text/") and content_type != "application/octet-stream":
        raise ApiError(
            415, "unsupported_media_type", "send the text as text/plain or text/markdown"
        )
    body = await request.read()
    limit = request.app[SETTINGS].max_doc_size
    if len(body) > limit:
        raise ApiError(413, "too_large", f"the text exceeds --max-doc-size ({limit} bytes)")
    try:
        new = body.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise ApiError(400, "invalid_text", "the body is not UTF-8 text") from None
    state = request.app[API]
    manager = request.app[MANAGER]
    async with state.lock(name):  # two writers must not both diff against one version
        room = await manager.acquire(name)
        try:
            update, _ = state.cache.update_of(room.doc)
            diff = await _run(request, render.replace_update, update, root, new)
            # The room stays loaded while we wait (acquire stopped its unload
            # timer), unless an editor came and went meanwhile: ask again.
            room = await manager.acquire(name)
            if diff is not None:
                _apply(request, room, diff)
        finally:
            manager.release_if_idle(room)
    return web.json_response({"name": name, "length": len(new)})


# -- whole documents --------------------------------------------------------------------


@routes.post(DOC + "/rename")
async def rename_document(request: web.Request) -> web.Response:
    """Move the content to a new name, then delete the old one (its editors get 4404)."""
    name = document_name(request)
    body = await json_object(request)
    to = body.get("to")
    limit = request.app[SETTINGS].max_name_length
    if not isinstance(to, str) or not 1 <= len(to) <= limit or "\x00" in to:
        raise ApiError(
            400, "invalid_name", f"'to' must be a document name of 1 to {limit} characters"
        )
    await require(request, name, write=True)
    await require(request, to, write=True)
    if to == name:
        raise ApiError(409, "name_taken", f"the document is named {to!r} already")
    state = request.app[API]
    manager = request.app[MANAGER]
    store = request.app[STORE]
    first, second = sorted((name, to))  # one order for every renamer: no deadlock
    async with state.lock(first), state.lock(second):
        with _store_errors(to):
            taken = to in manager.rooms or await store.info(to) is not None
        if taken:
            raise ApiError(409, "name_taken", f"a document named {to!r} exists already")
        update, _ = await _snapshot(request, name)  # 404 when there is nothing to move
        target = await manager.acquire(to)
        try:
            # No await from here until the old editors are closed: whatever
            # they typed up to now moves along.
            if target.doc.get_state() != EMPTY_STATE:  # someone opened `to` meanwhile
                raise ApiError(409, "name_taken", f"a document named {to!r} exists already")
            source = manager.rooms.get(name)
            if source is not None:
                update = source.doc.get_update()
            _apply(request, target, update)
            if source is not None:
                for conn in list(source.connections):
                    conn.close(CloseCode.NOT_FOUND, "document renamed")
        finally:
            manager.release_if_idle(target)
        # The room hands its changes to the store in a call_soon callback:
        # let it run, then wait until they are durable before deleting.
        await asyncio.sleep(0)
        with _store_errors(to):
            await store.flush()
        with _store_errors(name):
            await manager.delete(name)
    state.lengths.pop(name, None)
    log.info("renamed document %r to %r", name, to)
    return web.json_response({"name": to})


@routes.get(DOC)
async def get_document(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=False)
    update, version = await _snapshot(request, name)
    content = await _rendered(request, "json", version, render.document_json, update)
    body = b'{"name": ' + json.dumps(name).encode() + b', "content": ' + content + b"}"
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.delete(DOC)
async def delete_document(request: web.Request) -> web.Response:
    name = document_name(request)
    principal = await require(request, name, write=True)
    with _store_errors(name):
        existed = await request.app[MANAGER].delete(name, author=principal.id)
    if not existed:
        raise _not_found(name)
    request.app[API].lengths.pop(name, None)
    return web.json_response({"deleted": name})
