"""The documentation site (mkdocs.yml): docs/ and the API reference from the docstrings
(mkdocstrings), built offline; a docstring griffe cannot parse (a parameter missing from the
signature, an unparseable section) or a broken cross-reference fails the build (``--strict``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_with_the_api_reference(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="mkdocs and mkdocstrings[python] are in the test extra")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    top = (site / "reference" / "top-level.html").read_text(encoding="utf-8")
    for name in ("handflow.api.train", "handflow.api.synthesize", "handflow.predictor.load_model",
                 "handflow.inference.predict", "handflow.lifting.predict_from_keypoints"):
        assert f'id="{name}"' in top, name
    assert "<blockquote>" not in top  # examples render as code, not as nested quotes
    assert (site / "index.html").is_file() and (site / "architecture.html").is_file()
