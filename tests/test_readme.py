"""The README's settings table is the one the code defines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_readme_settings_table_matches_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- settings-table.*?-->\n(.*?)<!-- /settings-table -->", readme, re.S)
    assert match, "README lost its settings-table markers"
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert match.group(1).strip() == generated.strip()
