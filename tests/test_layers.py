"""The layers (issue #18): lower packages never import upper ones. Checked in fresh interpreters,
since an import made by an earlier test would hide an upward import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

#: package -> packages above it that importing it must not pull in
LAYERS = {
    "handflow.hand": ("handflow.models", "handflow.multihands", "handflow.training", "handflow.evaluation", "lightning"),
    "handflow.models": ("handflow.multihands", "handflow.training", "handflow.evaluation", "lightning"),
    "handflow.data.features": ("handflow.training", "handflow.evaluation", "lightning"),
}


@pytest.mark.parametrize("module, above", LAYERS.items())
def test_lower_layers_do_not_import_upper_ones(module: str, above: tuple[str, ...]) -> None:
    code = (f"import sys, {module}; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m in {above!r}); print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", f"{module} imports {r.stdout.strip()}"


def test_openhand_joints_fast_path_equals_forward() -> None:
    """``OpenHand.joints`` (fingertips only) is the backend's own method, equal to the forward pass."""
    from handflow.geometry import axis_angle_to_matrix
    from handflow.hand import HandModel, load_hand_model

    model = load_hand_model("openhand").double()
    assert type(model).joints is not HandModel.joints
    g = torch.Generator().manual_seed(1)
    R = axis_angle_to_matrix(0.4 * torch.randn(5, 16, 3, generator=g, dtype=torch.float64))
    b = torch.randn(5, 10, generator=g, dtype=torch.float64)
    for side in ("right", "left"):
        torch.testing.assert_close(model.joints(R, b, side), model(R, b, side=side).joints, atol=1e-9, rtol=0)


def test_decoding_joints_needs_no_upper_layer() -> None:
    """``decode_joints`` (training, prediction, evaluation) poses joints through the hand model's own
    method, not through the MultiHands engine (it imported ``handflow.multihands.posing``)."""
    code = ("import sys, torch; from handflow.models import decode_joints; from handflow.hand import load_hand_model; "
            "from handflow.constants import PARAM_DIM; "
            "K = torch.tensor([[[200., 0, 64], [0, 200., 64], [0, 0, 1]]]); y = torch.zeros(1, PARAM_DIM); y[:, 2::109] = 1.0; "
            "J = decode_joints(y, K, 128, load_hand_model('openhand')); assert J.shape == (1, 42, 3); "
            "print(sorted(m for m in sys.modules if m.startswith(('handflow.multihands', 'handflow.training', 'lightning'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_import_contract_holds() -> None:
    """``lint-imports`` with the layers contract of pyproject.toml (``[tool.importlinter]``)."""
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([str(lint)], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def _layer_rows(rows: list[str]) -> list[set[str]]:
    return [{n.strip().removeprefix("handflow.").split(" ")[0] for n in r.replace(":", "|").split("|") if n.strip()}
            for r in rows]


def test_architecture_picture_is_the_contract_and_covers_the_tree() -> None:
    """docs/architecture.md's picture lists the contract's layers, in order, and every top-level
    module of the package is in one of them (outside: ``testing``, fixtures for the tests, and
    ``configs``, package data)."""
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    contract = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    doc = (root / "docs" / "architecture.md").read_text()
    block = re.search(r"```\n(.*?)```", doc, re.S).group(1)
    picture = [re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines() if line.strip()]
    assert _layer_rows(picture) == _layer_rows(contract)
    listed = set().union(*_layer_rows(contract))
    src = root / "src" / "handflow"
    tree = {p.stem for p in src.glob("*.py") if p.stem not in ("__init__", "__main__")}
    tree |= {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    assert tree - listed == {"testing", "configs"}, sorted(tree - listed)
    assert not listed - tree, sorted(listed - tree)
