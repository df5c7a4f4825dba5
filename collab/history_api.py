"""The HTTP routes of version history and the trash (docs/history.md describes each).

Read tokens see a document's history, diffs and versions; write tokens
restore, save and delete versions, and undelete or purge from the trash.
Every failure is JSON (``collab.apierror``), also a pycrdt panic: a
``PanicException`` is a ``BaseException``, so each handler runs behind a
boundary that turns it into a 500 instead of letting it kill the request
task.  The work itself is ``collab.history.History``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .apierror import ApiError, json_object
from .history import History, HistoryError, iso, version_json
from .http_api import DOC, require
from .keys import SERVER, SETTINGS
from .store import StoreError
from .ws import document_name

log = logging.getLogger("collab.http")

routes = web.RouteTableDef()

#: Longest label of a named version.
MAX_LABEL = 200
#: Most sessions one history page returns.
MAX_LIMIT = 500
#: Longest Idempotency-Key accepted.
MAX_KEY = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Answer ``HistoryError``, store failures and Rust panics as JSON errors."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HistoryError as exc:
            raise _api_error(exc) from None
        except StoreError as exc:
            raise ApiError(
                503,
                "store_unavailable",
                f"the store cannot answer: {exc}",
                headers={"Retry-After": "5"},
            ) from None
        except (ApiError, web.HTTPException):
            raise
        except Exception:
            raise  # the JSON-error middleware logs it and answers 500
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            log.error("%s %s: pycrdt panicked: %s", request.method, request.path, exc)
            raise ApiError(
                500, "history_failed", "the CRDT library failed on this document; it was logged"
            ) from None

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


class _HistoryApiError(ApiError):
    """An ``ApiError`` whose JSON carries more fields (``nearest`` of a 409)."""

    def __init__(self, exc: HistoryError) -> None:
        super().__init__(exc.status, exc.code, exc.message)
        self.extra = exc.extra

    def response(self) -> web.Response:
        body = {"error": self.code, "message": self.message, **self.extra}
        return web.json_response(body, status=self.status)


def _api_error(exc: HistoryError) -> ApiError:
    return _HistoryApiError(exc)


def _engine(request: web.Request) -> History:
    history: History = request.app[SERVER].history_engine
    return history


def _int(request: web.Request, key: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{key} must be a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_request", f"{key} must be between {lo} and {hi}")
    return value


# -- reading ------------------------------------------------------------------------------


@routes.get(DOC + "/history")
@guarded
async def get_history(request: web.Request) -> web.Response:
    """Editing sessions, newest first, paginated by ``before``."""
    name = document_name(request)
    await require(request, name, write=False)
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    before = _int(request, "before", None, 0, 2**62)
    gap = _int(request, "gap_ms", 60_000, 0, 30 * 86400 * 1000)
    assert limit is not None and gap is not None
    body = await _engine(request).history(name, limit=limit, before=before, gap_ms=gap)
    return web.json_response(body)


@routes.get(DOC + r"/at/{point:[^/]+}")
@guarded
async def get_at(request: web.Request) -> web.Response:
    """The document at a point: JSON, or ``?format=update`` for the binary state."""
    name = document_name(request)
    await require(request, name, write=False)
    point = request.match_info["point"]
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "update"):
        raise ApiError(400, "invalid_format", "format must be json or update")
    engine = _engine(request)
    if fmt == "update":
        state = await engine.state(name, point)
        return web.Response(
            body=state.update,
            content_type="application/octet-stream",
            headers={"Collab-Seq": str(state.seq), "Collab-At": iso(state.at) or ""},
        )
    return web.json_response(await engine.at(name, point))


@routes.get(DOC + "/diff")
@guarded
async def get_diff(request: web.Request) -> web.Response:
    """Text diff per root plus the Yjs snapshot pair between ``from`` and ``to`` (now)."""
    name = document_name(request)
    await require(request, name, write=False)
    start = request.query.get("from")
    if not start:
        raise ApiError(400, "invalid_point", "from= is required (a seq, ISO time or version id)")
    end = request.query.get("to") or None
    return web.json_response(await _engine(request).diff(name, start, end))


# -- restoring ------------------------------------------------------------------------------


@routes.post(DOC + "/restore")
@guarded
async def post_restore(request: web.Request) -> web.Response:
    """Restore to ``to`` (or undo ``by``'s changes since) as a forward update."""
    name = document_name(request)
    principal = await require(request, name, write=True)
    body = await json_object(request)
    to = body.get("to")
    if not isinstance(to, (str, int)) or isinstance(to, bool):
        raise ApiError(400, "invalid_point", "'to' must be a seq, an ISO time or a version id")
    by = body.get("by")
    if by is not None and (
        not isinstance(by, list) or not by or not all(isinstance(a, str) and a for a in by)
    ):
        raise ApiError(400, "invalid_request", "'by' must be a non-empty list of author ids")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_KEY:
        raise ApiError(400, "invalid_request", f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    result = await _engine(request).restore(name, to, by=by, principal=principal.id, key=key)
    return web.json_response(result)


# -- named versions -------------------------------------------------------------------------


@routes.get(DOC + "/versions")
@guarded
async def get_versions(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=False)
    versions = await _engine(request).versions(name)
    return web.json_response({"versions": [version_json(v) for v in versions]})


@routes.post(DOC + "/versions")
@guarded
async def post_version(request: web.Request) -> web.Response:
    """Name the current state: 201 with the version."""
    name = document_name(request)
    principal = await require(request, name, write=True)
    body = await json_object(request)
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise ApiError(
            400, "invalid_label", f"'label' must be text of at most {MAX_LABEL} characters"
        )
    version = await _engine(request).create_version(name, label, principal.id)
    return web.json_response(version_json(version), status=201)


@routes.delete(DOC + r"/versions/{version:v_[^/]+}")
@guarded
async def delete_version(request: web.Request) -> web.Response:
    name = document_name(request)
    await require(request, name, write=True)
    version_id = request.match_info["version"]
    if not await _engine(request).delete_version(name, version_id):
        raise ApiError(404, "not_found", f"{name!r} has no version {version_id}")
    return web.Response(status=204)


# -- trash ----------------------------------------------------------------------------------


@routes.get("/api/trash")
@guarded
async def get_trash(request: web.Request) -> web.Response:
    """Deleted documents the caller may read, most recently deleted first."""
    principal = await require(request, None, write=False)
    entries = await _engine(request).trash()
    docs: list[dict[str, Any]] = [
        {
            "name": e.name,
            "deleted_at": iso(e.deleted_at),
            "deleted_by": e.deleted_by,
            "purge_at": iso(e.purge_at),
        }
        for e in entries
        if principal.covers(e.name)
    ]
    return web.json_response({"documents": docs})


def _trash_name(request: web.Request) -> str:
    name = request.match_info["doc"]
    limit = request.app[SETTINGS].max_name_length
    if not 1 <= len(name) <= limit or "\x00" in name:
        raise ApiError(400, "invalid_name", f"document name must be 1 to {limit} characters")
    return name


@routes.post(r"/api/trash/{doc:[\s\S]+}/restore")
@guarded
async def post_untrash(request: web.Request) -> web.Response:
    """Undelete: the document comes back with its history."""
    name = _trash_name(request)
    await require(request, name, write=True)
    await _engine(request).untrash(name)
    return web.json_response({"restored": name})


@routes.delete(r"/api/trash/{doc:[\s\S]+}")
@guarded
async def delete_trash(request: web.Request) -> web.Response:
    """Purge: delete the document and its history for good."""
    name = _trash_name(request)
    await require(request, name, write=True)
    if not await _engine(request).purge(name):
        raise ApiError(404, "not_found", f"no document named {name!r} is in the trash")
    return web.Response(status=204)
