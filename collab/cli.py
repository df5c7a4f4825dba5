"""The ``collab`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

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

    def document_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text + ".")
        where = sub.add_mutually_exclusive_group()
        where.add_argument(
            "--store",
            metavar="URL",
            help="work on this store directly "
            f"[env {Settings.env_name('store')}, default {Settings().store}]",
        )
        where.add_argument(
            "--server",
            metavar="URL",
            help="work through a running server's HTTP API, e.g. http://127.0.0.1:8080",
        )
        return sub

    document_command("ls", "list stored documents with size, update count and last change")
    export = document_command("export", "write a document's state as a binary Yjs update")
    export.add_argument("doc", help="document name")
    export.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    imp = document_command("import", "apply a binary Yjs update (a file from export) to a document")
    imp.add_argument("doc", help="document name")
    imp.add_argument("file", help="update file, or - for stdin")
    compact = commands.add_parser(
        "compact", help="compact documents' update logs into snapshots now"
    )
    compact.add_argument("doc", nargs="?", help="document name (default: every document)")
    compact.add_argument("--store", metavar="URL", help="store URL [env COLLAB_STORE]")

    token = commands.add_parser(
        "token",
        help="print an access token for --auth-secret servers",
        description="Print a signed access token (JWT, HS256) for documents matching --doc.",
    )
    token.add_argument("--doc", required=True, help="document name or glob, e.g. 'team-*' or '*'")
    token.add_argument("--mode", choices=("read", "write"), default="write")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 12h, 7d (default 1h)")
    token.add_argument(
        "--secret", help="signing secret [env COLLAB_AUTH_SECRET, the server's --auth-secret]"
    )

    from .testing import chaos as chaos_runner

    chaos = commands.add_parser(
        "chaos",
        help="many clients editing through a faulty network: check convergence and lost edits",
        description="Run seeded random edits from many clients through a fault-injecting "
        "proxy (latency, bandwidth, partitions, drops, held frames, restarts) against any "
        "Yjs server, heal, and check that every client converged and no acknowledged edit "
        "was lost. Exit 0 pass, 1 divergence or loss, 2 the run could not be made.",
    )
    chaos_runner.add_arguments(chaos)

    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark collab against its peers, in a source checkout (collab bench --help)",
    )
    # The bench has its own parser (bench/run.py): hand it every argument.
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["bench"]:
        return _bench(raw[1:])

    args = parser.parse_args(argv)
    if args.command == "chaos":
        return chaos_runner.main(args)
    if args.command == "serve":
        return _serve(Settings.from_args(args))
    if args.command == "token":
        return _token(args)
    return asyncio.run(_documents(args))


async def _documents(args: argparse.Namespace) -> int:
    from . import admin
    from .app import store_from_settings
    from .store import StoreError

    target: admin.StoreTarget | admin.ServerTarget
    if getattr(args, "server", None):
        target = admin.ServerTarget(args.server)
    else:
        store = store_from_settings(Settings.from_env(store=args.store))
        try:
            await store.open()
        except StoreError as exc:
            print(f"collab: cannot open the store: {exc}", file=sys.stderr)
            return 1
        target = admin.StoreTarget(store)
    try:
        if args.command == "ls":
            print(admin.format_table(await target.list()))
        elif args.command == "export":
            update = await target.export(args.doc)
            if update is None:
                print(f"collab: no document named {args.doc!r}", file=sys.stderr)
                return 1
            if args.output:
                await asyncio.to_thread(Path(args.output).write_bytes, update)
                print(
                    f"wrote {len(update)} bytes of {args.doc!r} to {args.output}", file=sys.stderr
                )
            else:
                sys.stdout.buffer.write(update)
        elif args.command == "import":
            if args.file == "-":
                data = sys.stdin.buffer.read()
            else:
                data = await asyncio.to_thread(Path(args.file).read_bytes)
            await target.import_update(args.doc, data)
            print(f"imported {len(data)} bytes into {args.doc!r}", file=sys.stderr)
        elif args.command == "compact":
            assert isinstance(target, admin.StoreTarget)
            names = [args.doc] if args.doc else [d.name for d in await target.list()]
            for name in names:
                await target.compact(name)
                print(f"compacted {name!r}", file=sys.stderr)
    finally:
        await target.close()
    return 0


def _bench(argv: list[str]) -> int:
    """Run ``scripts/bench.py`` of the checkout collab is installed from."""
    import subprocess

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    if not script.exists():
        print(
            f"collab bench: needs a source checkout (git clone, then scripts/install): "
            f"{script} is missing",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, str(script), *argv])


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '30m', '12h' or '7d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 90s, 30m, 12h, 7d)") from None


def _token(args: argparse.Namespace) -> int:
    from .auth import issue_token

    secret = args.secret or Settings.from_env().auth_secret
    if not secret:
        print("collab token: give --secret or set COLLAB_AUTH_SECRET", file=sys.stderr)
        return 2
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"collab token: {exc}", file=sys.stderr)
        return 2
    print(issue_token(secret, args.doc, args.mode, ttl))
    return 0


def _serve(settings: Settings) -> int:
    from .logs import setup_logging
    from .store import StoreError

    setup_logging(settings.log_level, settings.log_format)

    try:
        run = _event_loop_runner(settings.event_loop)
    except ImportError:
        logging.getLogger("collab").error("--event-loop uvloop: uvloop is not installed")
        return 2
    from .memory import tune_gc

    tune_gc()
    try:
        run(_run_server(settings))
    except StoreError as exc:  # data folder not writable, database unreachable...
        logging.getLogger("collab").error("cannot open the store: %s", exc)
        return 1
    except ValueError as exc:  # a store URL we do not understand
        logging.getLogger("collab").error("%s", exc)
        return 2
    except OSError as exc:  # port taken, interface missing...
        logging.getLogger("collab").error(
            "cannot serve on %s:%d: %s", settings.host, settings.port, exc
        )
        return 1
    return 0


def _event_loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """``asyncio.run`` or ``uvloop.run``: ImportError when uvloop is asked for and missing."""
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return asyncio.run
    return uvloop.run


async def _run_server(settings: Settings) -> None:
    from aiohttp import web

    from .app import create_app, redacted

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
            "collab %s serving http://%s:%d (WebSocket ws://%s:%d/ws/{doc}, store %s, %s)",
            __version__,
            settings.host,
            settings.port,
            settings.host,
            settings.port,
            redacted(settings.store),
            "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        )
        await stop.wait()
        log.info("shutting down: closing connections with 1001 and flushing the store")
    finally:
        # on_shutdown closes every socket with 1001 and flushes the rooms
        # before cleanup closes the store.
        await runner.cleanup()
    log.info("stopped")
