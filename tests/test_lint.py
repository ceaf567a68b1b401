"""The ruff gate: ``ruff check src tests benchmarks`` with the rules of ``[tool.ruff]`` in pyproject.toml."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Paths other work had open while the gate was set up (issue #18). Findings confined to these
#: skip the test (listed in the skip reason) instead of failing it; anywhere else they fail it.
#: Empty this tuple once they are fixed: the gate is then strict everywhere.
IN_FLIGHT: tuple[str, ...] = ()


def _ruff() -> list[dict]:
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e '.[test]'")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "json", "--no-cache",
                        "src", "tests", "benchmarks"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 2: ruff itself failed (bad config)
    return json.loads(r.stdout or "[]")


def test_ruff_finds_nothing() -> None:
    findings = _ruff()
    where = [(Path(f["filename"]).resolve().relative_to(ROOT).as_posix(), f) for f in findings]
    lines = [f"{p}:{f['location']['row']}: {f['code']} {f['message']}" for p, f in where]
    elsewhere = [line for (p, _), line in zip(where, lines) if not p.startswith(IN_FLIGHT)]
    assert not elsewhere, f"{len(elsewhere)} ruff findings (`ruff check --fix src tests benchmarks`):\n" + "\n".join(elsewhere)
    if lines:
        per_file = Counter(p for p, _ in where)
        print("\n".join(lines))
        pytest.skip(f"{len(lines)} ruff findings, all in files being edited elsewhere: "
                    + ", ".join(f"{p} ({n})" for p, n in sorted(per_file.items())))
