"""The ``collab`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="collab", description="Real-time collaborative editing backend (Yjs protocol)."
    )
    parser.add_argument("--version", action="version", version=f"collab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve documents over WebSocket",
        description="Serve documents over WebSocket at ws://HOST:PORT/ws/{doc}. "
        "Every flag can also be set with the environment variable shown.",
    )
    Settings.add_arguments(serve)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(Settings.from_args(args))
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from .app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    log = logging.getLogger("collab")
    log.info(
        "collab %s serving ws://%s:%d/ws/{doc} (store %s)",
        __version__,
        settings.host,
        settings.port,
        settings.store,
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=10.0,
        handle_signals=True,
    )
    log.info("stopped")
    return 0
