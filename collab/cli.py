"""The ``collab`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
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
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        asyncio.run(_run_server(settings))
    except OSError as exc:  # port taken, interface missing...
        logging.getLogger("collab").error(
            "cannot serve on %s:%d: %s", settings.host, settings.port, exc
        )
        return 1
    return 0


async def _run_server(settings: Settings) -> None:
    from aiohttp import web

    from .app import create_app

    log = logging.getLogger("collab")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info(
            "collab %s serving http://%s:%d (WebSocket ws://%s:%d/ws/{doc}, store %s)",
            __version__,
            settings.host,
            settings.port,
            settings.host,
            settings.port,
            settings.store,
        )
        await stop.wait()
        log.info("shutting down: closing connections with 1001 and flushing the store")
    finally:
        # on_shutdown closes every socket with 1001 and flushes the rooms
        # before cleanup closes the store.
        await runner.cleanup()
    log.info("stopped")
