"""Figure of one dataset item (``handflow show``).

Left: the crop with the 2D joints, per-hand colours (right orange, left blue), visible joints
filled and occluded (valid but not visible) joints hollow, bones from
``constants.IH42_PARENTS``. Right: both hands' 3D skeletons seen from the side (camera-frame
depth z horizontally, image-down y vertically, mm), same markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handflow.constants import IH42_PARENTS, NUM_HAND_JOINTS, NUM_JOINTS
from handflow.extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_item", "HAND_COLORS"]

HAND_COLORS = ("#e4572e", "#2e86ab")  # right, left
HAND_NAMES = ("right", "left")


def _hand(j: int) -> int:
    return 0 if j < NUM_HAND_JOINTS else 1


def _draw(ax: Axes, pts: np.ndarray, valid: np.ndarray, vis: np.ndarray, size: float) -> None:
    """Bones between valid joints, then markers: filled = visible, hollow = occluded."""
    for j, p in enumerate(IH42_PARENTS):
        if p >= 0 and valid[j] and valid[p]:
            ax.plot(pts[[j, p], 0], pts[[j, p], 1], color=HAND_COLORS[_hand(j)], lw=1.5, solid_capstyle="round")
    for j in np.nonzero(valid)[0]:
        c = HAND_COLORS[_hand(j)]
        ax.scatter(pts[j, 0], pts[j, 1], s=size, facecolors=c if vis[j] else "white", edgecolors=c, lw=1.2, zorder=3)


def plot_item(item: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Draw a dataset item (a ``handflow.data.InterHandDataset`` item) into the PNG ``path``.

    Args:
        item: dict with ``image`` (3, S, S), ``joints_2d`` (42, 2), ``joints_cam`` (42, 3) mm,
            ``joint_valid`` (42,), ``visible`` (42,), optional ``meta`` and ``hand_type``.
        path: output file (folders are created).
        title: figure title (default: image id and file name).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    matplotlib = require("matplotlib", "viz", "figures")
    matplotlib.use("Agg")
    # lazy: matplotlib is the [viz] extra (require() above names it)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    img = item["image"].permute(1, 2, 0).clamp(0, 1).numpy()
    j2 = item["joints_2d"].double().numpy()
    j3 = item["joints_cam"].double().numpy()
    valid = item["joint_valid"].numpy().astype(bool)
    vis = item["visible"].numpy().astype(bool) & valid
    if j2.shape != (NUM_JOINTS, 2) or j3.shape != (NUM_JOINTS, 3):
        raise ValueError(f"expected joints_2d (42, 2) and joints_cam (42, 3), got {j2.shape} and {j3.shape}")
    S = img.shape[0]
    fig, (ax, side) = plt.subplots(1, 2, figsize=(9.5, 4.6), gridspec_kw={"width_ratios": [1, 1]})
    ax.imshow(img, extent=(0, S, S, 0))
    _draw(ax, j2, valid, vis, 24)
    ax.set_xlim(0, S)
    ax.set_ylim(S, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"crop {S}×{S}: {int(vis.sum())} visible (filled), {int((valid & ~vis).sum())} occluded (hollow)", fontsize=9)
    _draw(side, j3[:, [2, 1]], valid, vis, 16)
    side.set_aspect("equal", adjustable="datalim")
    side.invert_yaxis()
    side.set_xlabel("depth z (mm, away from the camera →)", fontsize=8)
    side.set_ylabel("y (mm, image down)", fontsize=8)
    side.tick_params(labelsize=7)
    side.set_title("both hands from the side (camera frame)", fontsize=9)
    handles = [Line2D([], [], color=HAND_COLORS[h], lw=2, label=HAND_NAMES[h]) for h in range(2)
               if valid[h * NUM_HAND_JOINTS : (h + 1) * NUM_HAND_JOINTS].any()]
    side.legend(handles=handles, fontsize=8, loc="best")
    m = item.get("meta", {})
    fig.suptitle(title or f"image {m.get('image_id')} ({item.get('hand_type', '?')}): {m.get('file_name', '')}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
