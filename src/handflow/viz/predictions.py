"""Figures of predicted two-hand distributions.

* :func:`plot_prediction`: the input crop with the projected z = 0 estimate and the samples
  (they must agree on visible joints), then the samples from two novel views superimposed,
  joints coloured by their per-joint spread (mm).
* :func:`write_samples_html`: an interactive 3D view (plotly); the plotly.js library (5 MB) is
  written once per output folder (:data:`PLOTLY_JS`) and linked, not embedded in every page.

Needs ``handflow[viz]`` (matplotlib, plotly): a missing one is a one-line
:class:`~handflow.errors.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from handflow.atomic import write_bytes
from handflow.constants import IH42_PARENTS, NUM_HAND_JOINTS
from handflow.extras import pyplot, require
from handflow.geometry.camera import project
from handflow.metrics.spread import per_joint_spread

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_prediction", "plot_skeleton_set", "write_samples_html", "novel_view", "to_uint8_image", "draw_skeleton",
           "draw_skeletons", "NOVEL_VIEWS", "PLOTLY_JS", "write_plotly_js"]

HAND_COLORS = ("#e4572e", "#2e86ab")  # right, left
#: the plotly.js library written next to the HTML views (one copy per folder)
PLOTLY_JS = "plotly.min.js"


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


#: (child, parent) joint pairs of the 42-joint skeleton's bones, and each bone's hand colour
_BONES = np.array([(j, p) for j, p in enumerate(IH42_PARENTS) if p >= 0])
_BONE_COLORS = [HAND_COLORS[0 if j < NUM_HAND_JOINTS else 1] for j, _ in _BONES]


def draw_skeletons(ax: Axes, pts: np.ndarray, alpha: float = 1.0, lw: float = 1.5) -> None:
    """Draw ``S`` two-hand skeletons ``pts`` (S, 42, >=2) on a matplotlib axis as one line
    collection (one artist for all bones of all skeletons: 100 samples draw in a fraction of
    the time of one line per bone, ``benchmarks/bench_figures.py``)."""
    from matplotlib.collections import LineCollection  # lazy: matplotlib is the [viz] extra

    pts = np.asarray(pts)
    if pts.size == 0:
        return
    segments = np.stack([pts[:, _BONES[:, 0], :2], pts[:, _BONES[:, 1], :2]], 2).reshape(-1, 2, 2)
    ax.add_collection(LineCollection(segments, colors=_BONE_COLORS * len(pts), alpha=alpha, linewidths=lw,
                                     capstyle="round"))
    ax.autoscale_view()


def draw_skeleton(ax: Axes, pts: np.ndarray, alpha: float = 1.0, lw: float = 1.5) -> None:
    """Draw the 42-joint two-hand skeleton ``pts`` (42, >=2) on a matplotlib axis."""
    draw_skeletons(ax, np.asarray(pts)[None], alpha, lw)


#: (yaw, pitch, title) of the two novel views of the three-panel figures, degrees
NOVEL_VIEWS = ((90.0, 0.0, "side view (yaw 90°)"), (0.0, -80.0, "top view (pitch −80°)"))


def plot_skeleton_set(
    image: np.ndarray,
    K: Tensor,
    drawn: Tensor,
    bold: Tensor,
    spread: np.ndarray,
    path: str | Path,
    camera_title: str,
    view_title: str,
    spread_label: str,
    suptitle: str,
    bold_in_camera: bool = True,
    annotate_camera: Callable[[Axes], None] | None = None,
) -> Path:
    """The three-panel figure shared by predictions and MultiHands: a set of two-hand
    skeletons projected into the image, then seen from :data:`NOVEL_VIEWS`, with one bold
    skeleton whose joints are coloured by ``spread``.

    Args:
        image: (H, W, 3) uint8; K: (3, 3) float64; drawn: (n, 42, 3) camera-frame mm (faint);
        bold: (42, 3) mm; spread: (42,) mm; view_title: format string with ``{name}``;
        bold_in_camera: also project ``bold`` into the image; annotate_camera: optional
        ``f(ax)`` adding markers to the image panel.
    """
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8))
    ax = axes[0]
    ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0))
    draw_skeletons(ax, project(drawn, K).numpy(), alpha=0.15, lw=1.0)
    if bold_in_camera:
        draw_skeleton(ax, project(bold[None], K)[0].numpy(), alpha=1.0, lw=2.2)
    if annotate_camera is not None:
        annotate_camera(ax)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_title(camera_title, fontsize=9)
    ax.axis("off")
    centre = torch.cat([drawn, bold[None]]).reshape(-1, 3).mean(0)
    vmax = max(float(spread.max()), 1e-6)
    sc = None
    for ax, (yaw, pitch, name) in zip(axes[1:], NOVEL_VIEWS):
        draw_skeletons(ax, novel_view(drawn, yaw, pitch, centre).numpy(), alpha=0.12, lw=1.0)
        v = novel_view(bold, yaw, pitch, centre).numpy()
        draw_skeleton(ax, v, alpha=1.0, lw=2.0)
        sc = ax.scatter(v[:, 0], v[:, 1], c=spread, cmap="viridis", vmin=0, vmax=vmax, s=22, zorder=3,
                        edgecolors="k", linewidths=0.3)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_title(view_title.format(name=name), fontsize=9)
        ax.set_xlabel("mm")
    cb = fig.colorbar(sc, ax=axes[1:], fraction=0.03, pad=0.02)
    cb.set_label(spread_label)
    fig.suptitle(suptitle, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


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
        samples: (S, 42, 3) camera-frame samples, mm (S = 0: the estimate alone).
        path: output PNG.
        title: figure title.
        max_drawn: at most this many samples are drawn as skeletons.
        gt: optional (42, 3) ground truth drawn dashed in black.

    Returns:
        The written path.
    """
    K, z0, samples = K.detach().cpu().double(), z0.detach().cpu().double(), samples.detach().cpu().double()
    spread = per_joint_spread(samples).numpy() if len(samples) else np.zeros(len(z0))  # no samples: no spread

    def ground_truth(ax: Axes) -> None:
        g2 = project(gt.detach().cpu().double()[None], K)[0].numpy()
        ax.scatter(g2[:, 0], g2[:, 1], s=10, facecolors="none", edgecolors="k", lw=0.8, label="ground truth")
        ax.legend(loc="lower right", fontsize=7)

    return plot_skeleton_set(to_uint8_image(image), K, samples[:max_drawn], z0, spread, path,
                             "input + z=0 estimate (bold) + samples", "samples, {name}", "per-joint spread (mm)",
                             title or f"{len(samples)} samples, mean spread {spread.mean():.1f} mm",
                             annotate_camera=None if gt is None else ground_truth)


def write_plotly_js(folder: str | Path) -> Path:
    """``folder/plotly.min.js`` from the installed plotly package (no network), written once:
    an existing file of the same size is kept. Returns its path."""
    plotly_offline = require("plotly.offline", "viz", "HTML views")
    path = Path(folder) / PLOTLY_JS
    js = plotly_offline.get_plotlyjs().encode("utf-8")
    if not path.is_file() or path.stat().st_size != len(js):
        write_bytes(path, js)
    return path


def write_samples_html(z0: Tensor, samples: Tensor, path: str | Path, max_drawn: int = 100) -> Path:
    """Interactive 3D view of the samples (thin) and the z = 0 estimate (bold), camera frame.

    Args:
        z0: (42, 3) mm.
        samples: (S, 42, 3) mm.
        path: output ``.html``; it loads ``plotly.min.js`` from its own folder (written there
            once, :func:`write_plotly_js`), so a folder of views holds one copy of the library
            and works offline; move the folder, not a single page.
    """
    go = require("plotly.graph_objects", "viz", "HTML views")

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
    write_plotly_js(path.parent)
    fig.write_html(path, include_plotlyjs=PLOTLY_JS)  # a relative <script src>
    return path
