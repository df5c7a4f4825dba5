"""docs/embedding.md is correct: its programs run, its fragments compile, its names exist.

Blocks are found as tests/test_readme.py finds them.  A ``python`` block with
no directive is a complete program: it runs with the venv's Python (the
checkout on ``PYTHONPATH``) and must exit 0.  One marked ``<!-- not run:
REASON -->`` is a fragment: it must still compile, and every ``collab.NAME``
it uses must exist.  The hook table must list every hook ``collab.Hooks`` has.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import collab
from collab.hooks import GATING, OBSERVING
from tests.test_readme import Block, blocks

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embedding.md"
PYTHON = [b for b in blocks(DOC.read_text()) if b.language == "python"]
PROGRAMS = [b for b in PYTHON if not b.directive]


def _where(block: Block) -> str:
    return block.where.replace("README.md", "docs/embedding.md")


def test_every_block_is_a_program_or_a_marked_fragment() -> None:
    assert len(PROGRAMS) >= 3, "the doc lost its runnable programs"
    for block in blocks(DOC.read_text()):
        assert block.language == "python", f"{_where(block)}: only Python blocks here"
        assert not block.directive or block.directive.startswith("not run:"), _where(block)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: f"line{b.line}")
def test_each_block_compiles_and_uses_only_names_collab_has(block: Block) -> None:
    # Fragments use `await` and `async with` outside a function: compile them as a body.
    # (A name after "/" or "." is a file or a module path, not collab's: "/collab.db".)
    source = "async def _fragment():\n" + "".join(
        f"    {line}\n" for line in block.body.splitlines()
    )
    ast.parse(source, _where(block))
    for name in sorted(set(re.findall(r"(?<![\w/.])collab\.([A-Za-z_]\w*)", block.body))):
        assert hasattr(collab, name) or (ROOT / "collab" / f"{name}.py").exists(), (
            f"{_where(block)}: collab.{name} does not exist"
        )


@pytest.mark.parametrize("block", PROGRAMS, ids=lambda b: f"line{b.line}")
def test_each_program_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(block.body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in [n for n in env if n.startswith("COLLAB_")]:
        del env[name]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{_where(block)} exited {done.returncode}:\n{done.stderr}"


def test_the_hook_table_lists_every_hook() -> None:
    text = DOC.read_text()
    table = text[text.index("| hook | kind |") : text.index("**Gating** hooks")]
    listed = set(re.findall(r"^\| `(\w+)`", table, re.MULTILINE))
    assert listed == {*GATING, *OBSERVING, "start"}, listed
    for name in (*GATING, *OBSERVING):
        assert hasattr(collab.Hooks, name)
