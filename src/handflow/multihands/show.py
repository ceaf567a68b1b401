"""Figure of one image's MultiHands annotations (like the paper's Figure 3).

Left: the crop with every annotation projected (they coincide on the visible joints; the
ground truth's visible joints are white dots, occluded ones crosses). Middle and right: the
annotations from two novel views (side and top), where they spread out in 3D; the ground truth
is drawn bold and its joints coloured by the annotations' per-joint spread (mm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from handflow.geometry.camera import project
from handflow.metrics.spread import per_joint_spread
from handflow.viz.predictions import draw_skeleton, novel_view, to_uint8_image

__all__ = ["plot_multihands", "NOVEL_VIEWS"]

#: (yaw, pitch, title) of the two novel views, degrees
NOVEL_VIEWS = ((90.0, 0.0, "side view (yaw 90°)"), (0.0, -80.0, "top view (pitch −80°)"))


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if joints.ndim != 3 or joints.shape[0] < 1:
        raise ValueError(f"joints must be (n >= 1, 42, 3), got {tuple(joints.shape)}: this image has no annotation")
    K, gt, x = (t.detach().cpu().double() for t in (torch.as_tensor(K), torch.as_tensor(gt_joints), torch.as_tensor(joints)))
    vis = torch.as_tensor(gt_visible, dtype=torch.bool).numpy()
    if image is None:
        img = np.full((size, size, 3), 200, np.uint8)
    else:
        img = to_uint8_image(image)
    spread = per_joint_spread(x).numpy() if len(x) > 1 else np.zeros(gt.shape[0])
    drawn = x[:max_drawn]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8))
    ax = axes[0]
    ax.imshow(img, extent=(0, img.shape[1], img.shape[0], 0))
    for s in project(drawn, K).numpy():
        draw_skeleton(ax, s, alpha=0.15, lw=1.0)
    g2 = project(gt[None], K)[0].numpy()
    ax.scatter(g2[vis, 0], g2[vis, 1], s=14, c="white", edgecolors="k", lw=0.6, zorder=3, label="visible (GT)")
    ax.scatter(g2[~vis, 0], g2[~vis, 1], s=14, c="k", marker="x", lw=0.8, zorder=3, label="occluded (GT)")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_title("camera view: all annotations projected", fontsize=9)
    ax.axis("off")
    centre = torch.cat([x, gt[None]]).reshape(-1, 3).mean(0)
    vmax = max(float(spread.max()), 1e-6)
    sc = None
    for ax, (yaw, pitch, name) in zip(axes[1:], NOVEL_VIEWS):
        for s in drawn:
            draw_skeleton(ax, novel_view(s, yaw, pitch, centre).numpy(), alpha=0.12, lw=1.0)
        v = novel_view(gt, yaw, pitch, centre).numpy()
        draw_skeleton(ax, v, alpha=1.0, lw=2.0)
        sc = ax.scatter(v[:, 0], v[:, 1], c=spread, cmap="viridis", vmin=0, vmax=vmax, s=22, zorder=3,
                        edgecolors="k", linewidths=0.3)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_title(f"novel view: {name}", fontsize=9)
        ax.set_xlabel("mm")
    cb = fig.colorbar(sc, ax=axes[1:], fraction=0.03, pad=0.02)
    cb.set_label("per-joint spread of the annotations (mm)")
    fig.suptitle(title or f"{len(x)} MultiHands annotations (bold: ground truth), mean spread "
                 f"{spread.mean():.1f} mm; visible {spread[vis].mean() if vis.any() else float('nan'):.1f} mm, "
                 f"occluded {spread[~vis].mean() if (~vis).any() else float('nan'):.1f} mm", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
