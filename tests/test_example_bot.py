"""The example bot from the README really works against a server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Text

from collab.testing.server import InProcessServer, free_port
from tests.conftest import ClientFactory
from tests.helpers import text_of

BOT = Path(__file__).parent.parent / "scripts" / "example_bot.py"


@pytest.fixture
async def bot(server: InProcessServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """The example bot on document "notes", a line every 0.2 s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BOT),
        server.ws_url,
        "notes",
        "--every",
        "0.2",
        "--count",
        "500",
        stdout=asyncio.subprocess.PIPE,
    )
    yield proc
    proc.kill()
    await proc.wait()


def without_ticks(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith("[bot] tick"))


async def test_example_bot_appends_lines_and_answers_commands(
    bot: asyncio.subprocess.Process, make_client: ClientFactory
) -> None:
    reader = await make_client("notes")
    await reader.wait_for(lambda: "[bot] tick 1 at" in text_of(reader), timeout=15)
    reader.doc.get("text", type=Text).insert(0, "/upper shout this\n")
    await reader.wait_for(lambda: "SHOUT THIS\n" in text_of(reader), timeout=15)
    assert "/upper" not in text_of(reader)
    assert bot.stdout is not None
    first = (await bot.stdout.readline()).decode()
    assert (
        first == f"connected to 'notes' at {reader.url.rsplit('/', 1)[0]}; text is 0 characters\n"
    )


async def test_example_bot_answers_after_non_ascii_text_without_corrupting_it(
    bot: asyncio.subprocess.Process, make_client: ClientFactory
) -> None:
    editor = await make_client("notes")
    await editor.wait_for(lambda: "[bot] tick 1 at" in text_of(editor), timeout=15)
    editor.doc.get("text", type=Text).insert(0, "Grüße 👋 café\n/upper ümlaut ok\n")
    await editor.wait_for(lambda: "/upper" not in text_of(editor), timeout=15)
    assert without_ticks(text_of(editor)) == "Grüße 👋 café\nÜMLAUT OK\n"


async def test_example_bot_without_a_server_says_so_and_exits_1() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BOT),
        url,
        "notes",
        "--connect-timeout",
        "0.5",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    lines = err.decode().splitlines()
    assert "Traceback" not in err.decode()
    assert any("cannot connect to" in line and "(attempt 1)" in line for line in lines)
    assert lines[-1].startswith(f"example_bot: could not connect to {url}/notes within 0.5 s")
