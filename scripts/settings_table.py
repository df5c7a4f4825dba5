#!/usr/bin/env python3
"""Print the README's settings table from collab.config.Settings (the one source)."""

from __future__ import annotations

from collab.config import Settings


def table() -> str:
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for flag, env, default, help_text in Settings.table():
        rows.append(f"| `{flag}` | `{env}` | `{default}` | {help_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
