"""The collab command: settings from flags and environment, serving, clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import subprocess
import sys

import aiohttp
import pytest
from pycrdt import Text

from collab import protocol
from collab.client import Session
from collab.closecodes import CloseCode
from collab.config import Settings
from collab.testing.server import ServerProcess
from tests.helpers import eventually


def test_serve_help_lists_every_setting_with_its_variable_and_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "collab", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    rows = Settings.table()
    assert len(rows) == len(dataclasses.fields(Settings))
    for flag, env, default, _ in rows:
        assert flag in out
        assert f"env {env}, default {default}" in flat


def test_flag_beats_environment_beats_default() -> None:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    env = {"COLLAB_PORT": "9001", "COLLAB_HEARTBEAT": "5"}
    assert Settings.from_args(parser.parse_args([]), env).port == 9001
    assert Settings.from_args(parser.parse_args(["--port", "9002"]), env).port == 9002
    assert Settings.from_args(parser.parse_args([]), env).heartbeat == 5.0
    assert Settings.from_args(parser.parse_args([]), {}).port == 8080


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="COLLAB_PORT='eighty' is not a valid int"):
        Settings.from_env({"COLLAB_PORT": "eighty"})
    with pytest.raises(SystemExit, match="COLLAB_LOG_FORMAT='xml' is not a valid text|json"):
        Settings.from_env({"COLLAB_LOG_FORMAT": "xml"})


def test_repeatable_settings_come_from_flags_or_a_comma_list() -> None:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    env = {"COLLAB_ALLOWED_ORIGIN": "https://a.example, https://b.example"}
    from_env = Settings.from_args(parser.parse_args([]), env)
    assert from_env.allowed_origin == ("https://a.example", "https://b.example")
    args = parser.parse_args(["--allowed-origin", "https://c.example", "--allowed-origin", "*"])
    assert Settings.from_args(args, env).allowed_origin == ("https://c.example", "*")
    assert Settings.from_args(parser.parse_args([]), {}).auth_secret is None


async def test_sigterm_closes_sockets_with_1001_and_exits_zero() -> None:
    async with ServerProcess("--store", "memory://") as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}/doc")
        first = protocol.decode(await ws.receive_bytes(timeout=5))
        assert isinstance(first, protocol.SyncStep1)
        stopping = asyncio.create_task(server.stop(signal.SIGTERM))
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.GOING_AWAY
        assert await stopping == 0


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_serve_runs_on_the_chosen_event_loop(event_loop: str) -> None:
    async with ServerProcess(
        "--store", "memory://", "--event-loop", event_loop, "--log-level", "info"
    ) as server:
        await eventually(
            lambda: any(f", {event_loop})" in line for line in server.log if "serving" in line)
        )
        writer = Session(server.ws_url, "doc")
        await writer.start()
        await writer.wait_synced(5)
        writer.doc.get("text", type=Text).insert(0, f"on {event_loop}")
        late = Session(server.ws_url, "doc")
        await late.start()
        await late.wait_for(lambda: str(late.doc.get("text", type=Text)) == f"on {event_loop}")
        await writer.close()
        await late.close()
