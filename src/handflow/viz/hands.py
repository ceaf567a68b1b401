"""Figures of hand models: a gallery of both hands in a few poses, front and side views.

Drawing is plain matplotlib: an orthographic painter's algorithm (faces sorted back to
front, Lambert shading) plus the 21-joint skeleton on top, so it needs no OpenGL.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, IH_PARENTS, MANO_FINGERS, NUM_BETAS, NUM_MANO_JOINTS
from handflow.extras import pyplot
from handflow.hand.base import HandModel, HandOutput, mirror_rotmats
from handflow.hand.mano_prior import ManoPCAPrior
from handflow.hand.openhand_prior import OpenHandPrior

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_hand_gallery", "gallery_poses", "draw_mesh"]

SKIN = {"right": (0.93, 0.74, 0.60), "left": (0.72, 0.78, 0.93)}
LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])
#: view rotation (rows = screen x, screen y, towards viewer) of the rest-frame hand seen from
#: its back with the fingers up: fingers (−x) -> up, back of the hand (+y) -> viewer
FRONT_VIEW = {
    "right": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    # the mirrored left hand points its fingers towards +x, its thumb is still +z
    "left": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
}
#: separation of the two hands in the figure, mm
PAIR_GAP_MM = 95.0
FINGER_COLORS = {"thumb": "#d62728", "index": "#2ca02c", "middle": "#1f77b4", "ring": "#9467bd", "pinky": "#ff7f0e"}


def _finger_pose(components_deg: dict[str, tuple[tuple[float, float, float], ...]],
                 prior: ManoPCAPrior | OpenHandPrior) -> Tensor:
    """(15, 3, 3) rotations from per-finger (twist, spread, flex) degrees, root -> distal,
    through ``prior.from_components`` (both built-in priors have it; ``PosePrior`` does not
    require it, so a model of another backend gets a clear error)."""
    if not callable(getattr(prior, "from_components", None)):
        raise TypeError(f"the hand gallery needs a pose prior with from_components(comps, side) (anatomical angles -> "
                        f"rotations); {type(prior).__name__} has none")
    comps = torch.zeros(1, NUM_MANO_JOINTS - 1, 3, dtype=torch.float64)
    for f, levels in components_deg.items():
        for j, c in zip(MANO_FINGERS[f], levels):
            comps[0, j - 1] = torch.tensor(c, dtype=torch.float64).deg2rad()
    return prior.from_components(comps)[0].float()


def gallery_poses(model: HandModel, seed: int = 0) -> dict[str, Tensor]:
    """Named right-hand articulations (15, 3, 3): rest, fist, pinch, point, prior sample."""
    prior = model.pose_prior
    curl = ((0, 0, 80), (0, 0, 100), (0, 0, 65))
    fist_thumb = ((0, 0, 40), (0, 0, 40), (0, 0, 50))
    poses = {
        "rest": torch.eye(3).expand(NUM_MANO_JOINTS - 1, 3, 3).clone(),
        "fist": _finger_pose({**{f: curl for f in FINGER_NAMES if f != "thumb"}, "thumb": fist_thumb}, prior),
        "pinch": _finger_pose(
            {
                "index": ((0, 0, 45), (0, 0, 55), (0, 0, 30)),
                "middle": ((0, -5, 15), (0, 0, 20), (0, 0, 10)),
                "ring": ((0, -8, 20), (0, 0, 25), (0, 0, 10)),
                "pinky": ((0, -10, 25), (0, 0, 30), (0, 0, 15)),
                "thumb": ((0, -20, 40), (0, 0, 20), (0, 0, 25)),
            },
            prior,
        ),
        "point": _finger_pose(
            {"index": ((0, 0, 0), (0, 0, 0), (0, 0, 0)), **{f: curl for f in ("middle", "ring", "pinky")}, "thumb": fist_thumb},
            prior,
        ),
        "prior sample": prior.sample(1, "right", torch.Generator().manual_seed(seed))[0],
    }
    return poses


def _shade(V: np.ndarray, F: np.ndarray, color: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen-space V (N,3) -> (polygons (F,3,2), rgb (F,3), depth (F,)) of front faces."""
    tri = V[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    front = n[:, 2] > 0
    lam = 0.28 + 0.72 * np.clip(n @ LIGHT, 0.0, 1.0)
    rgb = np.clip(np.asarray(color)[None] * lam[:, None], 0, 1)
    return tri[front][:, :, :2], rgb[front], tri[front][:, :, 2].mean(1)


def draw_mesh(ax: Axes, hands: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]]) -> None:
    """Draw meshes with skeletons on ``ax``. ``hands``: (verts (V,3), faces (F,3), joints
    (21,3), colour) in screen coordinates (x right, y up, z towards the viewer)."""
    # lazy: matplotlib is the [viz] extra
    from matplotlib.collections import LineCollection, PolyCollection

    polys, cols, depth = [], [], []
    for V, F, _, color in hands:
        p, c, d = _shade(V, F, color)
        polys.append(p), cols.append(c), depth.append(d)
    P, C, D = np.concatenate(polys), np.concatenate(cols), np.concatenate(depth)
    order = np.argsort(D)
    ax.add_collection(PolyCollection(P[order], facecolors=C[order], edgecolors=C[order], linewidths=0.2))
    for _, _, Jt, _ in hands:
        segs, colors = [], []
        for i, p in enumerate(IH_PARENTS):
            if p >= 0:
                segs.append([Jt[i, :2], Jt[p, :2]])
                colors.append(FINGER_COLORS[FINGER_NAMES[min(i // 4, 4)]])
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=1.2, zorder=3))
        ax.scatter(Jt[:, 0], Jt[:, 1], s=4, c="k", zorder=4)
    allv = np.concatenate([h[0] for h in hands])
    lo, hi = allv.min(0), allv.max(0)
    c, r = (lo + hi) / 2, (hi - lo)[:2].max() / 2 * 1.05
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_aspect("equal")
    ax.axis("off")


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def plot_hand_gallery(model: HandModel, path: str | Path, seed: int = 0, betas: Tensor | None = None) -> Path:
    """Write a PNG: both hands of ``model`` in five poses (rows), front and side views.

    Args:
        model: any :class:`HandModel`.
        path: output PNG path.
        seed: seed of the prior sample.
        betas: optional (10,) shape; zeros by default.

    Returns:
        the written path.
    """
    plt = pyplot()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    poses = gallery_poses(model, seed)
    b = torch.zeros(1, NUM_BETAS) if betas is None else betas.reshape(1, NUM_BETAS).float()
    views = {
        "front (back of hand)": FRONT_VIEW,
        "side (thumb side)": {"right": _rot_y(-90) @ FRONT_VIEW["right"], "left": _rot_y(90) @ FRONT_VIEW["left"]},
    }
    fig, axes = plt.subplots(len(poses), len(views), figsize=(4.2 * len(views), 3.6 * len(poses)))
    for row, (pname, fingers) in enumerate(poses.items()):
        rot = torch.cat([torch.eye(3)[None], fingers], 0)[None]
        outs: dict[str, HandOutput] = {
            "right": model(rot, b, side="right"),
            "left": model(mirror_rotmats(rot), b, side="left"),
        }
        for col, (vname, M) in enumerate(views.items()):
            hands = []
            for side, dx in (("left", -PAIR_GAP_MM), ("right", PAIR_GAP_MM)):
                o = outs[side]
                shift = np.array([dx, 0.0, 0.0])
                V = o.vertices[0].detach().double().numpy() @ M[side].T + shift
                J = o.joints[0].detach().double().numpy() @ M[side].T + shift
                hands.append((V, model.faces_for(side).numpy(), J, SKIN[side]))
            ax = axes[row, col]
            draw_mesh(ax, hands)
            ax.set_title(f"{pname}: {vname}", fontsize=9)
    fig.suptitle(f"{model.name}: left (blue) and right (skin) hand, V={model.num_vertices}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
