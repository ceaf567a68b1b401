"""Figure of one image's MultiHands annotations (like the paper's Figure 3).

Left: the crop with every annotation projected (they coincide on the visible joints; the
ground truth's visible joints are white dots, occluded ones crosses). Middle and right: the
annotations from two novel views (side and top), where they spread out in 3D; the ground truth
is drawn bold and its joints coloured by the annotations' per-joint spread (mm).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from handflow.geometry.camera import project
from handflow.metrics.spread import per_joint_spread
from handflow.viz.predictions import NOVEL_VIEWS, plot_skeleton_set, to_uint8_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_multihands", "NOVEL_VIEWS"]



def plot_multihands(
    image: np.ndarray | Tensor | None,
    K: Tensor,
    gt_joints: Tensor,
    joints: Tensor,
    gt_visible: Tensor,
    path: str | Path,
    size: int,
    title: str = "",
    max_drawn: int = 100,
) -> Path:
    """Write the three-panel figure.

    Args:
        image: (3, S, S) float in [0, 1] or (S, S, 3) uint8 crop; None draws a grey canvas.
        K: (3, 3) crop intrinsics.
        gt_joints: (42, 3) camera-frame ground truth, mm.
        joints: (n, 42, 3) camera-frame annotations, mm (n ≥ 1).
        gt_visible: (42,) bool.
        path: output PNG.
        size: crop side S in pixels.
        title: figure title (default: counts and mean spread).
        max_drawn: at most this many annotations are drawn.
    """
    if joints.ndim != 3 or joints.shape[0] < 1:
        raise ValueError(f"joints must be (n >= 1, 42, 3), got {tuple(joints.shape)}: this image has no annotation")
    K, gt, x = (t.detach().cpu().double() for t in (torch.as_tensor(K), torch.as_tensor(gt_joints), torch.as_tensor(joints)))
    vis = torch.as_tensor(gt_visible, dtype=torch.bool).numpy()
    if image is None:
        img = np.full((size, size, 3), 200, np.uint8)
    else:
        img = to_uint8_image(image)
    spread = per_joint_spread(x).numpy() if len(x) > 1 else np.zeros(gt.shape[0])

    def visibility_marks(ax: Axes) -> None:
        g2 = project(gt[None], K)[0].numpy()
        ax.scatter(g2[vis, 0], g2[vis, 1], s=14, c="white", edgecolors="k", lw=0.6, zorder=3, label="visible (GT)")
        ax.scatter(g2[~vis, 0], g2[~vis, 1], s=14, c="k", marker="x", lw=0.8, zorder=3, label="occluded (GT)")
        ax.legend(loc="lower right", fontsize=7)

    suptitle = title or (f"{len(x)} MultiHands annotations (bold: ground truth), mean spread {spread.mean():.1f} mm; "
                         f"visible {spread[vis].mean() if vis.any() else float('nan'):.1f} mm, "
                         f"occluded {spread[~vis].mean() if (~vis).any() else float('nan'):.1f} mm")
    return plot_skeleton_set(img, K, x[:max_drawn], gt, spread, path, "camera view: all annotations projected",
                             "novel view: {name}", "per-joint spread of the annotations (mm)", suptitle,
                             bold_in_camera=False, annotate_camera=visibility_marks)
