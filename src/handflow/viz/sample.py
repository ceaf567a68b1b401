"""Figure of one dataset item: the crop with 2D joints (visible filled, occluded hollow) and
both hands' 3D skeletons from the side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from handflow.constants import IH42_PARENTS, NUM_HAND_JOINTS
from handflow.viz.predictions import HAND_COLORS, novel_view

__all__ = ["plot_item"]


def plot_item(item: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Draw a dataset item (``handflow.data.InterHandDataset``) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = item["image"].permute(1, 2, 0).clamp(0, 1).numpy()
    j2, j3 = item["joints_2d"].numpy(), item["joints_cam"].double()
    vis, valid = item["visible"].numpy(), item["joint_valid"].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    ax = axes[0]
    S = img.shape[0]
    ax.imshow(img, extent=(0, S, S, 0))
    side = novel_view(j3, 90.0, 0.0, j3[torch_valid(valid)].mean(0)).numpy()
    for pts, a in ((j2, ax), (side, axes[1])):
        for j, p in enumerate(IH42_PARENTS):
            if p >= 0 and valid[j] and valid[p]:
                a.plot(pts[[j, p], 0], pts[[j, p], 1], color=HAND_COLORS[0 if j < NUM_HAND_JOINTS else 1], lw=1.5)
    for j in np.nonzero(valid)[0]:
        c = HAND_COLORS[0 if j < NUM_HAND_JOINTS else 1]
        ax.scatter(j2[j, 0], j2[j, 1], s=22, facecolors=c if vis[j] else "none", edgecolors=c, lw=1.2, zorder=3)
    ax.set_xlim(0, S)
    ax.set_ylim(S, 0)
    ax.axis("off")
    ax.set_title(f"crop: {int(vis.sum())} visible (filled), {int((valid & ~vis).sum())} occluded (hollow)", fontsize=9)
    axes[1].set_aspect("equal")
    axes[1].invert_yaxis()
    axes[1].set_title("3D skeletons, side view (mm)", fontsize=9)
    m = item.get("meta", {})
    fig.suptitle(title or f"image {m.get('image_id')}: {m.get('file_name', '')}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def torch_valid(valid: np.ndarray):
    import torch

    return torch.from_numpy(np.asarray(valid, bool))
