"""Figures of predicted two-hand distributions.

* :func:`plot_prediction`: the input crop with the projected z = 0 estimate and the samples
  (they must agree on visible joints), then the samples from two novel views superimposed,
  joints coloured by their per-joint spread (mm).
* :func:`write_samples_html`: an interactive 3D view (plotly, self-contained HTML).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from handflow.constants import IH42_PARENTS, NUM_HAND_JOINTS
from handflow.geometry.camera import project
from handflow.metrics.spread import per_joint_spread

__all__ = ["plot_prediction", "write_samples_html", "novel_view", "to_uint8_image", "draw_skeleton"]

HAND_COLORS = ("#e4572e", "#2e86ab")  # right, left


def novel_view(points: Tensor, yaw_deg: float, pitch_deg: float = 0.0, center: Tensor | None = None) -> Tensor:
    """Rotate camera-frame points (..., 3) about their centre: yaw about the image's vertical
    axis (y), then pitch about x. Returns the rotated points (same shape)."""
    c = points.reshape(-1, 3).mean(0) if center is None else center
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=points.dtype)
    Rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]], dtype=points.dtype)
    return (points - c) @ (Rx @ Ry).T + c


def to_uint8_image(image: np.ndarray | Tensor) -> np.ndarray:
    """(H, W, 3) uint8 or (3, H, W) float in [0, 1] -> (H, W, 3) uint8 numpy."""
    img = image.detach().cpu() if isinstance(image, Tensor) else torch.as_tensor(image)
    if img.dim() == 3 and img.shape[0] == 3:
        img = (img.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8)
    return img.numpy()


def draw_skeleton(ax, pts: np.ndarray, alpha: float = 1.0, lw: float = 1.5) -> None:
    """Draw the 42-joint two-hand skeleton ``pts`` (42, >=2) on a matplotlib axis."""
    for j, p in enumerate(IH42_PARENTS):
        if p < 0:
            continue
        col = HAND_COLORS[0 if j < NUM_HAND_JOINTS else 1]
        ax.plot(pts[[j, p], 0], pts[[j, p], 1], color=col, alpha=alpha, lw=lw, solid_capstyle="round")


def plot_prediction(
    image: np.ndarray | Tensor,
    K: Tensor,
    z0: Tensor,
    samples: Tensor,
    path: str | Path,
    title: str = "",
    max_drawn: int = 40,
    gt: Tensor | None = None,
) -> Path:
    """Three-panel figure.

    Args:
        image: (H, W, 3) uint8 or (3, H, W) float in [0, 1], the crop the model saw.
        K: (3, 3) crop intrinsics.
        z0: (42, 3) camera-frame z = 0 estimate, mm.
        samples: (S, 42, 3) camera-frame samples, mm.
        path: output PNG.
        title: figure title.
        max_drawn: at most this many samples are drawn as skeletons.
        gt: optional (42, 3) ground truth drawn dashed in black.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = to_uint8_image(image)
    K, z0, samples = K.detach().cpu().double(), z0.detach().cpu().double(), samples.detach().cpu().double()
    spread = per_joint_spread(samples).numpy()
    drawn = samples[: max_drawn]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8))
    ax = axes[0]
    ax.imshow(img, extent=(0, img.shape[1], img.shape[0], 0))
    for s in project(drawn, K).numpy():
        draw_skeleton(ax, s, alpha=0.15, lw=1.0)
    draw_skeleton(ax, project(z0[None], K)[0].numpy(), alpha=1.0, lw=2.2)
    if gt is not None:
        g2 = project(gt.detach().cpu().double()[None], K)[0].numpy()
        ax.scatter(g2[:, 0], g2[:, 1], s=10, facecolors="none", edgecolors="k", lw=0.8, label="ground truth")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_title("input + z=0 estimate (bold) + samples", fontsize=9)
    ax.axis("off")
    centre = samples.reshape(-1, 3).mean(0)
    vmax = max(float(spread.max()), 1e-6)
    for ax, (yaw, pitch, name) in zip(axes[1:], ((90.0, 0.0, "side view (90°)"), (0.0, -80.0, "top view"))):
        for s in drawn:
            v = novel_view(s, yaw, pitch, centre).numpy()
            draw_skeleton(ax, v, alpha=0.12, lw=1.0)
        v0 = novel_view(z0, yaw, pitch, centre).numpy()
        draw_skeleton(ax, v0, alpha=1.0, lw=2.0)
        sc = ax.scatter(v0[:, 0], v0[:, 1], c=spread, cmap="viridis", vmin=0, vmax=vmax, s=22, zorder=3, edgecolors="k", linewidths=0.3)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_title(f"samples, {name}", fontsize=9)
        ax.set_xlabel("mm")
    cb = fig.colorbar(sc, ax=axes[1:], fraction=0.03, pad=0.02)
    cb.set_label("per-joint spread (mm)")
    fig.suptitle(title or f"{len(samples)} samples, mean spread {spread.mean():.1f} mm", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_samples_html(z0: Tensor, samples: Tensor, path: str | Path, max_drawn: int = 100) -> Path:
    """Interactive 3D view of the samples (thin) and the z = 0 estimate (bold), camera frame.

    Args:
        z0: (42, 3) mm.
        samples: (S, 42, 3) mm.
        path: output ``.html`` (self-contained apart from the plotly.js bundle, which is
            embedded so it works offline).
    """
    import plotly.graph_objects as go

    z0 = z0.detach().cpu().double().numpy()
    samples = samples.detach().cpu().double().numpy()[:max_drawn]
    spread = per_joint_spread(torch.as_tensor(samples)).numpy()
    traces = []
    for k, pts in enumerate([*samples, z0]):
        bold = k == len(samples)
        for h in range(2):
            xs, ys, zs = [], [], []
            for j in range(h * NUM_HAND_JOINTS, (h + 1) * NUM_HAND_JOINTS):
                p = IH42_PARENTS[j]
                if p < 0:
                    continue
                xs += [pts[j, 0], pts[p, 0], None]
                ys += [pts[j, 1], pts[p, 1], None]
                zs += [pts[j, 2], pts[p, 2], None]
            traces.append(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", showlegend=False, hoverinfo="skip",
                                       line=dict(color=HAND_COLORS[h], width=6 if bold else 1.5),
                                       opacity=1.0 if bold else 0.25))
    traces.append(go.Scatter3d(x=z0[:, 0], y=z0[:, 1], z=z0[:, 2], mode="markers", name="z=0 estimate",
                               marker=dict(size=4, color=spread, colorscale="Viridis", colorbar=dict(title="spread mm")),
                               text=[f"joint {j}: spread {s:.1f} mm" for j, s in enumerate(spread)]))
    fig = go.Figure(traces)
    fig.update_layout(scene=dict(aspectmode="data", xaxis_title="x (mm)", yaxis_title="y (mm)", zaxis_title="z (mm)",
                                 camera=dict(up=dict(x=0, y=-1, z=0), eye=dict(x=0, y=0, z=-2))),
                      title=f"{len(samples)} samples (camera frame, mm)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True)
    return path
