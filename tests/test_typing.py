"""The type checker on the public API: ``mypy`` with ``[tool.mypy]`` of pyproject.toml (the files it lists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_type_checks() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    # the cache (.mypy_cache, git-ignored) makes reruns take seconds; a cold run reads torch's stubs (~40 s)
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
