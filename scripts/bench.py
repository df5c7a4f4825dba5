#!/usr/bin/env python3
"""Benchmark collab against pycrdt-websocket, @y/websocket-server and a relay.

    scripts/bench.py              # full run (~20 min), results in bench-results/
    scripts/bench.py --smoke      # every scenario tiny: correctness only (~1 min)

The same as ``.venv/bin/collab bench``.  From a fresh clone it first runs
``scripts/install`` (collab's .venv) and re-executes itself there; the
bench's own setup then installs the peers (bench/.venv-peers, bench/node).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def main() -> int:
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        if not VENV_PYTHON.exists():
            subprocess.run([str(ROOT / "scripts" / "install")], check=True)
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(ROOT))
    from bench.run import main as bench_main

    return bench_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
