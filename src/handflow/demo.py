"""``handflow demo``: the main job end to end on the embedded defaults.

For now it shows the open hand model; later stages (synthetic data, HandFlowNet, sampling)
add their parts to :func:`run_demo`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from handflow.constants import FINGER_NAMES, IH_TIPS, IH_WRIST, NUM_BETAS, NUM_MANO_JOINTS

__all__ = ["run_demo", "hand_model_summary"]


def hand_model_summary(model) -> str:
    """A few lines describing ``model``: vertex/face counts and the β = 0 hand length."""
    rot = torch.eye(3).expand(1, NUM_MANO_JOINTS, 3, 3)
    out = model(rot, torch.zeros(1, NUM_BETAS))
    middle_tip = IH_TIPS[FINGER_NAMES.index("middle")]
    length = (out.joints[0, middle_tip] - out.joints[0, IH_WRIST]).norm().item()
    return (
        f"hand model: {model.name}\n"
        f"vertices: {model.num_vertices}\n"
        f"faces: {int(model.faces.shape[0])}\n"
        f"hand length (wrist joint to middle fingertip, beta = 0): {length:.1f} mm\n"
    )


def run_demo(out: Path, quick: bool = False, seed: int = 0) -> None:
    """Write the demo outputs under ``out``.

    Args:
        out: output folder (created).
        quick: tiny budget (used by the test suite); the hand figure is always drawn.
        seed: random seed (prior sample in the figure).

    Writes ``hand_model.png`` (both open hands in five poses, front and side views) and
    ``summary.txt``.
    """
    from handflow.hand import load_hand_model
    from handflow.viz.hands import plot_hand_gallery

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = load_hand_model("openhand")
    fig = plot_hand_gallery(model, out / "hand_model.png", seed=seed)
    summary = hand_model_summary(model) + f"figure: {fig.name}\n"
    (out / "summary.txt").write_text(summary)
    print(summary, end="")
