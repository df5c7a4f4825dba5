#!/usr/bin/env python3
"""An example bot: appends a line every few seconds and answers commands typed into the doc.

    .venv/bin/python scripts/example_bot.py ws://127.0.0.1:8080/ws notes

Type a line such as ``/time`` or ``/upper some words`` (followed by Enter) in
any editor of the document: the bot replaces it with its answer.  It runs
until Ctrl-C (or ``--count`` lines); when no server answers within
``--connect-timeout`` seconds it says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import re
import sys

from pycrdt import TextEvent

import collab

COMMAND = re.compile(r"^/(time|upper|count)\b ?(.*)\n", re.MULTILINE)


def answer(command: str, argument: str, text: str) -> str:
    if command == "time":
        return f"it is {datetime.datetime.now():%H:%M:%S}"
    if command == "upper":
        return argument.upper()
    return f"{len(text.split())} words so far"


async def run(
    url: str,
    name: str,
    *,
    every: float,
    count: int | None,
    token: str | None,
    connect_timeout: float,
) -> None:
    async with collab.connect(
        url, name, token=token, timeout=connect_timeout + 5, connect_timeout=connect_timeout
    ) as session:
        session.set_presence({"user": {"name": "example bot", "color": "#6b7280"}})
        # session.text() counts characters like Python strings do, so the
        # positions a regular expression finds in str(text) can be used as
        # they are (pycrdt's own Text counts UTF-8 bytes).
        text = session.text()
        print(f"connected to {name!r} at {url}; text is {len(text)} characters", flush=True)

        def on_change(event: TextEvent) -> None:
            # Answer after the current transaction ends, not inside it.
            asyncio.get_running_loop().call_soon(answer_commands)

        def answer_commands() -> None:
            content = str(text)
            # Back to front: each answer leaves the positions before it alone.
            for match in reversed(list(COMMAND.finditer(content))):
                reply = answer(match[1], match[2], content) + "\n"
                with session.doc.transaction():
                    text.delete(match.start(), len(match[0]))
                    text.insert(match.start(), reply)

        text.raw.observe(on_change)
        answer_commands()
        ticks = 0
        while count is None or ticks < count:
            await asyncio.sleep(every)
            ticks += 1
            text += f"[bot] tick {ticks} at {datetime.datetime.now():%H:%M:%S}\n"
        await session.drain()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("doc", nargs="?", default="notes")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--count", type=int, default=None, help="stop after this many lines")
    parser.add_argument(
        "--token",
        default=os.environ.get("COLLAB_TOKEN"),
        help="access token, for a server started with --auth-secret [env COLLAB_TOKEN]",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up when no connection could be made for this long (default 10)",
    )
    args = parser.parse_args()
    # The client logs each failed connection attempt as a warning.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        asyncio.run(
            run(
                args.url,
                args.doc,
                every=args.every,
                count=args.count,
                token=args.token,
                connect_timeout=args.connect_timeout,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (collab.ConnectionClosed, collab.CannotConnect, TimeoutError) as exc:
        print(f"example_bot: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
