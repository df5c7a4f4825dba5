"""The bench's setup: the peers it compares collab with, and its own tools.

Everything goes under ``bench/`` and is cheap to re-run (a stamp records
what was installed):

- ``bench/.venv-peers``: pycrdt-websocket and Hypercorn (pinned in
  ``bench/peers/requirements.txt``), in their own virtualenv so they never
  become dependencies of collab;
- ``bench/node/node_modules``: ``@y/websocket-server`` (the reference
  server), ``ws`` and ``yjs`` for the load generator, from the committed
  ``package-lock.json``;
- collab's ``bench`` extra (matplotlib, tqdm, py-spy) in the running venv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
NODE_DIR = BENCH / "node"


class SetupError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SetupError(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}")


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def bench_extra() -> list[str]:
    """The requirements of collab's ``bench`` extra, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["bench"])


def ensure_tools(say: bool = True) -> None:
    """matplotlib, tqdm and py-spy in the running interpreter."""
    if all(importlib.util.find_spec(m) for m in ("matplotlib", "tqdm")) and shutil.which(
        "py-spy", path=str(Path(sys.executable).parent)
    ):
        return
    if say:
        print("==> installing the bench extra (matplotlib, tqdm, py-spy)", file=sys.stderr)
    _run([sys.executable, "-m", "pip", "install", "--quiet", *bench_extra()])


def ensure_peers(say: bool = True) -> None:
    """pycrdt-websocket + Hypercorn in bench/.venv-peers."""
    requirements = BENCH / "peers" / "requirements.txt"
    stamp = PEERS_VENV / ".bench-installed"
    want = _digest(requirements)
    if PEERS_PYTHON.exists() and stamp.exists() and stamp.read_text() == want:
        return
    if say:
        print("==> installing pycrdt-websocket into bench/.venv-peers", file=sys.stderr)
    if not PEERS_PYTHON.exists():
        _run([sys.executable, "-m", "venv", str(PEERS_VENV)])
    _run([str(PEERS_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(requirements)])
    _run([str(PEERS_PYTHON), "-c", "import pycrdt.websocket, hypercorn"])
    stamp.write_text(want)


def ensure_node(say: bool = True) -> None:
    """npm ci in bench/node: @y/websocket-server, ws, yjs."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SetupError("the bench needs Node.js 18+ and npm (apt-get install nodejs npm)")
    modules = NODE_DIR / "node_modules"
    lock = NODE_DIR / "package-lock.json"
    installed = modules / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    if say:
        print("==> npm ci in bench/node (@y/websocket-server, ws, yjs)", file=sys.stderr)
    _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR)


def setup(say: bool = True) -> None:
    """Install whatever is missing; raise ``SetupError`` saying what failed."""
    ensure_tools(say)
    ensure_peers(say)
    ensure_node(say)
