"""The HTTP document API: list, read, export, import and delete documents.

Reads come from the live room when the document is open (so they show
what editors see right now) and from the store otherwise; writes always
go through the room, so they are broadcast and stored like any edit.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from aiohttp import web
from pycrdt import Array, Doc, Map, Text, XmlFragment

from .auth import AuthError, Grant, authorize
from .closecodes import CloseCode
from .keys import MANAGER, METRICS, SETTINGS, STORE
from .origins import LOCAL
from .protocol import ProtocolError
from .store import CorruptDocument
from .ws import document_name

log = logging.getLogger("collab.http")

routes = web.RouteTableDef()


def require(request: web.Request, doc: str | None, *, write: bool) -> Grant:
    """The caller's grant for ``doc`` (None: listing), or a 401/403 response."""
    settings = request.app[SETTINGS]
    try:
        return authorize(request, settings.auth_secret, doc, write=write)
    except AuthError as exc:
        request.app[METRICS].refused(exc.metric)
        raise exc.http() from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _current_update(request: web.Request, name: str) -> bytes:
    """The document's whole state: from its room if open, else from the store."""
    room = request.app[MANAGER].rooms.get(name)
    if room is not None:
        return room.doc.get_update()
    try:
        update = await request.app[STORE].load(name)
    except CorruptDocument as exc:
        log.error("document %r cannot be read: %s", name, exc)
        raise web.HTTPInternalServerError(text=f"document {name!r} is corrupt: {exc}") from None
    if update is None:
        raise web.HTTPNotFound(text=f"no document named {name!r}")
    return update


def _probe(update: bytes, kind: type[Any]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    values = {}
    for key in list(doc.keys()):
        try:
            values[key] = doc.get(key, type=kind)
        except ValueError:
            continue
    return values


def _json_numbers(value: Any) -> Any:
    """Yjs numbers are doubles; show whole ones as integers, as JavaScript does."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    return value


def document_content(update: bytes) -> dict[str, Any]:
    """Each root as JSON: ``Text`` as a string, ``Map``/``Array`` as JSON, XML as a string.

    A Yjs update does not record root types, so each root is read as every
    kind and the reading that finds content wins (an empty root reads as "").
    """
    maps, texts, arrays, xmls = (_probe(update, kind) for kind in (Map, Text, Array, XmlFragment))
    content: dict[str, Any] = {}
    for key in sorted(set(maps) | set(texts) | set(arrays) | set(xmls)):
        if key in maps and len(maps[key]):
            content[key] = _json_numbers(maps[key].to_py())
        elif key in texts and str(texts[key]):
            content[key] = str(texts[key])
        else:
            try:
                if key in arrays and len(arrays[key]):
                    content[key] = _json_numbers(arrays[key].to_py())
                else:
                    content[key] = ""
            except ValueError:  # XML children have no JSON form: show the markup
                content[key] = str(xmls[key])
    return content


@routes.get("/api/docs")
async def list_documents(request: web.Request) -> web.Response:
    grant = require(request, None, write=False)
    manager = request.app[MANAGER]
    stored = {info.name: info for info in await request.app[STORE].list()}
    names = sorted(n for n in set(stored) | set(manager.rooms) if grant.covers(n))
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
            }
        )
    return web.json_response({"docs": docs})


@routes.get("/api/docs/{doc:.+}/update")
async def get_update(request: web.Request) -> web.Response:
    name = document_name(request)
    require(request, name, write=False)
    update = await _current_update(request, name)
    sv = request.query.get("sv")
    if sv is not None:
        try:
            doc: Doc[Any] = Doc()
            doc.apply_update(update)
            update = doc.get_update(base64.b64decode(sv, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"sv is not a base64 Yjs state vector: {exc}") from None
    return web.Response(body=update, content_type="application/octet-stream")


@routes.post("/api/docs/{doc:.+}/update")
async def post_update(request: web.Request) -> web.Response:
    name = document_name(request)
    require(request, name, write=True)
    body = await request.read()
    if not body:
        raise web.HTTPBadRequest(text="empty body: expected a binary Yjs update")
    manager = request.app[MANAGER]
    room = await manager.acquire(name)
    try:
        room.apply_update(body, LOCAL)
    except ProtocolError as exc:
        if exc.code == CloseCode.DOCUMENT_TOO_LARGE:
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.app[SETTINGS].max_doc_size, actual_size=len(body)
            ) from None
        raise web.HTTPBadRequest(text=exc.reason) from None
    finally:
        manager.release_if_idle(room)
    return web.json_response({"state_vector": _b64(room.doc.get_state())})


@routes.get("/api/docs/{doc:.+}")
async def get_document(request: web.Request) -> web.Response:
    name = document_name(request)
    require(request, name, write=False)
    update = await _current_update(request, name)
    return web.json_response({"name": name, "content": document_content(update)})


@routes.delete("/api/docs/{doc:.+}")
async def delete_document(request: web.Request) -> web.Response:
    name = document_name(request)
    require(request, name, write=True)
    manager = request.app[MANAGER]
    existed = await manager.delete(name)
    if not existed:
        raise web.HTTPNotFound(text=f"no document named {name!r}")
    return web.json_response({"deleted": name})
