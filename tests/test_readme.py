"""The README runs as written: every code block in it is executed or explicitly marked.

A newcomer copies the README's blocks in order; so does this test, in one
sandbox folder with a real ``collab serve`` running there (default settings,
SQLite store ``data/collab.db``) on a free port.  Each block runs by its
language:

- ``python``: a script, with the venv's Python; it must exit 0;
- ``js``: a Node.js ES module (``.mjs``) that finds ``tests/interop``'s npm
  packages; it must exit 0;
- ``console``: every ``$ command`` runs in one bash per block (so ``export``
  carries on), and the lines after it are what it must print (stdout and
  stderr together), line for line.  In those lines a number stands for any
  number, runs of spaces for any spaces, and ``...`` for any text;
- ``json``: must parse.

An HTML comment on the line just before a block changes that:

- ``<!-- not run: REASON -->``: only read (a deployment, a command that never
  ends, the suite itself);
- ``<!-- file: NAME -->``: written to NAME in the sandbox, for a later block;
- ``<!-- stop after the output shown -->``: a console block whose one command
  runs until stopped: it is interrupted once the lines shown have appeared;
- ``<!-- server log -->``: a transcript of ``scripts/serve``; its log lines must
  match the sandbox server's log in order, its ``==>`` lines the scripts' own
  (npm's lines are not checked).

Any other block without a marker fails the test, so a block added to the
README later is run or marked on purpose.  In every block ``127.0.0.1:8080``
and ``localhost:8080`` become the sandbox server's address; ``.venv/bin`` is
first on PATH (as after ``source .venv/bin/activate``); ``scripts/`` and
``.venv`` are the checkout's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collab.testing.server import free_port
from tests.conftest import IN_CI

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
INTEROP_MODULES = ROOT / "tests" / "interop" / "node_modules"
#: Seconds one block may take (the chaos run in it takes about ten).
BLOCK_TIMEOUT = 90


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    body: str
    directive: str  # "" or the text of the HTML comment before the fence

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.language or 'no language'})"


def blocks(text: str) -> Iterator[Block]:
    """Every fenced block at the top level or indented in a list, with its directive."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, language = fence.groups()
        before = lines[i - 1].strip() if i else ""
        comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", before)
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i].removeprefix(indent))
            i += 1
        i += 1
        yield Block(start + 1, language, "\n".join(body) + "\n", comment[1] if comment else "")


def test_the_block_parser_finds_directives_and_indented_blocks() -> None:
    sample = "x\n<!-- not run: why -->\n```sh\nrm -rf /\n```\n- item\n\n  ```json\n  {}\n  ```\n"
    found = list(blocks(sample))
    assert [(b.line, b.language, b.directive, b.body) for b in found] == [
        (3, "sh", "not run: why", "rm -rf /\n"),
        (8, "json", "", "{}\n"),
    ]


# -- matching printed output -------------------------------------------------------


def pattern(expected: str) -> re.Pattern[str]:
    """A shown output line as a regex: numbers, spaces and ``...`` are wildcards."""
    parts = re.split(r"(\.\.\.|\d+(?:[.,]\d+)*|\s+)", expected.strip())
    regex = ""
    for part in parts:
        if part == "...":
            regex += ".*"
        elif re.fullmatch(r"\d+(?:[.,]\d+)*", part):
            regex += r"\d+(?:[.,]\d+)*"
        elif part.isspace():
            regex += r"\s+"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def test_shown_output_matches_printed_lines_with_wildcards() -> None:
    assert pattern("notes    30        1  2026-11-24 19:35:07").fullmatch(
        "notes  1234  7  2026-12-02 07:44:27"
    )
    assert pattern("store: .../data/collab.db").fullmatch("store: /tmp/x/data/collab.db")
    assert not pattern("compacted 'notes'").fullmatch("compacted 'copy'")


def match_in_order(shown: list[str], printed: list[str], what: str) -> None:
    """Every shown line matches a printed line, in the same order."""
    position = 0
    for line in shown:
        regex = pattern(line)
        for index in range(position, len(printed)):
            if regex.fullmatch(printed[index].strip()):
                position = index + 1
                break
        else:
            raise AssertionError(
                f"{what}: the README shows\n  {line}\nbut after what matched before it, "
                f"this was printed:\n  " + "\n  ".join(printed[position:] or ["(nothing)"])
            )


# -- the sandbox -------------------------------------------------------------------


class Sandbox:
    """A folder like a fresh checkout's top, with a collab server running in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.log: list[str] = []
        self.server: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        (path / "scripts").symlink_to(ROOT / "scripts")
        (path / ".venv").symlink_to(VENV_BIN.parent)
        if INTEROP_MODULES.is_dir():
            (path / "node_modules").symlink_to(INTEROP_MODULES)
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "COLLAB_PORT": str(self.port),  # where `collab import` looks for a server
            "PYTHONUNBUFFERED": "1",
        }
        for name in list(self.env):  # the README's defaults, not this machine's
            if name.startswith("COLLAB_") and name != "COLLAB_PORT":
                del self.env[name]

    def localize(self, text: str) -> str:
        return re.sub(r"(127\.0\.0\.1|localhost):8080", rf"\g<1>:{self.port}", text)

    async def start(self) -> None:
        self.server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab",
            "serve",
            cwd=self.path,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        serving = asyncio.Event()

        async def read() -> None:
            assert self.server is not None and self.server.stderr is not None
            async for raw in self.server.stderr:
                self.log.append(raw.decode().rstrip("\n"))
                if " serving http://" in self.log[-1]:
                    serving.set()

        self._reader = asyncio.create_task(read())
        # Started, or ended: a server that exits at once must not cost the timeout.
        await asyncio.wait(
            [asyncio.ensure_future(serving.wait()), self._reader],
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not serving.is_set():
            raise AssertionError("the sandbox server did not start:\n" + "\n".join(self.log))

    async def stop(self) -> None:
        """Ctrl-C, as the README's transcript shows."""
        if self.server is None or self.server.returncode is not None:
            return
        self.server.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await self.server.wait()
            if self._reader is not None:
                await self._reader


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path)
    await box.start()
    try:
        yield box
    finally:
        if box.server is not None and box.server.returncode is None:
            box.server.kill()
            await box.server.wait()


async def run(
    args: list[str], box: Sandbox, *, stdin: str | None = None
) -> tuple[int | None, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=box.path,
        env=box.env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(BLOCK_TIMEOUT):
            out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode().splitlines()


# -- the runners, one per language -------------------------------------------------


def commands(body: str) -> list[tuple[str, list[str]]]:
    """(command, lines shown after it) for each ``$ `` line of a console block."""
    result: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            result.append((line[2:], []))
        elif result and line.strip():
            result[-1][1].append(line)
    return result


async def run_console(block: Block, box: Sandbox) -> None:
    steps = commands(box.localize(block.body))
    assert steps, f"{block.where}: a console block without a `$ ` command"
    # One shell for the block (an export carries on), each command's output
    # and status in files of their own.
    record = box.path / ".readme-console"
    shutil.rmtree(record, ignore_errors=True)
    record.mkdir()
    script = "".join(
        f"{{ {command}\n}} > {record}/{index}.out 2>&1; echo $? > {record}/{index}.status\n"
        for index, (command, _) in enumerate(steps)
    )
    status, printed = await run(["bash", "-c", script], box)
    assert status == 0, f"{block.where}: bash exited {status}:\n" + "\n".join(printed)
    for index, (command, shown) in enumerate(steps):
        output = (record / f"{index}.out").read_text().splitlines()
        exit_status = (record / f"{index}.status").read_text().strip()
        what = f"{block.where}: `{command}`"
        assert exit_status == "0", f"{what} exited {exit_status}:\n" + "\n".join(output)
        match_in_order(shown, output, what)
        assert len(output) == len(shown), f"{what} printed lines the README does not show:\n" + (
            "\n".join(output)
        )


async def run_until_output(block: Block, box: Sandbox) -> None:
    [(command, shown)] = commands(box.localize(block.body))
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f"exec {command}",
        cwd=box.path,
        env=box.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(BLOCK_TIMEOUT):
            while len(printed) < len(shown):
                line = await proc.stdout.readline()
                if not line:
                    break
                printed.append(line.decode().rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    match_in_order(shown, printed, f"{block.where}: `{command}`")


def node_ready() -> bool:
    if shutil.which("node") and INTEROP_MODULES.is_dir():
        return True
    if IN_CI:
        pytest.fail("the README's JavaScript needs Node.js and tests/interop/node_modules")
    return False


async def run_block(block: Block, box: Sandbox, index: int) -> str | None:
    """Run one block; the reason when it is not run."""
    directive = block.directive
    if directive.startswith("not run:"):
        return directive
    if directive.startswith("file:"):
        name = directive.removeprefix("file:").strip()
        (box.path / name).write_text(box.localize(block.body))
        return None
    if directive == "server log":
        return None  # checked once the server has stopped
    if directive == "stop after the output shown":
        await run_until_output(block, box)
        return None
    assert not directive, f"{block.where}: unknown directive <!-- {directive} -->"
    if block.language == "python":
        script = box.path / f"readme_block_{index}.py"
        script.write_text(box.localize(block.body))
        status, printed = await run([sys.executable, script.name], box)
        assert status == 0, f"{block.where} exited {status}:\n" + "\n".join(printed)
    elif block.language == "js":
        if not node_ready():
            return "Node.js or tests/interop/node_modules missing"
        script = box.path / f"readme_block_{index}.mjs"
        script.write_text(box.localize(block.body))
        status, printed = await run(["node", script.name], box)
        assert status == 0, f"{block.where} exited {status}:\n" + "\n".join(printed)
    elif block.language == "console":
        await run_console(block, box)
    elif block.language == "json":
        json.loads(block.body)
    else:
        raise AssertionError(
            f"{block.where}: no runner for this block; run it or mark it with "
            "<!-- not run: REASON --> (see tests/test_readme.py)"
        )
    return None


def check_server_log(block: Block, box: Sandbox) -> None:
    """``==>`` lines are the install scripts' own; the rest is the server's log."""
    scripts = "\n".join(
        (ROOT / "scripts" / name).read_text() for name in ("install", "build-frontend")
    )
    announced = [
        ".*".join(re.escape(part) for part in re.split(r"\$\([^)]*\)|\$\{?\w+\}?", said))
        for said in re.findall(r'echo "==> ([^"]*)"', scripts)
    ]
    shown_log: list[str] = []
    for line in block.body.splitlines():
        if line.startswith("==> "):
            said = line.removeprefix("==> ")
            assert any(re.fullmatch(a, said) for a in announced), (
                f"{block.where}: `{line}` is not something scripts/install or "
                "scripts/build-frontend prints"
            )
        elif re.match(r"\d{4}-\d\d-\d\d ", line):  # a log line; others are npm's
            shown_log.append(box.localize(line))
    match_in_order(shown_log, box.log, f"{block.where}: the server's log")


async def test_every_readme_block_runs_as_shown(sandbox: Sandbox) -> None:
    found = list(blocks(README.read_text()))
    assert found, "README.md has no code blocks?"
    not_run = []
    for index, block in enumerate(found):
        reason = await run_block(block, sandbox, index)
        if reason:
            not_run.append(f"{block.where}: {reason}")
    await sandbox.stop()
    for block in found:
        if block.directive == "server log":
            check_server_log(block, sandbox)
    # Say what was only read, so it is a decision and not an accident.
    print("README blocks not run:\n  " + "\n  ".join(not_run))


def test_readme_settings_table_matches_the_code() -> None:
    readme = README.read_text()
    match = re.search(r"<!-- settings-table.*?-->\n(.*?)<!-- /settings-table -->", readme, re.S)
    assert match, "README lost its settings-table markers"
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert match.group(1).strip() == generated.strip()
