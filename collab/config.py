"""Every setting of the server: its default, its flag and its environment variable.

Parsed once into a frozen ``Settings``; a command-line flag beats the
``COLLAB_*`` environment variable, which beats the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _setting(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    repeat: bool = False,
    maximum: float | None = None,
) -> Any:
    """A setting: ``parse`` turns the flag / variable text into the value.

    ``repeat`` settings are tuples: the flag may be given several times and
    the variable holds a comma-separated list.  Numbers are never negative
    (and at most ``maximum``): a typo such as ``--commit-window -1`` is an
    error, not a setting.
    """
    parse = parse or (_whole if type(default) is int else type(default))
    if type(default) in (int, float):
        parse = _in_range(parse, maximum)
    return field(
        default=default,
        metadata={
            "help": help,
            "metavar": metavar,
            "parse": parse,
            "repeat": repeat,
        },
    )


class _OutOfRange(argparse.ArgumentTypeError, ValueError):
    """argparse prints its message as is; ``from_env`` catches it as a ValueError."""


def _in_range(parse: Callable[[str], Any], maximum: float | None) -> Callable[[str], Any]:
    def bounded(raw: str) -> Any:
        value = parse(raw)
        if not value >= 0:  # also refuses nan
            raise _OutOfRange(f"{raw} is out of range: it must not be negative")
        if maximum is not None and value > maximum:
            raise _OutOfRange(f"{raw} is out of range: at most {maximum:g}")
        return value

    bounded.__name__ = parse.__name__
    return bounded


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    parse.__name__ = "|".join(choices)
    return parse


def _whole(raw: str) -> int:
    """An integer, also written like 1e9 or 64_000_000."""
    value = float(raw)
    if not value.is_integer():
        raise ValueError("expected a whole number")
    return int(value)


_whole.__name__ = "int"


def _boolean(raw: str) -> bool:
    """on/off, true/false, yes/no or 1/0."""
    value = raw.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError("expected on or off")


_boolean.__name__ = "on|off"


def _duration(raw: str) -> float:
    """Seconds, or a number with a unit: ``30d``, ``12h``, ``90m``, ``45s``."""
    text = raw.strip().lower()
    unit = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}.get(text[-1:])
    return float(text[:-1]) * unit if unit is not None else float(text)


_duration.__name__ = "seconds|Nd|Nh|Nm"


def _optional_str(raw: str) -> str | None:
    return raw or None


class _EmptySecret(argparse.ArgumentTypeError, ValueError):
    """argparse prints its message as is; ``from_env`` catches it as a ValueError."""


def _secret(raw: str) -> str:
    """A non-empty secret: an empty one must not quietly start an open server."""
    if not raw:
        raise _EmptySecret(
            "it is empty: give a secret of 32 random bytes or more, or leave the "
            "setting out for an open server"
        )
    return raw


_secret.__name__ = "secret"


def _import_path(raw: str) -> str:
    """``package.module:Name``: checked for shape here, imported when the server starts."""
    module, sep, name = raw.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ValueError("expected module:name, e.g. myapp.hooks:AuditHooks")
    return raw


_import_path.__name__ = "module:name"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(8080, "TCP port to listen on", maximum=65535)
    store: str = _setting(
        "sqlite:///data/collab.db",
        "where documents are kept: sqlite:///PATH (relative) or sqlite:////ABS/PATH, "
        "postgresql://USER@HOST/DB, or memory:// (nothing survives a restart)",
        metavar="URL",
    )
    commit_window: float = _setting(
        0.02,
        "seconds of updates group-committed in one store transaction; "
        "a SIGKILL loses at most this much",
        metavar="SECONDS",
    )
    compact_updates: int = _setting(
        500, "log length (updates) that makes a document compact into one snapshot", metavar="N"
    )
    compact_bytes: int = _setting(
        1024 * 1024, "log size that makes a document compact into one snapshot", metavar="BYTES"
    )
    history_retention: float = _setting(
        30 * 86400.0,
        "how long every update is kept for version history (seconds, or 30d, 12h); older "
        "history thins to hourly, then daily checkpoints; 0 keeps no history",
        metavar="DURATION",
        parse=_duration,
    )
    trash_retention: float = _setting(
        7 * 86400.0,
        "how long a deleted document stays in the trash, undeletable with its history "
        "(seconds, or 7d); 0 deletes at once",
        metavar="DURATION",
        parse=_duration,
    )
    unload_grace: float = _setting(
        10.0, "seconds a document stays loaded after its last client leaves", metavar="SECONDS"
    )
    max_message_size: int = _setting(
        16 * 1024 * 1024,
        "largest WebSocket message accepted; bigger ones close the socket with 1009",
        metavar="BYTES",
    )
    sync_chunk_bytes: int = _setting(
        256 * 1024,
        "a joiner's initial sync bigger than this is sent in pieces of at most this "
        "size, so a slow link never goes 30 s without a message (the stock client "
        "reconnects then); 0 sends it in one message",
        metavar="BYTES",
    )
    heartbeat: float = _setting(
        30.0,
        "seconds of silence after which a connection is pinged; one that does not "
        "answer within half of that is dropped (0 turns pings off)",
        metavar="SECONDS",
    )
    event_loop: str = _setting(
        "auto",
        "event loop of `collab serve`: uvloop (3.5x the joins/s of a 20 MiB document "
        "in the bench), asyncio, or auto (uvloop where installed)",
        parse=_choice("auto", "uvloop", "asyncio"),
    )
    ws_compression: bool = _setting(
        False,
        "accept permessage-deflate when a client offers it (every browser does): "
        "smaller frames, but about 100 KiB of zlib state per connection",
        metavar="on|off",
        parse=_boolean,
    )
    queue_limit: int = _setting(
        64, "queued frames per connection before its backlog is merged", metavar="FRAMES"
    )
    max_queue_bytes: int = _setting(
        64 * 1024 * 1024,
        "merged backlog above which a slow connection is closed with 1013",
        metavar="BYTES",
    )
    stall_timeout: float = _setting(
        30.0,
        "seconds a socket may accept nothing while frames wait before it is closed with 1013",
        metavar="SECONDS",
    )
    awareness_timeout: float = _setting(
        30.0, "seconds before a silent client's presence is dropped", metavar="SECONDS"
    )
    http_session_timeout: float = _setting(
        30.0,
        "seconds an HTTP fallback session (/sse, /poll) lives with no stream or poll "
        "attached and nothing posted; then its client leaves the document",
        metavar="SECONDS",
    )
    redis_url: str | None = _setting(
        None,
        "Redis that links several server processes serving the same documents "
        "(redis://HOST:PORT/N); use a shared store (postgresql://) with it",
        metavar="URL",
        parse=_optional_str,
    )
    redis_prefix: str = _setting(
        "collab", "prefix of the Redis keys, to share one Redis between deployments"
    )
    workers: int = _setting(
        1,
        "server processes sharing the port (Linux SO_REUSEPORT) and the documents, "
        "through --redis-url or else a private redis-server; 0 = one per core",
        metavar="N",
        maximum=1024,
    )
    hook: tuple[str, ...] = _setting(
        (),
        "hooks to run, as module:name of a Hooks class or object (repeatable, in order; "
        "see docs/embedding.md)",
        metavar="MODULE:NAME",
        parse=_import_path,
        repeat=True,
    )
    webhook_url: tuple[str, ...] = _setting(
        (),
        "URL that receives signed document events (repeatable; needs --webhook-secret)",
        metavar="URL",
        parse=str,
        repeat=True,
    )
    webhook_secret: str | None = _setting(
        None,
        "key that signs webhook deliveries (Standard Webhooks: whsec_<base64> or any string)",
        metavar="SECRET",
        parse=_secret,
    )
    webhook_events: tuple[str, ...] = _setting(
        ("doc.persisted", "doc.created", "doc.deleted", "doc.restored"),
        "webhook event types to deliver (repeatable)",
        metavar="TYPE",
        parse=_choice("doc.persisted", "doc.created", "doc.deleted", "doc.restored"),
        repeat=True,
    )
    webhook_retry: tuple[float, ...] = _setting(
        (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
        "seconds before each retry of a failed webhook delivery, give or take a fifth "
        "(repeatable; Retry-After is honoured; after the last one it is marked failed)",
        metavar="SECONDS",
        parse=float,
        repeat=True,
    )
    webhook_content: bool = _setting(
        False,
        "include the document's JSON (up to 256 KiB) in doc.persisted deliveries",
        parse=_boolean,
    )
    auth_secret: str | None = _setting(
        None,
        "HS256 secret that signs access tokens (32 bytes or more; empty is refused); "
        "without it the server is open to everyone",
        metavar="SECRET",
        parse=_secret,
    )
    allowed_origin: tuple[str, ...] = _setting(
        (),
        "browser origin allowed to open sockets and send writes besides the server's "
        "own (repeatable; * allows any)",
        metavar="ORIGIN",
        parse=str,
        repeat=True,
    )
    allowed_host: tuple[str, ...] = _setting(
        (),
        "Host header a server without --auth-secret answers besides localhost, IP "
        "addresses and --host, against DNS rebinding (repeatable; .example.com "
        "allows its subdomains, * any)",
        metavar="HOST",
        parse=str,
        repeat=True,
    )
    request_timeout: float = _setting(
        15.0,
        "seconds a connection may take to send a complete request line and headers, "
        "and may stay idle between HTTP requests, before it is closed",
        metavar="SECONDS",
    )
    max_connections: int = _setting(
        10_000, "open WebSocket connections in total; more are closed with 1013", metavar="N"
    )
    max_connections_per_doc: int = _setting(
        1_000, "open connections per document; more are closed with 1013", metavar="N"
    )
    max_doc_size: int = _setting(
        128 * 1024 * 1024,
        "encoded size a document may reach; updates beyond it are refused (close 4413)",
        metavar="BYTES",
    )
    max_doc_memory: int = _setting(
        1024 * 1024 * 1024,
        "memory a document may take, estimated from its structs (nested maps cost ~50x "
        "their encoded size); updates beyond it are refused (close 4413)",
        metavar="BYTES",
    )
    max_waiting_bytes: int = _setting(
        256 * 1024,
        "bytes of updates that may wait for missing dependencies per document (dropped "
        "after 30 s); beyond it the sender is closed with 4413",
        metavar="BYTES",
    )
    max_nesting: int = _setting(
        64,
        "how deeply shared types and JSON values may nest in a document (close 1007)",
        metavar="N",
    )
    max_awareness_entries: int = _setting(
        2048,
        "presence entries one awareness message may carry (close 1008); a client sends "
        "its own and echoes the room's",
        metavar="N",
    )
    max_name_length: int = _setting(
        512, "longest document name; longer ones are refused with HTTP 400", metavar="CHARS"
    )
    rate_messages: float = _setting(
        500.0,
        "messages per second a connection may send (bursts of twice that); "
        "faster ones are closed with 4429",
        metavar="N",
    )
    rate_bytes: float = _setting(
        8 * 1024 * 1024,
        "bytes per second a connection may send (bursts of twice that, at least one "
        "maximum-size message); faster ones are closed with 4429",
        metavar="BYTES",
    )
    api_rate: float = _setting(
        100.0,
        "HTTP API requests per second per client (its token, else its address), bursts "
        "of twice that; a response costs one more per MiB; beyond it: 429 (0: no limit)",
        metavar="N",
    )
    log_level: str = _setting(
        "info",
        "debug, info, warning or error",
        metavar="LEVEL",
        parse=_choice("debug", "info", "warning", "error"),
    )
    log_format: str = _setting(
        "text",
        "text for people, json for log collectors (one object per line)",
        metavar="FORMAT",
        parse=_choice("text", "json"),
    )

    @staticmethod
    def env_name(name: str) -> str:
        return "COLLAB_" + name.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by ``COLLAB_*`` variables, overridden by ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            source = cls.env_name(f.name)
            raw = environ.get(source)
            if raw is None:
                continue
            if f.metadata["repeat"]:
                items = [item.strip() for item in raw.split(",") if item.strip()]
                values[f.name] = tuple(_convert(f, item, source=source) for item in items)
            else:
                values[f.name] = _convert(f, raw, source=source)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per setting; help shows the variable and the default."""
        for f in dataclasses.fields(cls):
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                type=f.metadata["parse"],
                action="append" if f.metadata["repeat"] else "store",
                default=None,
                metavar=f.metadata["metavar"] or f.name.upper(),
                help=f"{f.metadata['help']} [env {cls.env_name(f.name)}, default {_shown(f)}]",
            )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Settings:
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name, None)
            values[f.name] = tuple(value) if f.metadata["repeat"] and value else value
        return cls.from_env(environ, **values)

    @classmethod
    def table(cls) -> Sequence[tuple[str, str, str, str]]:
        """(flag, env, default, help) rows, for the README."""
        return [
            (_flag(f.name), cls.env_name(f.name), _shown(f), f.metadata["help"])
            for f in dataclasses.fields(cls)
        ]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(f: dataclasses.Field[Any]) -> str:
    if f.default is None:
        return "none"
    if f.metadata["repeat"]:
        default: tuple[object, ...] = f.default  # type: ignore[assignment]
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) or "none"
    return str(f.default)


def _convert(f: dataclasses.Field[Any], raw: str, *, source: str) -> Any:
    parse = f.metadata["parse"]
    try:
        return parse(raw)
    except ValueError as exc:
        raise SystemExit(f"{source}={raw!r} is not a valid {parse.__name__}: {exc}") from None
