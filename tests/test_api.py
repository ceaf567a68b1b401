"""The top level of ``import handflow`` (issue #18 s.2): every public function carries an example
that runs as a doctest, and ``import handflow`` stays light."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import handflow

#: the top-level functions whose docstring examples must run
TOP_LEVEL = ("load_model", "predict", "train", "evaluate", "synthesize", "load_hand_model")


def _run_doctests(obj: object, name: str) -> doctest.TestResults:
    module = sys.modules[obj.__module__]
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, module=module, globs=vars(module).copy())
    assert tests and sum(len(t.examples) for t in tests) > 0, f"handflow.{name} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_examples_run(name: str) -> None:
    res = _run_doctests(getattr(handflow, name), name)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of handflow.{name} failed"


def test_package_doctests() -> None:
    """The doctests of src/handflow/__init__.py, the predictor and the extras module."""
    import handflow.extras
    import handflow.predictor

    for module in (handflow, handflow.predictor, handflow.extras):
        res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, module.__name__


def test_top_level_names_and_version() -> None:
    for name in (*TOP_LEVEL, "predict_from_keypoints"):
        assert name in handflow.__all__ and callable(getattr(handflow, name))
    from importlib.metadata import version

    assert handflow.__version__ == version("handflow")


def test_import_handflow_is_light() -> None:
    code = "import sys, handflow; print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
