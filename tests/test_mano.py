"""MANO backend: restricted loader on fixtures in the real on-disk format, forward pass
against an independent float64 LBS, errors, left-shapedirs fix, PCA prior."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import random_rotmats

from handflow.constants import MANO21_TO_IH, MANO_PARENTS, MANO_TIP_VERTICES
from handflow.hand import load_hand_model
from handflow.hand.mano import ManoModel
from handflow.hand.mano_io import ManoFormatError, load_mano_arrays
from handflow.testing.mano import fake_mano_arrays, write_fake_mano


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mano")
    write_fake_mano(d)
    return d


def _rodrigues(w: np.ndarray) -> np.ndarray:
    t = np.linalg.norm(w)
    if t < 1e-12:
        return np.eye(3)
    k = w / t
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _reference_mano(a: dict, R: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook MANO in float64 numpy with explicit 4x4 chains and per-vertex loops (metres)."""
    v = a["v_template"] + np.einsum("vkl,l->vk", a["shapedirs"], betas)
    J = a["J_regressor"] @ v
    feat = np.concatenate([(R[k] - np.eye(3)).reshape(-1) for k in range(1, 16)])
    v = v + np.einsum("vkp,p->vk", a["posedirs"], feat)
    G = [None] * 16
    for j in range(16):
        T = np.eye(4)
        T[:3, :3] = R[j]
        T[:3, 3] = J[j] - (J[MANO_PARENTS[j]] if j else 0)
        G[j] = T if j == 0 else G[MANO_PARENTS[j]] @ T
    verts = np.zeros_like(v)
    for i in range(len(v)):
        M = np.zeros((4, 4))
        for j in range(16):
            rest = np.eye(4)
            rest[:3, 3] = -J[j]
            M += a["weights"][i, j] * (G[j] @ rest)
        verts[i] = (M @ np.append(v[i], 1.0))[:3]
    joints = np.stack([G[j][:3, 3] for j in range(16)])
    return verts, joints


@pytest.mark.parametrize("side", ["right", "left"])
def test_forward_matches_independent_float64_lbs(mano_dir, side: str) -> None:
    model = ManoModel(mano_dir).double()
    # the model stores float32 buffers: compare on the same (float32-rounded) arrays
    a = {k: np.asarray(v).astype(np.float32).astype(np.float64) if not isinstance(v, str) else v
         for k, v in fake_mano_arrays()[side].items()}
    if side == "left":
        a["shapedirs"] = a["shapedirs"].copy()
        a["shapedirs"][:, 0, :] *= -1  # the documented fix is applied by default
    aa = np.random.default_rng(1).normal(scale=0.4, size=(16, 3))
    R = np.stack([_rodrigues(w) for w in aa])
    betas = np.random.default_rng(2).normal(size=10)
    ref_v, ref_j = _reference_mano(a, R, betas)
    tips = ref_v[list(MANO_TIP_VERTICES)]
    ref_j21 = np.concatenate([ref_j, tips])[list(MANO21_TO_IH)]
    out = model(torch.from_numpy(R)[None], torch.from_numpy(betas)[None], side=side)
    wrist = ref_j[0]
    np.testing.assert_allclose(out.vertices[0].numpy(), (ref_v - wrist) * 1000, atol=1e-9)
    np.testing.assert_allclose(out.joints[0].numpy(), (ref_j21 - wrist) * 1000, atol=1e-9)
    # rest wrist in the native frame (pivot of the global rotation), mm
    np.testing.assert_allclose(model.rest_wrist(torch.from_numpy(betas)[None], side)[0].numpy(), wrist * 1000, atol=1e-9)


def test_real_format_chumpy_free_and_npz_agree(tmp_path) -> None:
    write_fake_mano(tmp_path / "real")
    write_fake_mano(tmp_path / "plain", chumpy=False)
    write_fake_mano(tmp_path / "npz", fmt="npz")
    raw = (tmp_path / "real" / "MANO_RIGHT.pkl").read_bytes()
    for needle in (b"chumpy.ch\nCh", b"chumpy.reordering\nSelect", b"scipy.sparse.csc\ncsc_matrix", b"numpy.core.multiarray"):
        assert needle in raw
    assert raw[:2] == b"\x80\x02"  # protocol 2
    arrays = [load_mano_arrays(tmp_path / d / f"MANO_RIGHT.{'npz' if d == 'npz' else 'pkl'}") for d in ("real", "plain", "npz")]
    for k in arrays[0]:
        np.testing.assert_array_equal(arrays[0][k], arrays[1][k])
        np.testing.assert_array_equal(arrays[0][k], arrays[2][k])
    R = random_rotmats(32, torch.Generator().manual_seed(0), torch.float32).reshape(2, 16, 3, 3)
    b = torch.randn(2, 10)
    outs = [ManoModel(tmp_path / d)(R, b, "left").vertices for d in ("real", "plain", "npz")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_loader_never_imports_chumpy_or_scipy(mano_dir) -> None:
    code = textwrap.dedent(f"""
        import sys
        from handflow.hand.mano import ManoModel
        ManoModel({str(mano_dir)!r})
        bad = [m for m in ("scipy", "chumpy") if m in sys.modules]
        assert not bad, bad
        print("clean")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo PWNED > /dev/null",))


@pytest.mark.parametrize("payload", [_Evil(), {"v_template": _Evil()}])
def test_refuses_foreign_classes_without_running_them(tmp_path, payload, monkeypatch) -> None:
    import os

    p = tmp_path / "MANO_RIGHT.pkl"
    p.write_bytes(pickle.dumps(payload, protocol=2))
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a) or 0)
    with pytest.raises(ManoFormatError, match="refusing to load class"):
        load_mano_arrays(p)
    assert not called


def test_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="mano.is.tue.mpg.de"):
        ManoModel(tmp_path)  # empty folder
    with pytest.raises(FileNotFoundError):
        load_mano_arrays(tmp_path / "MANO_RIGHT.pkl")
    paths = write_fake_mano(tmp_path / "m", sides=("right",))
    raw = paths["right"].read_bytes()
    trunc = tmp_path / "t" / "MANO_RIGHT.pkl"
    trunc.parent.mkdir()
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ManoFormatError, match="truncated or corrupt"):
        load_mano_arrays(trunc)
    body = tmp_path / "smpl" / "MANO_RIGHT.pkl"
    body.parent.mkdir()
    body.write_bytes(pickle.dumps({"v_template": np.zeros((6890, 3)), "f": np.zeros((13776, 3))}, protocol=2))
    with pytest.raises(ManoFormatError, match="body model, not a MANO hand"):
        load_mano_arrays(body)
    foreign = tmp_path / "foreign" / "MANO_RIGHT.pkl"
    foreign.parent.mkdir()
    foreign.write_bytes(pickle.dumps({"weights": np.zeros(3)}, protocol=2))
    with pytest.raises(ManoFormatError, match="missing keys"):
        load_mano_arrays(foreign)
    bad = fake_mano_arrays()["right"]
    bad["weights"] = bad["weights"][:, :15]
    p = tmp_path / "shape" / "MANO_RIGHT.pkl"
    p.parent.mkdir()
    p.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ManoFormatError, match="weights has shape"):
        load_mano_arrays(p)
    only_right = ManoModel(paths["right"])
    with pytest.raises(ValueError, match="no left hand"):
        only_right(torch.eye(3).expand(1, 16, 3, 3), torch.zeros(1, 10), "left")
    nan = torch.eye(3).expand(1, 16, 3, 3).clone()
    nan[0, 3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        only_right(nan, torch.zeros(1, 10))
    with pytest.raises(ValueError, match="unknown hand side"):
        only_right(torch.eye(3).expand(1, 16, 3, 3), torch.zeros(1, 10), "middle")


def test_left_shapedirs_fix_is_logged_and_optional(mano_dir, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="handflow.hand.mano"):
        fixed = ManoModel(mano_dir)
    assert fixed.left_shapedirs_fixed and "flipped the x-component" in caplog.text
    raw = ManoModel(mano_dir, fix_left_shapedirs=False)
    assert not raw.left_shapedirs_fixed
    sd_f, sd_r = fixed.buffer("left", "shapedirs"), raw.buffer("left", "shapedirs")
    assert torch.equal(sd_f[:, 0], -sd_r[:, 0]) and torch.equal(sd_f[:, 1:], sd_r[:, 1:])


def test_faces_are_outward_for_both_sides(mano_dir) -> None:
    model = ManoModel(mano_dir).double()
    for side in ("right", "left"):
        out = model(torch.eye(3, dtype=torch.float64).expand(1, 16, 3, 3), torch.zeros(1, 10, dtype=torch.float64), side)
        v, f = out.vertices[0], model.faces_for(side)
        vol = (v[f[:, 0]] * torch.linalg.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
        assert vol > 0, side


def test_pca_prior_matches_multivariate_normal(mano_dir) -> None:
    model = ManoModel(mano_dir)
    prior = model.pose_prior
    g = torch.Generator().manual_seed(0)
    R = prior.sample(16, "right", g)
    assert torch.equal(R, prior.sample(16, "right", torch.Generator().manual_seed(0)))
    c = prior.coefficients(R.double(), "right")
    L = prior.right_chol
    ref = torch.distributions.MultivariateNormal(prior.right_mu, scale_tril=L).log_prob(c)
    assert torch.allclose(prior.log_prob(R.double(), "right"), ref, atol=1e-6)
    # the mean pose is more likely than an extreme articulation
    from handflow.geometry import axis_angle_to_matrix

    mean_aa = (prior.right_mu @ prior.right_components + prior.right_mean).reshape(1, 15, 3)
    extreme = torch.full((1, 15, 3), 2.5, dtype=torch.float64)
    assert prior.log_prob(axis_angle_to_matrix(mean_aa), "right") > prior.log_prob(axis_angle_to_matrix(extreme), "right")


def test_registry_loads_mano(mano_dir) -> None:
    model = load_hand_model("mano", path=mano_dir)
    assert isinstance(model, ManoModel) and model.name == "mano"
    assert model.pose_mean("left").shape == (15, 3)
