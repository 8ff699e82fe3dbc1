"""Running promtool (Debian's ``prometheus`` package ships it; scripts/test.sh installs it).

Without it the tests that need it fail rather than skip, so that untested rules and queries
cannot pass unnoticed.
"""

import shutil
import subprocess
from pathlib import Path

import pytest


def promtool(*arguments: str, cwd: Path) -> None:
    """Run promtool in ``cwd``; fail with its output unless it exits 0."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/test.sh)")
    result = subprocess.run(
        [binary, *arguments], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(arguments)}:\n{output}"
