"""``python -m examples.notes_app --port 8090 --data DIR [--seed]``"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from .app import Config, create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.notes_app",
        description="A notes app with its own sign-in that embeds collab under /collab/.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="TCP port (default 8090)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("notes-data"),
        help="folder for the app's and collab's SQLite files (default ./notes-data)",
    )
    parser.add_argument(
        "--seed", action="store_true", help="create the demo users ada and bob and two notes"
    )
    parser.add_argument(
        "--no-webhooks",
        dest="webhooks",
        action="store_false",
        help="do not deliver collab's webhooks to this app's receiver",
    )
    parser.add_argument(
        "--secure-cookies", action="store_true", help="mark the session cookie Secure (https)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a domain name the app is reached at (repeatable; IP addresses and localhost "
        "always work)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = Config(
        data=args.data,
        host=args.host,
        port=args.port,
        seed=args.seed,
        webhooks=args.webhooks,
        secure_cookies=args.secure_cookies,
        allowed_hosts=tuple(args.allowed_host),
    )
    app = create_app(config)
    print(f"notes app on http://{args.host}:{args.port}/ (collab under /collab/)", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
