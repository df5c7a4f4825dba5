"""The collab command: settings from flags and environment, serving, clean shutdown,
and one-line errors for everything a user can get wrong."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import cli, protocol
from collab.auth import issue_token
from collab.client import Session
from collab.closecodes import CloseCode
from collab.config import Settings
from collab.testing.server import InProcessServer, ServerProcess, free_port
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import eventually, text_of

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``collab ARGS`` in a child process: (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "collab", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


async def arun_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``collab ARGS`` without blocking the event loop a test server runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        *args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def an_update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


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


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["import", "doc", "missing.bin"], "cannot read missing.bin: No such file"),
        (["ls", "--store", "mysql://u@db/x"], "unsupported store URL 'mysql://u@db/x'"),
        (["ls", "--server", "127.0.0.1:8080"], "--server takes the server's http:// URL"),
        (["ls", "--server", "http://127.0.0.1:{closed}"], "cannot reach the server at"),
        (["token", "--doc", "x", "--secret", SECRET, "--ttl", "0s"], "--ttl must be positive"),
        (["token", "--doc", "x", "--secret", SECRET, "--ttl", "soon"], "not a duration"),
        (["serve", "--port", "99999"], "--port: 99999 is out of range"),
        (["serve", "--commit-window", "-1"], "--commit-window: -1 is out of range"),
    ],
)
def test_mistakes_are_one_line_on_stderr_with_a_failing_status(
    tmp_path: Path, args: list[str], says: str
) -> None:
    args = [a.replace("{closed}", str(free_port())) for a in args]
    status, out, err = run_cli(*args, cwd=tmp_path)
    assert status != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert says in lines[0]


def test_a_read_command_names_the_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    status, _, err = run_cli("ls", "--store", "sqlite:///tmp/x.db", cwd=tmp_path)
    assert status == 1
    assert f"no store at {tmp_path / 'tmp' / 'x.db'}" in err
    assert "relative to the working directory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_import_creates_no_store(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"not an update")
    status, _, err = run_cli("import", "doc", "junk.bin", cwd=tmp_path)
    assert status == 1
    assert "not a Yjs update" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.bin"]


def test_store_commands_say_which_store_they_opened(tmp_path: Path) -> None:
    (tmp_path / "u.bin").write_bytes(an_update("hi"))
    status, _, err = run_cli("import", "notes", "u.bin", cwd=tmp_path, env={"COLLAB_PORT": "1"})
    assert status == 0, err
    assert f"store: {tmp_path / 'data' / 'collab.db'}" in err
    status, out, err = run_cli("ls", cwd=tmp_path)
    assert status == 0
    assert f"store: {tmp_path / 'data' / 'collab.db'}" in err
    assert out.splitlines()[1].split()[0] == "notes"


def test_an_unexpected_error_is_one_line_that_points_to_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(cli, "_token", broken)
    assert cli.main(["token", "--doc", "x"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "collab token: unexpected RuntimeError: something nobody foresaw "
        "(run again with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError):
        cli.main(["token", "--doc", "x", "--debug"])


async def test_import_goes_through_a_running_server_so_open_editors_see_it(
    tmp_path: Path, server: InProcessServer, make_client: ClientFactory
) -> None:
    editor = await make_client("notes")
    (tmp_path / "u.bin").write_bytes(an_update("imported"))
    status, out = await arun_cli(
        "import", "notes", "u.bin", cwd=tmp_path, env={"COLLAB_PORT": str(server.port)}
    )
    assert status == 0, out
    assert f"importing through the server running at http://127.0.0.1:{server.port}" in out
    await editor.wait_for(lambda: text_of(editor) == "imported")
    assert not (tmp_path / "data").exists()  # the server's store, not one in the cwd


async def test_a_store_direct_import_says_a_running_server_will_not_show_it_yet(
    tmp_path: Path, make_server: ServerFactory
) -> None:
    server = await make_server()
    (tmp_path / "u.bin").write_bytes(an_update("imported"))
    status, out = await arun_cli(
        "import",
        "notes",
        "u.bin",
        "--store",
        "memory://",
        cwd=tmp_path,
        env={"COLLAB_PORT": str(server.port)},
    )
    assert status == 0, out
    assert f"note: a server is running at http://127.0.0.1:{server.port}" in out
    assert "only after the document reloads" in out


async def test_server_commands_send_the_token_and_explain_a_refusal(
    tmp_path: Path, make_server: ServerFactory
) -> None:
    server = await make_server(auth_secret=SECRET)
    status, out = await arun_cli("ls", "--server", server.http_url, cwd=tmp_path)
    assert status == 1
    assert out.startswith("collab ls: the server answered 401: ")
    assert "give --token" in out
    token = issue_token(SECRET, "*", "read", 60, glob=True)
    status, out = await arun_cli("ls", "--server", server.http_url, "--token", token, cwd=tmp_path)
    assert status == 0, out
    assert out.startswith("NAME")


async def test_serve_logs_the_port_it_really_listens_on(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        "serve",
        "--port",
        "0",
        "--store",
        "memory://",
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"serving" not in (line := await proc.stderr.readline()):
                assert line, "the server exited before serving"
        match = re.search(r"serving http://127\.0\.0\.1:(\d+) ", line.decode())
        assert match, line
        port = int(match[1])
        assert port != 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
    finally:
        proc.terminate()
        await proc.wait()


def test_serve_with_a_store_it_cannot_use_logs_why_and_exits(tmp_path: Path) -> None:
    status, _, err = run_cli("serve", "--store", "mysql://u@db/x", cwd=tmp_path)
    assert status == 2
    assert "Traceback" not in err
    assert "ERROR collab: unsupported store URL 'mysql://u@db/x'" in err.splitlines()[-1]
