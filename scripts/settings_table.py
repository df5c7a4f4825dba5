#!/usr/bin/env python3
"""Print the README's settings table from collab.config.Settings (the one source).

With --write, replace the table between the settings-table markers of README.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from collab.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- settings-table.*?-->\n)(.*?)(<!-- /settings-table -->)", re.S)


def table() -> str:
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for flag, env, default, help_text in Settings.table():
        rows.append(f"| `{flag}` | `{env}` | `{default}` | {help_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        text = README.read_text()
        README.write_text(BLOCK.sub(lambda m: m[1] + table() + "\n" + m[3], text))
    else:
        print(table())
