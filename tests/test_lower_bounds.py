"""``make test-lower-bounds`` (issue #18): tools/lower_bounds.py pins every dependency declared in
pyproject.toml at its lower bound; the Makefile builds ``.venv-low`` from it (not part of CI)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("lower_bounds", ROOT / "tools" / "lower_bounds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_declared_dependency_is_pinned_at_its_lower_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for g in project["optional-dependencies"].values() for r in g]
    declared = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower(): r for r in reqs if not r.startswith("handflow[")}
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "lower_bounds.py")], capture_output=True, text=True,
                         check=True).stdout
    pins = dict(re.match(r"([a-z0-9._-]+)==(.+)", ln).groups() for ln in out.splitlines() if not ln.startswith("#"))
    assert set(pins) == set(declared)
    for name, pin in pins.items():
        low = re.search(r">=\s*([0-9.]+)", declared[name]).group(1)
        assert pin.startswith(low) and pin.endswith(".*"), (name, pin, declared[name])
    tool = _tool()
    assert (tool.constraint("13"), tool.constraint("2.4"), tool.constraint("6.100")) == ("==13.0.*", "==2.4.*", "==6.100.*")


def test_make_target_uses_its_own_venv_and_is_not_in_ci() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "test-lower-bounds:" in make and "LOW_VENV ?= .venv-low" in make and "tools/lower_bounds.py" in make
    assert ".venv-low/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "lower" not in (ROOT / ".ci" / "run").read_text()
