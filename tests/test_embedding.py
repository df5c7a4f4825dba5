"""collab mounted inside another aiohttp application."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from collab.testing.server import free_port
from tests.helpers import sqlite_store
from tests.jsclient import JsClientFactory

ROOT = Path(__file__).resolve().parent.parent


async def _listening(port: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(20):
        while True:
            assert proc.returncode is None, "the parent app exited at start"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def test_stock_client_syncs_through_a_mounted_collab_and_sigterm_flushes(
    tmp_path: Path, make_js_client: JsClientFactory, require_node: None
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'collab.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.apps.mounted", str(port), url, cwd=ROOT
    )
    try:
        await _listening(port, proc)
        base = f"ws://127.0.0.1:{port}/collab/ws"
        alice = await make_js_client("mounted", url=base)
        bob = await make_js_client("mounted", url=base)
        await alice.insert(0, "typed through /collab/")
        await bob.wait_text("typed through /collab/")
        async with aiohttp.ClientSession() as http:
            hello = await (await http.get(f"http://127.0.0.1:{port}/hello")).json()
            health = await (await http.get(f"http://127.0.0.1:{port}/collab/healthz")).json()
        assert hello == {"app": "parent", "collab_running": True}
        assert health["status"] == "ok"
        # SIGTERM right after the edit: shutdown flushes it to the store.
        await bob.insert(0, "last words, ")
        await alice.wait_text("last words, typed through /collab/")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with sqlite_store(url) as store:
        stored = await store.load("mounted")
    assert stored is not None
    doc: Doc[Any] = Doc()
    doc.apply_update(stored)
    assert str(doc.get("text", type=Text)) == "last words, typed through /collab/"
