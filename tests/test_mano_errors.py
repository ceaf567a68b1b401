"""MANO files (issue #15 s. 4): ``handflow hand --model mano`` works end to end, a legitimately
empty ``hands_coeffs`` loads, and damaged chumpy/scipy stand-ins are refused with a
one-line ``ManoFormatError`` naming the file and the key, before anything large is allocated.
Files are written by ``handflow.testing.mano`` in the real on-disk format."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from handflow.errors import HandflowError
from handflow.hand.mano import ManoModel
from handflow.hand.mano_io import ManoFormatError, load_mano_arrays
from handflow.testing.mano import write_fake_mano


def _write(tmp_path: Path, edit: Callable[[dict[str, Any]], None], chumpy: bool = True) -> Path:
    """A real-format ``MANO_RIGHT.pkl`` changed by ``edit``."""
    return write_fake_mano(tmp_path / "mano", sides=("right",), chumpy=chumpy, edit=edit)["right"]


def _refused(path: Path, pattern: str) -> ManoFormatError:
    """Loading ``path`` raises a one-line ManoFormatError naming the file and matching ``pattern``."""
    with pytest.raises(ManoFormatError, match=pattern) as e:
        load_mano_arrays(path)
    msg = str(e.value)
    assert isinstance(e.value, HandflowError) and msg.startswith(str(path)) and "\n" not in msg
    return e.value


# ----------------------------------------------------------------------------- handflow hand
@pytest.mark.parametrize("coeffs", ["as released", "empty"])
def test_hand_cli_draws_a_mano_gallery(tmp_path: Path, coeffs: str) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from handflow.cli import app

    mano = tmp_path / "mano"
    edit = (lambda o: o.__setitem__("hands_coeffs", np.zeros((0, 45)))) if coeffs == "empty" else None
    write_fake_mano(mano, edit=edit)
    out = tmp_path / "fig" / "mano.png"
    r = CliRunner().invoke(app, ["hand", "--model", "mano", "--path", str(mano), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"figure: {out}" in r.output
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 400


def test_mano_prior_maps_anatomical_angles_like_openhand(tmp_path: Path) -> None:
    """The gallery's hand-written poses: the same (twist, spread, flex) give the same rotations
    for MANO as for openhand (shared rest-frame semantics), mirrored for the left hand."""
    from handflow.hand.openhand_prior import OpenHandPrior

    write_fake_mano(tmp_path)
    mano, openhand = ManoModel(tmp_path), OpenHandPrior()
    comps = torch.randn(2, 15, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    for side in ("right", "left"):
        R = mano.pose_prior.from_components(comps, side)
        assert R.shape == (2, 15, 3, 3)
        torch.testing.assert_close(R, openhand.from_components(comps, side))


# ----------------------------------------------------------------------------- hands_coeffs
@pytest.mark.parametrize("chumpy", [True, False])
@pytest.mark.parametrize("empty", [np.zeros((0, 45)), np.zeros(0), []], ids=["0x45", "0", "list"])
def test_empty_hands_coeffs_load_with_a_fallback_prior(tmp_path: Path, caplog, chumpy: bool, empty: Any) -> None:
    path = _write(tmp_path, lambda o: o.__setitem__("hands_coeffs", empty), chumpy=chumpy)
    assert load_mano_arrays(path)["hands_coeffs"].shape == (0, 45)
    model = ManoModel(path)
    assert "falls back to N(0, I)" in caplog.text
    prior = model.pose_prior
    torch.testing.assert_close(prior.right_mu, torch.zeros(45, dtype=torch.float64))
    R = prior.sample(4, "right", torch.Generator().manual_seed(0))
    assert torch.isfinite(R).all() and torch.isfinite(prior.log_prob(R, "right")).all()
    # only emptiness is accepted: an inconsistent table is still refused
    bad = _write(tmp_path / "bad", lambda o: o.__setitem__("hands_coeffs", np.zeros((5, 44))), chumpy=chumpy)
    _refused(bad, r"hands_coeffs has shape \(5, 44\)")


# ----------------------------------------------------------------------------- chumpy / scipy stand-ins
def _del(attr: str) -> Callable[[Any], None]:
    return lambda o: delattr(o, attr)


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda o: _del("x")(o["shapedirs"].a), r"shapedirs: chumpy Ch object lacks 'x'"),
    (lambda o: _del("idxs")(o["shapedirs"]), r"shapedirs: chumpy Select object lacks 'idxs'"),
    (lambda o: setattr(o["shapedirs"], "idxs", o["shapedirs"].idxs + 1), r"shapedirs: chumpy Select 'idxs' range 1\.\.23340 "
     r"is outside 'a' \(size 23340\)"),
    (lambda o: setattr(o["shapedirs"], "idxs", o["shapedirs"].idxs - 5), r"shapedirs: chumpy Select 'idxs' range -5\.\."),
    (lambda o: setattr(o["shapedirs"], "idxs", o["shapedirs"].idxs[:-1]), r"shapedirs: chumpy Select 'idxs' holds 23339 indices"),
    (lambda o: setattr(o["shapedirs"], "idxs", o["shapedirs"].idxs.astype(float)), r"shapedirs: chumpy Select 'idxs' must be "
     r"a 1-D array of integers"),
    (lambda o: setattr(o["shapedirs"], "a", o["shapedirs"]), r"shapedirs: chumpy Select 'a' is a SelectStub"),  # a cycle
    (lambda o: setattr(o["shapedirs"], "preferred_shape", (778, 3, 9)), r"shapedirs: chumpy Select 'preferred_shape' "
     r"\(778, 3, 9\) differs from MANO's \(778, 3, 10\)"),
    (lambda o: _del("indptr")(o["J_regressor"]), r"J_regressor: scipy csc_matrix object lacks 'indptr'"),
    (lambda o: setattr(o["J_regressor"], "indices", o["J_regressor"].indices + 16), r"J_regressor: scipy csc_matrix row "
     r"'indices' range .* is outside 0\.\.15"),
    (lambda o: setattr(o["J_regressor"], "indptr", o["J_regressor"].indptr[:-1]), r"J_regressor: scipy csc_matrix 'indptr' "
     r"does not describe 778 columns"),
    (lambda o: setattr(o["J_regressor"], "data", o["J_regressor"].data[:-1]), r"J_regressor: scipy csc_matrix has \d+ 'data' "),
    (lambda o: o.__setitem__("f", np.full((1538, 3), 778, np.uint32)), r"f: vertex indices 778\.\.778 are outside 0\.\.777"),
], ids=["Ch-x", "Select-idxs", "idxs-past-end", "idxs-negative", "idxs-short", "idxs-float", "Select-cycle", "preferred_shape",
        "csc-indptr", "csc-rows", "csc-indptr-short", "csc-data", "faces"])
def test_damaged_stand_ins_name_the_key(tmp_path: Path, edit: Callable[[dict[str, Any]], None], pattern: str) -> None:
    e = _refused(_write(tmp_path, edit), pattern)
    assert "mano.is.tue.mpg.de" in str(e)


@pytest.mark.parametrize("shape", [(16, 10**7), (10**7, 778), (16, 777)])
def test_sparse_shape_is_checked_before_allocating(tmp_path: Path, shape: tuple[int, int]) -> None:
    """A csc_matrix claiming (16, 10^7) would densify into 1.28 GB: refused first."""
    path = _write(tmp_path, lambda o: setattr(o["J_regressor"], "_shape", shape))
    tracemalloc.start()
    try:
        _refused(path, rf"J_regressor: scipy csc_matrix shape \({shape[0]}, {shape[1]}\) differs from MANO's \(16, 778\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak
