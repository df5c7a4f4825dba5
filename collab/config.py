"""Every setting of the server: its default, its flag and its environment variable.

Parsed once into a frozen ``Settings``; a command-line flag beats the
``COLLAB_*`` environment variable, which beats the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _setting(default: Any, help: str, *, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(8080, "TCP port to listen on")
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
    unload_grace: float = _setting(
        10.0, "seconds a document stays loaded after its last client leaves", metavar="SECONDS"
    )
    max_message_size: int = _setting(
        16 * 1024 * 1024,
        "largest WebSocket message accepted; bigger ones close the socket with 1009",
        metavar="BYTES",
    )
    heartbeat: float = _setting(
        30.0,
        "seconds between WebSocket pings; a peer that misses one is dropped",
        metavar="SECONDS",
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
    log_level: str = _setting("info", "debug, info, warning or error", metavar="LEVEL")

    @staticmethod
    def env_name(name: str) -> str:
        return "COLLAB_" + name.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by ``COLLAB_*`` variables, overridden by ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None:
                values[f.name] = _convert(f, raw, source=cls.env_name(f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per setting; help shows the variable and the default."""
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            parser.add_argument(
                flag,
                dest=f.name,
                type=_parser_for(f),
                default=None,
                metavar=f.metadata["metavar"] or f.name.upper(),
                help=f"{f.metadata['help']} [env {cls.env_name(f.name)}, default {f.default}]",
            )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Settings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_env(environ, **{k: v for k, v in vars(args).items() if k in names})

    @classmethod
    def table(cls) -> Sequence[tuple[str, str, str, str]]:
        """(flag, env, default, help) rows, for the README."""
        return [
            (
                "--" + f.name.replace("_", "-"),
                cls.env_name(f.name),
                str(f.default),
                f.metadata["help"],
            )
            for f in dataclasses.fields(cls)
        ]


def _parser_for(f: dataclasses.Field[Any]) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float}.get(f.type, str)
    return kind


def _convert(f: dataclasses.Field[Any], raw: str, *, source: str) -> Any:
    try:
        return _parser_for(f)(raw)
    except ValueError:
        raise SystemExit(f"{source}={raw!r} is not a valid {f.type}") from None
