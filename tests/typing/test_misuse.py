"""mypy --strict rejects misuse of the public API, with the expected error codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

CASES = Path(__file__).parent / "misuse" / "cases.py"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_misuse_is_reported_line_by_line() -> None:
    """Every `# E: code` line gets exactly that error and no other line gets one."""
    expected = {
        i: m.group(1)
        for i, line in enumerate(CASES.read_text().splitlines(), start=1)
        if (m := re.search(r"# E: ([\w-]+)$", line))
    }
    stdout, stderr, _ = api.run(["--config-file", str(ROOT / "mypy.ini"), "--no-error-summary", "--show-error-codes", str(CASES)])
    found: dict[int, set[str]] = {}
    for line in stdout.splitlines():
        m = re.match(rf".*{CASES.name}:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    assert stderr == ""
    assert {i: {code} for i, code in expected.items()} == found, stdout
