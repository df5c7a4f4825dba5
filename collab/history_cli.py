"""``collab history``, ``collab show --at`` and ``collab restore``: version history from the shell.

They talk to a running server's HTTP API (``collab.remote``), so a restore
reaches every connected editor at once.  A refusal is one line (the API's
message and code), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

COMMANDS = ("history", "show", "restore")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the three commands to ``collab``'s subparsers."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text + ".", parents=[common]
        )
        sub.add_argument("doc", help="document name")
        sub.add_argument(
            "--server",
            metavar="URL",
            default=os.environ.get("COLLAB_SERVER", "http://127.0.0.1:8080"),
            help="the running server [env COLLAB_SERVER, default http://127.0.0.1:8080]",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("COLLAB_TOKEN"),
            help="access token for a server started with --auth-secret [env COLLAB_TOKEN]",
        )
        sub.add_argument("--json", action="store_true", help="print the API's JSON answer")
        return sub

    history = command("history", "list a document's editing sessions, newest first")
    history.add_argument("--limit", type=int, default=20, help="sessions to show (default 20)")
    history.add_argument("--before", type=int, metavar="SEQ", help="only sessions before SEQ")
    history.add_argument(
        "--gap", type=float, default=60.0, metavar="SECONDS",
        help="a pause this long starts a new session (default 60)",
    )  # fmt: skip
    show = command("show", "print a document's text as it was at a point")
    show.add_argument(
        "--at", required=True, metavar="POINT", help="a seq, an ISO time or a version id (v_...)"
    )
    restore = command(
        "restore", "restore a document to a point, or undo some authors' changes since"
    )
    restore.add_argument(
        "--to", required=True, metavar="POINT", help="a seq, an ISO time or a version id"
    )
    restore.add_argument(
        "--by",
        action="append",
        metavar="AUTHOR",
        help="undo only this author's changes since the point (repeat for several)",
    )
    restore.add_argument("--key", help="Idempotency-Key: a retry with it restores nothing again")


async def run(args: argparse.Namespace) -> int:
    """Run one of ``COMMANDS``; ``CommandError`` (one line) when the server refuses."""
    from .cli import CommandError
    from .remote import History, RemoteError

    try:
        async with History(args.server, token=args.token) as history:
            if args.command == "history":
                page = await history.sessions(
                    args.doc, limit=args.limit, before=args.before, gap_ms=int(args.gap * 1000)
                )
                _print(args, page, _history_lines(page))
            elif args.command == "show":
                at = await history.at(args.doc, args.at)
                text = at["text"]
                if text is None or args.json:
                    print(json.dumps(at if args.json else at["roots"], indent=2))
                else:
                    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
            else:
                done = await history.restore(args.doc, to=args.to, by=args.by, key=args.key)
                point = done["restored_to"]
                what = f"undid {', '.join(args.by)}'s changes since" if args.by else "restored to"
                line = f"{what} seq {point['seq']} ({_when(point['at'])}): " + (
                    f"{done['bytes']} bytes, seq {done['seq']}"
                    if done["seq"] is not None
                    else "nothing to change"
                )
                _print(args, done, [f"{args.doc}: {line}"])
    except RemoteError as exc:
        extra = ""
        nearest = exc.body.get("nearest")
        if isinstance(nearest, dict):
            extra = f" (nearest point kept: seq {nearest.get('seq')})"
        raise CommandError(f"{args.doc}: {exc.message}{extra} [{exc.code}]") from None
    return 0


def _print(args: argparse.Namespace, body: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print("\n".join(lines))


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def _history_lines(page: dict[str, Any]) -> list[str]:
    lines = []
    for s in page["sessions"]:
        span = f"{s['from_seq']}-{s['to_seq']}" if s["from_seq"] != s["to_seq"] else s["from_seq"]
        if s.get("thinned"):
            lines.append(f"seq {span:<13} {_when(s['to_at'])}  (checkpoint; older log thinned)")
            continue
        who = ", ".join(s["authors"]) or "?"
        lines.append(
            f"seq {span:<13} {_when(s['from_at'])} .. {_when(s['to_at'])[11:]}  "
            f"{who}  ({s['updates']} updates, {s['bytes']} bytes)"
        )
    if not lines:
        lines.append("(no history)")
    for v in page.get("versions", []):
        lines.append(f"version {v['id']} at seq {v['seq']} ({_when(v['at'])}): {v['label']!r}")
    if page.get("next") is not None:
        lines.append(f"older: --before {page['next']}")
    return lines
