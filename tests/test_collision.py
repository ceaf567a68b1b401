"""Gaussian-proxy collision on constructed two-hand configurations (no mesh model needed)."""

from __future__ import annotations

import math

import pytest
import torch

from handflow.constants import FINGER_NAMES, IH_JOINT_NAMES, IH_WRIST, NUM_HAND_JOINTS
from handflow.hand import HandOutput
from handflow.hand.collision import (
    PROXY_NAMES,
    TIP_PULLBACK,
    collide,
    hand_proxies,
    num_proxies,
    penetration,
)

F64 = torch.float64
J = {n: i for i, n in enumerate(IH_JOINT_NAMES)}
#: bone lengths (mm) per finger, levels 1..4 (wrist->base .. distal->tip), and the finger's
#: direction in the palm plane (degrees from +x towards +z)
BONES = {
    "thumb": ((32.0, 42.0, 32.0, 27.0), 50.0),
    "index": ((89.0, 41.0, 24.0, 21.0), 14.0),
    "middle": ((90.0, 46.0, 27.0, 22.0), 2.0),
    "ring": ((86.0, 43.0, 26.0, 21.0), -10.0),
    "pinky": ((82.0, 33.0, 20.0, 18.5), -22.0),
}


def flat_hand() -> torch.Tensor:
    """(21, 3) flat right hand in the y=0 plane: wrist at the origin, fingers straight."""
    out = torch.zeros(NUM_HAND_JOINTS, 3, dtype=F64)
    for f in FINGER_NAMES:
        lengths, angle = BONES[f]
        a = math.radians(angle)
        direction = torch.tensor([math.cos(a), 0.0, math.sin(a)], dtype=F64)
        pos = torch.zeros(3, dtype=F64)
        for level, length in enumerate(lengths, start=1):  # IH: f1 base ... f4 tip
            pos = pos + length * direction
            out[J[f"{f}{level}"]] = pos
    return out


def mirror(h: torch.Tensor, c: float) -> torch.Tensor:
    """Reflect joints through the plane x = c (a left hand facing the right one)."""
    out = h.clone()
    out[..., 0] = 2 * c - out[..., 0]
    return out


def ref_collide(jr: torch.Tensor, jl: torch.Tensor, margin: float = 0.0) -> list[bool]:
    """Brute force over every right x left proxy pair."""
    cr, sr = hand_proxies(jr)
    cl, sl = hand_proxies(jl)
    out = []
    for b in range(jr.shape[0]):
        hit = False
        for i in range(cr.shape[1]):
            for j in range(cl.shape[1]):
                d = math.dist(cr[b, i].tolist(), cl[b, j].tolist())
                hit = hit or d < sr[b, i].item() + sl[b, j].item() + margin
        out.append(hit)
    return out


def contact_plane(h: torch.Tensor) -> tuple[float, str]:
    """x = c* at which the mirrored hands' spheres touch, and the touching proxy's name."""
    c, s = hand_proxies(h[None])
    ext = c[0, :, 0] + s[0]
    k = int(ext.argmax())
    return ext[k].item(), PROXY_NAMES[k]


# ---------------------------------------------------------------------------- proxies
def test_proxy_centres_and_radii_follow_the_table() -> None:
    h = flat_hand()
    c, s = hand_proxies(h[None])
    assert c.shape == (1, num_proxies(), 3) and s.shape == (1, num_proxies())
    name = {n: k for k, n in enumerate(PROXY_NAMES)}
    bone = lambda a, b: (h[J[a]] - h[J[b]]).norm().item()  # noqa: E731
    # index PIP ("index2"): 0.32 of its bone, sigma_src = f L / 3, radius sqrt(4.5) sigma_src
    assert s[0, name["index2"]].item() == pytest.approx(0.32 * bone("index2", "index1") / math.sqrt(2))
    level1 = [bone(f"{f}1", "wrist") for f in FINGER_NAMES]
    assert s[0, name["wrist"]].item() == pytest.approx(0.33 * sum(level1) / 5 / math.sqrt(2))
    tip = (1 - TIP_PULLBACK) * h[J["middle4"]] + TIP_PULLBACK * h[J["middle3"]]
    torch.testing.assert_close(c[0, name["middle4"]], tip)
    assert s[0, name["middle4"]].item() == pytest.approx(0.28 * bone("middle4", "middle3") / math.sqrt(2))
    torch.testing.assert_close(c[0, name["wrist"]], h[IH_WRIST])


def test_proxies_scale_and_translate_with_the_hand() -> None:
    h = flat_hand()[None]
    c, s = hand_proxies(h)
    c2, s2 = hand_proxies(2.0 * h + torch.tensor([10.0, -5.0, 300.0], dtype=F64))
    torch.testing.assert_close(s2, 2 * s)
    torch.testing.assert_close(c2, 2 * c + torch.tensor([10.0, -5.0, 300.0], dtype=F64))


def test_proxies_cover_the_skeleton() -> None:
    """Consecutive spheres along every finger overlap: no gap a finger could pass through."""
    c, s = hand_proxies(flat_hand()[None])
    for f in FINGER_NAMES:
        chain = [k for k, n in enumerate(PROXY_NAMES) if f in n and "web" not in n]
        pts = sorted(chain, key=lambda k: c[0, k, 0].item())
        for a, b in zip(pts, pts[1:]):
            assert (c[0, a] - c[0, b]).norm() < s[0, a] + s[0, b], (PROXY_NAMES[a], PROXY_NAMES[b])


# -------------------------------------------------------------------------- collision
def test_far_apart_and_interpenetrating() -> None:
    h = flat_hand()[None]
    far = mirror(h, 1000.0)
    assert not collide(h, far).item()
    assert penetration(h, far).item() == 0.0
    same = h.clone()  # the same place: every sphere overlaps its twin
    assert collide(h, same).item()
    assert penetration(h, same).item() > 0


def test_touching_fingertips_exact_threshold() -> None:
    h = flat_hand()[None]
    c_star, who = contact_plane(h[0])
    assert who == "middle4"  # the longest finger's tip touches first
    eps = 1e-6
    above, below = mirror(h, c_star + eps), mirror(h, c_star - eps)
    assert not collide(h, above).item() and penetration(h, above).item() == 0.0
    assert collide(h, below).item() and penetration(h, below).item() > 0.0
    # margin: the same contact now needs 5 mm more clearance
    assert collide(h, mirror(h, c_star + 4.0), margin=10.0).item()
    assert not collide(h, mirror(h, c_star + 6.0), margin=10.0).item()


def test_penalty_monotone_in_overlap() -> None:
    h = flat_hand()[None]
    c_star, _ = contact_plane(h[0])
    depths = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0]
    pen = [penetration(h, mirror(h, c_star - d)).item() for d in depths]
    assert all(a < b for a, b in zip(pen, pen[1:])), pen
    # one pair at depth 2d when the plane moves by d: penalty (2d)^2 while only it overlaps
    assert pen[0] == pytest.approx((2 * 0.5) ** 2, rel=1e-9)


def test_mixed_batch_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    h = flat_hand()
    B = 24
    right = h + torch.randn(B, NUM_HAND_JOINTS, 3, generator=g, dtype=F64) * 4
    c_star, _ = contact_plane(h)
    planes = c_star + torch.linspace(-30.0, 30.0, B, dtype=F64)
    left = torch.stack([mirror(h, p.item()) for p in planes])
    left = left + torch.randn(B, NUM_HAND_JOINTS, 3, generator=g, dtype=F64) * 4
    left[::5] += torch.tensor([0.0, 0.0, 300.0], dtype=F64)  # some far apart sideways
    got = collide(right, left)
    want = ref_collide(right, left)
    assert got.tolist() == want
    assert 0 < sum(want) < B  # really mixed
    pen = penetration(right, left)
    assert ((pen > 0) == got).all()
    assert collide(right, left, margin=3.0).tolist() == ref_collide(right, left, margin=3.0)


def test_gradients_finite_and_correct() -> None:
    h = flat_hand()[None]
    c_star, _ = contact_plane(h[0])
    left = mirror(h, c_star - 15.0).requires_grad_(True)
    right = h.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penetration, (right, left))
    same = h.clone().requires_grad_(True)  # coincident centres
    penetration(h, same).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_inputs_handoutput_and_bad() -> None:
    h = flat_hand()[None]
    out_r = HandOutput(vertices=torch.zeros(1, 4, 3, dtype=F64), joints=h)
    out_l = HandOutput(vertices=torch.zeros(1, 4, 3, dtype=F64), joints=mirror(h, 500.0))
    assert not collide(out_r, out_l).item()
    with pytest.raises(ValueError, match=r"\(B, 21, 3\)"):
        collide(h[:, :20], h)
    with pytest.raises(ValueError, match="batch sizes differ"):
        collide(h, h.expand(2, -1, -1))
    bad = h.clone()
    bad[0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        penetration(h, bad)


def test_openhand_rest_poses() -> None:
    openhand = pytest.importorskip("handflow.hand.openhand")
    model = openhand.OpenHand()
    rot = torch.eye(3).expand(1, 16, 3, 3).clone()
    betas = torch.zeros(1, 10)
    right = model(rot, betas, side="right")
    left = model(rot, betas, side="left")
    assert collide(right, left).item()  # both wrists at the origin
    shifted = left.translate(torch.tensor([[0.0, 0.0, 400.0]]))
    assert not collide(right, shifted).item()
    assert penetration(right, shifted).item() == 0.0
