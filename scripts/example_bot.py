#!/usr/bin/env python3
"""An example bot: appends a line every few seconds and answers commands typed into the doc.

    .venv/bin/python scripts/example_bot.py ws://127.0.0.1:8080/ws notes

Type a line such as ``/time`` or ``/upper some words`` (followed by Enter) in
any editor of the document: the bot replaces it with its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import re

from pycrdt import Text, TextEvent

import collab

COMMAND = re.compile(r"^/(time|upper|count)\b ?(.*)\n", re.MULTILINE)


def answer(command: str, argument: str, text: str) -> str:
    if command == "time":
        return f"it is {datetime.datetime.now():%H:%M:%S}"
    if command == "upper":
        return argument.upper()
    return f"{len(text.split())} words so far"


async def run(url: str, name: str, every: float, count: int | None) -> None:
    async with collab.connect(url, name) as session:
        session.set_presence({"user": {"name": "example bot", "color": "#6b7280"}})
        text = session.doc.get("text", type=Text)
        print(f"connected to {name!r} at {url}; text is {len(text)} characters")

        def on_change(event: TextEvent) -> None:
            # Answer after the current transaction ends, not inside it.
            asyncio.get_running_loop().call_soon(answer_commands)

        def answer_commands() -> None:
            content = str(text)
            for match in reversed(list(COMMAND.finditer(content))):
                reply = answer(match[1], match[2], content) + "\n"
                with session.doc.transaction():
                    del text[match.start() : match.end()]
                    text.insert(match.start(), reply)

        text.observe(on_change)
        answer_commands()
        ticks = 0
        while count is None or ticks < count:
            await asyncio.sleep(every)
            ticks += 1
            text += f"[bot] tick {ticks} at {datetime.datetime.now():%H:%M:%S}\n"
        await session.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("doc", nargs="?", default="notes")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--count", type=int, default=None, help="stop after this many lines")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.url, args.doc, args.every, args.count))


if __name__ == "__main__":
    main()
