"""The ``collab`` command.

Every failure is one line on stderr and a non-zero exit code: known errors
are mapped to what went wrong and what to do; anything else is reported
as unexpected, with ``--debug`` for the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import Settings


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exits with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    # The bench has its own parser (bench/run.py): hand it every argument.
    if raw[:1] == ["bench"]:
        return _bench(raw[1:])
    args = _parser().parse_args(raw)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message, status = _explain(exc)
        print(f"collab {args.command}: {message}", file=sys.stderr)
        return status


def _run(args: argparse.Namespace) -> int:
    if args.command == "chaos":
        from .testing import chaos as chaos_runner

        # It breaks connections on purpose: the clients' retry warnings are noise.
        logging.getLogger("collab.client").setLevel(logging.ERROR)
        return chaos_runner.main(args)
    if args.command == "serve":
        return _serve(Settings.from_args(args))
    if args.command == "token":
        return _token(args)
    from . import history_cli

    if args.command in history_cli.COMMANDS:
        return asyncio.run(history_cli.run(args))
    # Libraries' warnings (a pool retrying a database) would bury the one
    # line that says what failed.
    # (psycopg sets its own logger's level, so the filter is on the handler.)
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(handlers=[handler])
    return asyncio.run(_documents(args))


def _explain(exc: Exception) -> tuple[str, int]:
    """One line and an exit status for an exception that reached the top."""
    import aiohttp

    from .store import StoreError

    if isinstance(exc, CommandError):
        return str(exc), exc.status
    if isinstance(exc, StoreError):
        return f"store: {exc}", 1
    if isinstance(exc, aiohttp.ClientError):
        return f"HTTP request failed: {exc}", 1
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}", 1
    if isinstance(exc, TimeoutError):
        return "timed out", 1
    name = type(exc).__name__
    return f"unexpected {name}: {exc} (run again with --debug for the traceback)", 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the command; the command's own
    # default must not reset a --debug given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an unexpected error",
    )
    parser = _Parser(
        prog="collab",
        description="Real-time collaborative editing backend (Yjs protocol).",
        parents=[common],
    )
    parser.set_defaults(debug=False)
    parser.add_argument("--version", action="version", version=f"collab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve documents over WebSocket",
        description="Serve documents over WebSocket at ws://HOST:PORT/ws/{doc}. "
        "Every flag can also be set with the environment variable shown.",
    )
    Settings.add_arguments(serve)

    def document_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text + ".", parents=[common]
        )
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
        sub.add_argument(
            "--token",
            default=os.environ.get("COLLAB_TOKEN"),
            help="access token for a --server started with --auth-secret [env COLLAB_TOKEN]",
        )
        return sub

    document_command("ls", "list stored documents with size, update count and last change")
    export = document_command("export", "write a document's state as a binary Yjs update")
    export.add_argument("doc", help="document name")
    export.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    imp = document_command(
        "import",
        "apply a binary Yjs update (a file from export) to a document; through the "
        "server when one runs at COLLAB_HOST:COLLAB_PORT and no --store is given, so "
        "its editors see the import at once",
    )
    imp.add_argument("doc", help="document name")
    imp.add_argument("file", help="update file, or - for stdin")
    compact = commands.add_parser(
        "compact", help="compact documents' update logs into snapshots now", parents=[common]
    )
    compact.add_argument("doc", nargs="?", help="document name (default: every document)")
    compact.add_argument("--store", metavar="URL", help="store URL [env COLLAB_STORE]")

    token = commands.add_parser(
        "token",
        parents=[common],
        help="print an access token for --auth-secret servers",
        description="Print a signed access token (JWT, HS256) for the document --doc "
        "or the documents matching --pattern.",
    )
    scope = token.add_mutually_exclusive_group(required=True)
    scope.add_argument("--doc", help="the one document the token opens, named exactly")
    scope.add_argument(
        "--pattern", help="glob of the documents it opens, e.g. 'team-*' or '*' ([[] is a [)"
    )
    token.add_argument("--mode", choices=("read", "write"), default="write")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 12h, 7d (default 1h)")
    token.add_argument(
        "--secret", help="signing secret [env COLLAB_AUTH_SECRET, the server's --auth-secret]"
    )

    from . import history_cli

    history_cli.add_commands(commands, common)

    from .testing import chaos as chaos_runner

    chaos = commands.add_parser(
        "chaos",
        parents=[common],
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
    return parser


async def _documents(args: argparse.Namespace) -> int:
    from . import admin

    data = _read_update(args.file) if args.command == "import" else b""
    target = await _target(args)
    try:
        if args.command == "ls":
            print(admin.format_table(await target.list()))
        elif args.command == "export":
            update = await target.export(args.doc)
            if update is None:
                raise CommandError(f"no document named {args.doc!r}")
            if args.output:
                await asyncio.to_thread(Path(args.output).write_bytes, update)
                print(
                    f"wrote {len(update)} bytes of {args.doc!r} to {args.output}", file=sys.stderr
                )
            else:
                sys.stdout.buffer.write(update)
        elif args.command == "import":
            await target.import_update(args.doc, data)
            print(f"imported {len(data)} bytes into {args.doc!r}", file=sys.stderr)
            if isinstance(target, admin.StoreTarget):
                await _warn_if_served(args.doc)
        elif args.command == "compact":
            assert isinstance(target, admin.StoreTarget)
            names = [args.doc] if args.doc else [d.name for d in await target.list()]
            for name in names:
                await target.compact(name)
                print(f"compacted {name!r}", file=sys.stderr)
    finally:
        await target.close()
    return 0


def _read_update(file: str) -> bytes:
    """The bytes of an import, checked before any store is opened or created."""
    from .admin import check_update

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None
    check_update(data)
    return data


#: Commands that only read: they never create a store that is not there.
_READ_ONLY = frozenset({"ls", "export", "compact"})


async def _target(args: argparse.Namespace) -> Any:
    """Where a document command works: a server's HTTP API or a store."""
    from . import admin

    if getattr(args, "server", None):
        return admin.ServerTarget(args.server, token=args.token)
    if args.command == "import" and not args.store:
        # A store-direct import is not seen by a running server's open
        # documents until they reload: go through the server instead.
        running = await _running_server()
        if running is not None:
            print(
                f"importing through the server running at {running} "
                "(--store works on the store directly)",
                file=sys.stderr,
            )
            return admin.ServerTarget(running, token=args.token)
    return admin.StoreTarget(await _open_store(args.store, create=args.command not in _READ_ONLY))


async def _open_store(url: str | None, *, create: bool) -> Any:
    """The opened store ``url`` (default: as for serve) names; say which one on stderr."""
    from .app import redacted
    from .server import store_from_settings
    from .store import StoreError

    settings = Settings.from_env(store=url)
    try:
        store = store_from_settings(settings)
    except ValueError as exc:  # an unknown scheme, a malformed URL
        raise CommandError(str(exc), 2) from None
    except ImportError as exc:  # postgresql:// without psycopg
        raise CommandError(str(exc), 2) from None
    path = getattr(store, "path", None)
    where = _sqlite_file(settings.store, path, create) if isinstance(path, str) else None
    print(f"store: {where or redacted(settings.store)}", file=sys.stderr)
    try:
        await store.open()
    except StoreError as exc:
        raise CommandError(f"cannot open the store: {exc}") from None
    return store


def _sqlite_file(url: str, path: str, create: bool) -> str:
    """The absolute path of a SQLite store; ``CommandError`` if absent and not ``create``."""
    where = os.path.abspath(path)
    if not create and not os.path.exists(where):
        hint = ""
        if not os.path.isabs(path):
            hint = (
                f" ({url} is relative to the working directory; "
                f"sqlite:///{where} names an absolute path)"
            )
        raise CommandError(f"no store at {where}{hint}")
    return where


async def _running_server(timeout: float = 1.0) -> str | None:
    """The URL of a collab server answering at COLLAB_HOST:COLLAB_PORT, if one does."""
    import aiohttp

    settings = Settings.from_env()
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # every interface: loopback is one of them
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(f"{url}/healthz") as resp,
        ):
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    if isinstance(body, dict) and "store" in body and "connections" in body:
        return url
    return None


async def _warn_if_served(doc: str) -> None:
    running = await _running_server()
    if running is not None:
        print(
            f"note: a server is running at {running}: if it has {doc!r} open, its editors "
            f"see this import only after the document reloads (--server {running} "
            "reaches them at once)",
            file=sys.stderr,
        )


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

    secret = args.secret or os.environ.get(Settings.env_name("auth_secret"))
    if not secret:
        raise CommandError("give --secret or set COLLAB_AUTH_SECRET", 2)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    if not ttl > 0:
        raise CommandError(f"--ttl must be positive: a token of {args.ttl} is born expired", 2)
    if len(secret.encode()) < 32:
        print(
            f"warning: the secret is {len(secret.encode())} bytes; use 32 random bytes or more",
            file=sys.stderr,
        )
    with warnings.catch_warnings():  # PyJWT's InsecureKeyLengthWarning: said above
        warnings.simplefilter("ignore")
        glob = args.pattern is not None
        token = issue_token(secret, args.pattern if glob else args.doc, args.mode, ttl, glob=glob)
    print(token)
    return 0


def _serve(settings: Settings) -> int:
    from . import workers
    from .logs import setup_logging
    from .store import StoreError

    if workers.worker_index() is not None:  # started by the supervisor below
        settings = workers.inherited_settings()
    setup_logging(settings.log_level, settings.log_format)
    workers.tag_logs()  # a worker's lines say which worker
    if workers.worker_index() is None and workers.worker_count(settings) > 1:
        return workers.supervise(settings)  # --workers 0 on one core: no supervisor

    try:
        run = _event_loop_runner(settings.event_loop)
    except ImportError:
        logging.getLogger("collab").error("--event-loop uvloop: uvloop is not installed")
        return 2
    from .memory import tune_gc

    tune_gc()
    from .rlimits import raise_open_files

    raise_open_files(settings.max_connections)  # most systems start at 1,024 sockets
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

    from . import workers
    from .app import create_app, redacted

    log = logging.getLogger("collab")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    try:
        # A worker of --workers shares the port with its siblings (SO_REUSEPORT).
        reuse_port = True if workers.worker_index() is not None else None
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port)
        await site.start()
        # The port actually bound: the one asked for, or the free one of --port 0.
        port = runner.addresses[0][1] if runner.addresses else settings.port
        log.info(
            "collab %s serving http://%s:%d (WebSocket ws://%s:%d/ws/{doc}, store %s, %s)",
            __version__,
            settings.host,
            port,
            settings.host,
            port,
            redacted(settings.store),
            "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        )
        workers.announce_ready()
        await stop.wait()
        log.info("shutting down: closing connections with 1001 and flushing the store")
    finally:
        # on_shutdown closes every socket with 1001 and flushes the rooms
        # before cleanup closes the store.
        await runner.cleanup()
    log.info("stopped")
