"""A package others can depend on (issue #18 s.3): the core works without the optional
dependencies (each missing one is a one-line error naming its extra), ``import handflow.models``
does not import Lightning, and pyproject.toml declares core, extras, bounds, one version and
``py.typed``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: what the core must work without (the extras render, viz, train, cli)
OPTIONAL = ("lightning", "pytorch_lightning", "lightning_fabric", "moderngl", "plotly", "trimesh", "tensorboard", "typer",
            "matplotlib", "rich")

BLOCKER = f"""
import sys, importlib.abc
BLOCKED = {OPTIONAL!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    from conftest import tiny_train

    return tiny_train(tiny_data, tmp_path_factory.mktemp("packaging_run"), steps=1)


def test_core_predicts_without_optional_dependencies(ckpt, tmp_path) -> None:
    """A Lightning checkpoint loads and predicts a batch (tensors and files) with every optional
    dependency blocked; what needs one says which extra to install, in one line."""
    from PIL import Image

    Image.new("RGB", (80, 60), (120, 90, 60)).save(tmp_path / "a.png")
    r = _run("""
        import sys, torch
        import handflow, handflow.models
        from handflow.errors import MissingExtraError
        predictor = handflow.load_model(sys.argv[1])
        out = predictor(torch.rand(3, 3, 64, 80), samples=4)
        assert out.sample_joints.shape == (3, 4, 42, 3) and torch.isfinite(out.z0_joints).all()
        preds = handflow.predict(sys.argv[1], [sys.argv[2]], samples=2, batch_size=2)
        assert preds[0].z0_joints.shape == (42, 3)
        from handflow.viz.predictions import write_samples_html
        for call in (lambda: write_samples_html(preds[0].z0_joints, preds[0].sample_joints, sys.argv[3] + "/x.html"),
                     lambda: handflow.train(sys.argv[3], sys.argv[3]), lambda: handflow.evaluate(sys.argv[1], "d", "o")):
            try:
                call()
                raise AssertionError("no error")
            except MissingExtraError as e:
                print("extra:", e)
        from handflow.inference import check_mesh_format
        try:
            check_mesh_format("obj")
        except ValueError as e:
            print("extra:", e)
        from handflow.render import Renderer
        assert Renderer(32, 32).backend == "torch"    # falls back to the PyTorch rasterizer
        import handflow.cli
        try:
            handflow.cli.main()
        except SystemExit as e:
            print("exit", e.code)
        print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """, str(ckpt), str(tmp_path / "a.png"), str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    extras = [ln for ln in lines if ln.startswith("extra:")]
    assert len(extras) == 4 and all("install handflow[" in ln for ln in extras)
    assert "handflow[viz]" in extras[0] and "handflow[train]" in extras[1] and "handflow[train]" in extras[2]
    assert "handflow[viz]" in extras[3]
    assert "exit 1" in lines and "install handflow[cli]" in r.stderr
    assert lines[-1] == "loaded: []"


@pytest.mark.parametrize("module", ["handflow", "handflow.models", "handflow.predictor"])
def test_import_pulls_in_no_optional_dependency(module: str) -> None:
    """``import handflow`` / ``handflow.models`` / ``handflow.predictor`` load no extra (Lightning,
    matplotlib, plotly, trimesh, moderngl, ...), even where it is installed: the imports that need
    one stay inside functions (docs/architecture.md, "Imports")."""
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"


# ----------------------------------------------------------------------------- pyproject.toml
@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_and_extras(project) -> None:
    p = project["project"]
    assert _names(p["dependencies"]) == {"torch", "torchvision", "numpy", "pillow", "pyyaml", "tqdm", "omegaconf"}
    extras = p["optional-dependencies"]
    assert {"render", "viz", "train", "cli", "all", "test"} <= set(extras)
    assert _names(extras["render"]) == {"moderngl"}
    assert _names(extras["viz"]) == {"matplotlib", "plotly", "trimesh"}
    assert {"lightning", "tensorboard"} <= _names(extras["train"]) and "typer" in _names(extras["cli"])
    assert extras["all"] == ["handflow[render,viz,train,cli]"]


def test_runtime_bounds_are_lower_bounds_only(project) -> None:
    p = project["project"]
    runtime = p["dependencies"] + [r for k in ("render", "viz", "train", "cli") for r in p["optional-dependencies"][k]]
    for req in runtime:
        assert ">=" in req and "<" not in req.replace(">=", "") and "==" not in req, req


def test_one_version_source_and_py_typed(project) -> None:
    import handflow

    assert "version" in project["project"]
    init = (ROOT / "src" / "handflow" / "__init__.py").read_text()
    assert "__version__ = \"" not in init.replace('__version__ = "0+unknown"', "")
    assert handflow.__version__ == project["project"]["version"]
    assert (ROOT / "src" / "handflow" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["handflow"]


def test_makefile_installs_all_extras() -> None:
    assert "install -q -e '.[all,test]'" in (ROOT / "Makefile").read_text()


def test_every_figure_without_matplotlib_names_the_viz_extra(tmp_path) -> None:
    """The figure makers of viz, the report, view selection and the demo share one entry point
    (``handflow.extras.pyplot``): without matplotlib each says which extra to install."""
    r = _run("""
        from handflow.errors import MissingExtraError
        from handflow.evaluation import report_figures, viewselect
        from handflow import demo
        for fn in (report_figures._plt, lambda: viewselect.plot_view_selection({}, "x.png"),
                   lambda: demo._plot_curves("m.csv", "x.png")):
            try:
                fn()
            except MissingExtraError as e:
                assert "handflow[viz]" in str(e), e
            else:
                raise AssertionError("no MissingExtraError")
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
