"""What reading big documents over the HTTP API costs honest editors (issue #18, finding 4).

    .venv/bin/python -m bench.api_reads                                  # this checkout
    .venv/bin/python -m bench.api_reads --before 327b2ec --after HEAD    # side by side

Like ``bench.attacks`` (whose server, probe and report it reuses): a fresh
``collab serve`` per scenario, two honest clients typing on another
document, and the worst time from one's edit until the other sees it while
two loops GET a fragmented document of a few MB as JSON for ten seconds,
once while nobody edits it (reads can be cached) and once while someone
types into it (every read sees a new version).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from contextlib import suppress
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench.attacks import Result, Server, cells, export, measure
from collab.client import Session

#: Items in the document read: each typed before the previous one, so none merge.
ITEMS = 200_000
SECONDS = 10.0


def fragmented() -> bytes:
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    for _ in range(ITEMS):
        text.insert(0, "ab")
    return doc.get_update()


async def _reads(server: Server, http: aiohttp.ClientSession, result: Result, typing: bool) -> None:
    base = server.url.replace("ws://", "http://")[: -len("/ws")]
    update = await asyncio.to_thread(fragmented)
    async with http.post(f"{base}/api/docs/big/update", data=update) as resp:
        resp.raise_for_status()
    editor = Session(server.url, "big")
    await editor.start()
    await editor.wait_synced(60)
    result.reset()
    statuses: collections.Counter[int] = collections.Counter()
    deadline = time.perf_counter() + SECONDS

    async def read() -> None:
        while time.perf_counter() < deadline:
            async with http.get(f"{base}/api/docs/big") as resp:
                await resp.read()
                statuses[resp.status] += 1
                if resp.status == 429:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

    async def type_into_it() -> None:
        text = editor.doc.get("text", type=Text)
        while time.perf_counter() < deadline:
            text.insert(0, "y")
            await asyncio.sleep(0.05)

    jobs = [read(), read()] + ([type_into_it()] if typing else [])
    await asyncio.gather(*jobs)
    with suppress(Exception):
        await editor.close()
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    result.note = f"{len(update) / 1024 / 1024:.1f} MB document; GETs answered: {answered}"


async def static_reads(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    await _reads(server, http, result, typing=False)


async def reads_while_typed_into(
    server: Server, http: aiohttp.ClientSession, result: Result
) -> None:
    await _reads(server, http, result, typing=True)


SCENARIOS = [
    ("4 JSON reads of an unchanged document", static_reads),
    ("4 JSON reads of a document being typed into", reads_while_typed_into),
]


async def main_async(args: argparse.Namespace) -> int:
    before_tree = export(args.before) if args.before else None
    after_tree = export(args.after) if args.after else None
    from bench.attacks import ROOT

    rows = []
    for name, scenario in SCENARIOS:
        row = f"| {name} |"
        if before_tree is not None:
            before = await measure(before_tree, name, scenario)
            print(f"before: {name}: {cells(before)}", flush=True)
            row += f" {cells(before)} |"
        after = await measure(after_tree or ROOT, name, scenario)
        print(f"after:  {name}: {cells(after)}", flush=True)
        rows.append(f"{row} {cells(after)} |")
    print("\n".join(rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="a git revision to measure first")
    parser.add_argument("--after", help="a git revision to measure (default: this checkout)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
