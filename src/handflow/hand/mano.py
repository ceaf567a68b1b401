"""``mano``: the official MANO hand model (Romero et al. 2017) from the user's own files.

Examples:
    >>> model = ManoModel("/path/to/mano/models")  # your MANO_RIGHT.pkl and/or MANO_LEFT.pkl  # doctest: +SKIP
    >>> out = model(rotmats, betas, side="left")   # rotmats (B,16,3,3), betas (B,10)  # doctest: +SKIP

(skipped as doctests: MANO's files are not redistributable; ``tests/test_mano.py`` runs the
model on a synthetic file of the same format)

Forward pass as in MANO: shape blend shapes, joints regressed from the shaped rest mesh,
pose blend shapes (``lrotmin``: ``(R_k − I)`` of joints 1–15 flattened row-major), linear
blend skinning. Outputs are in **mm** with the wrist joint at the origin; joints are the
16 MANO joints plus fingertip vertices 745, 317, 445, 556, 673, in InterHand2.6M order.
Each side uses its own file (not a mirror). The left file's shape blend shapes need the
documented x-flip (``fix_left_shapedirs``, ``docs/mano.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from handflow.constants import MANO21_TO_IH, MANO_PARENTS, MANO_TIP_VERTICES, NUM_MANO_JOINTS, SIDES, Side, check_side
from handflow.hand.base import HandModel, HandOutput, PosePrior, lbs
from handflow.hand.mano_io import ManoFormatError, load_mano_arrays
from handflow.hand.mano_prior import ManoPCAPrior

__all__ = ["ManoModel", "find_mano_files", "left_shapedirs_need_fix"]

log = logging.getLogger(__name__)
_FILE_STEMS = {"right": "MANO_RIGHT", "left": "MANO_LEFT"}
#: threshold of the InterHand2.6M tools: flip when sum |x_left − x_right| < 1
LEFT_FIX_THRESHOLD = 1.0
M_TO_MM = 1000.0


def find_mano_files(path: str | Path) -> dict[str, Path]:
    """Locate the MANO files: a folder with ``MANO_RIGHT``/``MANO_LEFT`` (``.pkl`` or
    ``.npz``), or one file whose name says its side."""
    path = Path(path)
    if path.is_dir():
        found = {}
        for side, stem in _FILE_STEMS.items():
            for ext in (".pkl", ".npz"):
                if (path / f"{stem}{ext}").exists():
                    found[side] = path / f"{stem}{ext}"
                    break
        if not found:
            raise FileNotFoundError(
                f"no MANO_RIGHT.pkl / MANO_LEFT.pkl (or .npz) in {path}. Download 'Models & Code' "
                "from https://mano.is.tue.mpg.de and pass its models/ folder"
            )
        return found
    if not path.exists():
        raise FileNotFoundError(f"MANO path does not exist: {path}")
    name = path.name.upper()
    side = "left" if "LEFT" in name else "right" if "RIGHT" in name else None
    if side is None:
        raise ValueError(f"cannot tell the hand side of {path}: name it MANO_RIGHT.* or MANO_LEFT.*")
    return {side: path}


def left_shapedirs_need_fix(right: np.ndarray, left: np.ndarray) -> bool:
    """True when the left file's shapedirs x-component equals the right one's (the known
    defect of the released MANO_LEFT.pkl, formats.md 3.6)."""
    return float(np.abs(left[:, 0, :] - right[:, 0, :]).sum()) < LEFT_FIX_THRESHOLD


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


class ManoModel(HandModel):
    """MANO from the official files. See the module docstring.

    Args:
        path: folder holding ``MANO_RIGHT.pkl`` and/or ``MANO_LEFT.pkl`` (or ``.npz``), or
            one such file (only that side is then available).
        fix_left_shapedirs: flip the x-component of the left shapedirs when it equals the
            right one (default on, as the InterHand2.6M tools do; logged).
    """

    name = "mano"

    def __init__(self, path: str | Path, fix_left_shapedirs: bool = True) -> None:
        super().__init__()
        files = find_mano_files(path)
        arrays = {side: load_mano_arrays(p) for side, p in files.items()}
        for side, a in arrays.items():
            parents = tuple(int(p) for p in a["kintree_table"][0])
            if parents[1:] != MANO_PARENTS[1:]:
                raise ManoFormatError(f"{files[side]}: kintree_table {parents} is not MANO's tree {MANO_PARENTS}")
        self.sides: tuple[Side, ...] = tuple(s for s in SIDES if s in arrays)
        self.left_shapedirs_fixed = False
        if "left" in arrays:
            if "right" in arrays and left_shapedirs_need_fix(arrays["right"]["shapedirs"], arrays["left"]["shapedirs"]):
                if fix_left_shapedirs:
                    arrays["left"]["shapedirs"][:, 0, :] *= -1
                    self.left_shapedirs_fixed = True
                    log.info("MANO: flipped the x-component of the left-hand shapedirs (known defect of MANO_LEFT.pkl)")
                else:
                    log.warning("MANO: left shapedirs equal the right ones in x; fix_left_shapedirs=False keeps them")
            elif "right" not in arrays and fix_left_shapedirs:
                log.warning("MANO: only the left file was given; the left-shapedirs check needs the right file, skipped")
        for side, a in arrays.items():
            faces = a["f"]
            if _signed_volume(a["v_template"], faces) < 0:  # make the winding outward
                faces = faces[:, ::-1].copy()
            bufs = {
                "v_template": a["v_template"],
                "shapedirs": a["shapedirs"],
                "posedirs": a["posedirs"].reshape(-1, a["posedirs"].shape[-1]).T,  # (135, 2334)
                "J_regressor": a["J_regressor"],
                "weights": a["weights"],
                "hands_mean": a["hands_mean"],
                "hands_components": a["hands_components"],
                "hands_coeffs": a["hands_coeffs"],
            }
            for k, v in bufs.items():
                self.register_buffer(f"{side}_{k}", torch.as_tensor(v, dtype=torch.float32), persistent=False)
            self.register_buffer(f"{side}_faces", torch.as_tensor(faces, dtype=torch.long), persistent=False)
        self.register_buffer("_tips", torch.tensor(MANO_TIP_VERTICES), persistent=False)
        self.register_buffer("_ih_order", torch.tensor(MANO21_TO_IH), persistent=False)
        self.pose_prior: PosePrior = ManoPCAPrior(self)

    # ---------------------------------------------------------------- helpers
    def _side(self, side: str) -> Side:
        check_side(side)
        if side not in self.sides:
            raise ValueError(f"this MANO model has no {side} hand: load MANO_{side.upper()}.pkl too")
        return side  # type: ignore[return-value]

    def buffer(self, side: str, key: str) -> Tensor:
        """The per-side array ``key`` (e.g. ``"hands_mean"``) as a tensor."""
        return getattr(self, f"{self._side(side)}_{key}")

    @property
    def faces(self) -> Tensor:
        return self.buffer(self.sides[0], "faces") if self.sides[0] == "right" else self.buffer("left", "faces").flip(-1)

    def faces_for(self, side: Side) -> Tensor:
        return self.buffer(side, "faces")

    @property
    def part_labels(self) -> Tensor:
        return self.buffer(self.sides[0], "weights").argmax(1)

    def pose_mean(self, side: Side = "right") -> Tensor:
        return self.buffer(side, "hands_mean").reshape(NUM_MANO_JOINTS - 1, 3)

    def shaped(self, betas: Tensor, side: Side) -> tuple[Tensor, Tensor]:
        """Rest shape in MANO's native frame, metres: (vertices (B,778,3), joints (B,16,3))."""
        dt = betas.dtype
        v = self.buffer(side, "v_template").to(dt) + torch.einsum("vkl,bl->bvk", self.buffer(side, "shapedirs").to(dt), betas)
        j = torch.einsum("jv,bvk->bjk", self.buffer(side, "J_regressor").to(dt), v)
        return v, j

    def rest_wrist(self, betas: Tensor, side: Side = "right") -> Tensor:
        return self.shaped(betas, side)[1][:, 0] * M_TO_MM

    # ---------------------------------------------------------------- forward
    def _forward_side(self, rotmats: Tensor, betas: Tensor, side: Side) -> HandOutput:
        betas = betas.to(rotmats.dtype)
        v, j = self.shaped(betas, side)
        eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
        pose_feature = (rotmats[:, 1:] - eye).reshape(rotmats.shape[0], -1)  # (B, 135)
        offsets = (pose_feature @ self.buffer(side, "posedirs").to(rotmats.dtype)).reshape(v.shape)
        verts, joints = lbs(v, j, rotmats, MANO_PARENTS, self.buffer(side, "weights"), offsets)
        mano21 = torch.cat([joints, verts[:, self._tips]], 1)[:, self._ih_order]
        wrist = joints[:, :1]
        return HandOutput((verts - wrist) * M_TO_MM, (mano21 - wrist) * M_TO_MM)

    def _forward_right(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        return self._forward_side(rotmats, betas, self._side("right"))

    def _forward_left(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        return self._forward_side(rotmats, betas, self._side("left"))
