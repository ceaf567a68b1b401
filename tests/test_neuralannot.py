"""NeuralAnnot conversion against posing in the world frame the InterHand2.6M way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_rotmats

from handflow.geometry import axis_angle_to_matrix, world_to_camera
from handflow.hand import load_hand_model
from handflow.hand.neuralannot import camera_to_neuralannot, neuralannot_to_camera
from handflow.testing.mano import write_fake_mano

f64 = torch.float64


@pytest.fixture(scope="module", params=["openhand", "mano"])
def model(request, tmp_path_factory):
    if request.param == "openhand":
        return load_hand_model("openhand").double()
    d = tmp_path_factory.mktemp("mano")
    write_fake_mano(d)
    return load_hand_model("mano", path=d).double()


def _world_pose_interhand_way(model, pose, shape, trans, side):
    """Independent: MANO-style world posing = rotate the shaped rest hand about its rest
    wrist J0, then add trans (metres -> mm). Uses only the model at identity global
    rotation plus explicit rigid maths."""
    B = pose.shape[0]
    R_g = axis_angle_to_matrix(pose[:, :3])
    fingers = axis_angle_to_matrix(pose[:, 3:].reshape(B, 15, 3) + model.pose_mean(side).to(pose))
    eye = torch.eye(3, dtype=f64).expand(B, 1, 3, 3)
    local = model(torch.cat([eye, fingers], 1), shape, side)  # wrist-centred, no global rotation
    J0 = model.rest_wrist(shape, side)
    verts = (local.vertices @ R_g.transpose(-1, -2)) + J0[:, None] + 1000 * trans[:, None]
    return verts


@pytest.mark.parametrize("side", ["right", "left"])
def test_camera_frame_matches_world_posing(model, side: str) -> None:
    g = torch.Generator().manual_seed(7)
    B = 4
    pose = torch.randn(B, 48, generator=g, dtype=f64) * 0.3
    shape = torch.randn(B, 10, generator=g, dtype=f64)
    trans = torch.randn(B, 3, generator=g, dtype=f64) * 0.1
    camrot = random_rotmats(B, g)
    campos = torch.randn(B, 3, generator=g, dtype=f64) * 800
    rotmats, betas, root = neuralannot_to_camera(pose, shape, trans, camrot, campos, model, side)
    ours = model(rotmats, betas, side).vertices + root[:, None]
    ref = world_to_camera(_world_pose_interhand_way(model, pose, shape, trans, side), camrot, campos)
    assert torch.allclose(ours, ref, atol=1e-6)
    back = camera_to_neuralannot(rotmats, betas, root, camrot, campos, model, side)
    r2, b2, root2 = neuralannot_to_camera(*back, camrot, campos, model, side)
    assert torch.allclose(r2, rotmats, atol=1e-9) and torch.allclose(root2, root, atol=1e-6)
    assert torch.allclose(back[2], trans, atol=1e-9)


def test_bad_input(model) -> None:
    z = torch.zeros(1, 48, dtype=f64)
    rest = (torch.zeros(1, 10, dtype=f64), torch.zeros(1, 3, dtype=f64), torch.eye(3, dtype=f64)[None],
            torch.zeros(1, 3, dtype=f64))  # shape, trans, camrot, campos
    with pytest.raises(ValueError, match="pose must be"):
        neuralannot_to_camera(z[:, :45], *rest, model, "right")
    bad = z.clone()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        neuralannot_to_camera(bad, *rest, model, "right")
    with pytest.raises(ValueError, match="unknown hand side"):
        neuralannot_to_camera(z, *rest, model, "up")
