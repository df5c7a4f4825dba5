"""The example bot from the README really works against a server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pycrdt import Text

from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory
from tests.helpers import text_of

BOT = Path(__file__).parent.parent / "scripts" / "example_bot.py"


async def test_example_bot_appends_lines_and_answers_commands(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    reader = await make_client("notes")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BOT), server.ws_url, "notes", "--every", "0.2", "--count", "50"
    )
    try:
        await reader.wait_for(lambda: "[bot] tick 1 at" in text_of(reader), timeout=15)
        reader.doc.get("text", type=Text).insert(0, "/upper shout this\n")
        await reader.wait_for(lambda: "SHOUT THIS\n" in text_of(reader), timeout=15)
        assert "/upper" not in text_of(reader)
    finally:
        proc.kill()
        await proc.wait()
