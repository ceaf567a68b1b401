"""The six losses of HandFlow (SPEC section 4; paper Eq. 3-9), as small functions.

``L = w_nll L_nll + w_det L_DetMag + w_θ L_θ + w_3D L_3D + w_2D L_2D + w_R L_R``

Units (docs/training.md): ``L_nll`` and ``L_DetMag`` per parameter dimension (divided by
218); ``L_θ`` mean squared error of standardized parameters; ``L_3D`` mean over valid joints
of the squared 3D error in decimetres² (100 mm units); ``L_2D`` mean over visible joints of
the squared error in normalized crop units (``2u/S``, the crop spans 2 units); ``L_R`` sum
over the 32 rotation blocks of ``‖AᵀA − I‖²``, averaged over predictions. The flow terms
``L_nll`` (:func:`nll_loss`) and ``L_DetMag`` (:func:`detmag_loss`) are called by the model
(:meth:`HandFlowNet.head_losses`), which owns the flow.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import HAND_PARAM_DIM, LEFT_ROOT, NUM_HAND_JOINTS, NUM_ROT, PARAM_DIM, RIGHT_ROOT
from handflow.geometry.camera import project
from handflow.geometry.rotations import rot6d_orthonormality_residual

__all__ = ["nll_loss", "detmag_loss", "theta_loss", "joints3d_loss", "joints2d_loss", "keypoint2d_loss", "rotation_loss",
           "choose_theta_target",
           "DM"]

DM = 100.0  # mm per loss unit of L_3D
#: z-coordinate (mm) below which a joint counts as behind the camera in L_2D
MIN_DEPTH_MM = 1.0


def nll_loss(log_prob: Tensor, mask: Tensor) -> Tensor:
    """``L_nll = min_n −log p(y*_n | v) / 218`` averaged over images with ≥ 1 annotation.

    Args:
        log_prob: (B, N) ``log p`` of each of the N annotations of each image (standardized
            space; the normalizer's constant Jacobian is dropped).
        mask: (B, N) bool, True for real annotations (padding rows and images without
            hand-model parameters are False).

    Returns:
        scalar; 0 (with a graph) when no image has an annotation.
    """
    if log_prob.shape != mask.shape:
        raise ValueError(f"nll_loss: log_prob {tuple(log_prob.shape)} and mask {tuple(mask.shape)} differ")
    rows = mask.any(1)
    if not bool(rows.any()):
        return log_prob.sum() * 0
    nll = torch.where(mask, -log_prob, torch.full_like(log_prob, float("inf"))).amin(1)
    return nll[rows].mean() / PARAM_DIM


def detmag_loss(logdet: Tensor, rows: Tensor | None = None) -> Tensor:
    """``L_DetMag = −log|det ∂f_v(z)/∂z| / 218`` averaged over samples (and selected images).

    The caller computes ``logdet`` with the context DETACHED, so that this term trains the
    flow only, never the backbone (paper Sec. 3.2.3).

    Args:
        logdet: (B, S) ``log|det ∂y/∂z|`` at S sampled z per image.
        rows: optional (B,) bool, the images that contribute.
    """
    if rows is not None:
        if not bool(rows.any()):
            return logdet.sum() * 0
        logdet = logdet[rows]
    return -logdet.mean() / PARAM_DIM


def theta_loss(z0_std: Tensor, target_std: Tensor, has_params: Tensor) -> Tensor:
    """``‖f_v(0) − y*‖²`` (mean over the 218 standardized dims) on images with parameters.

    Args:
        z0_std: (B, 218) z = 0 estimate; target_std: (B, 218); has_params: (B,) bool.
    """
    if not bool(has_params.any()):
        return z0_std.sum() * 0
    return (z0_std - target_std).square().mean(-1)[has_params].mean()


def joints3d_loss(pred: Tensor, gt: Tensor, valid: Tensor, root_relative: bool = False) -> Tensor:
    """``L_3D`` in dm² (100 mm units).

    Args:
        pred: (B, [S,] 42, 3) camera-frame joints, mm.
        gt: (B, 42, 3) camera-frame annotations, mm.
        valid: (B, 42) bool.
        root_relative: False: mean over valid joints of ``‖J − P3D‖²`` in the camera frame.
            True: the same for each hand's joints relative to its wrist (valid joints of hands
            whose wrist is valid), plus the mean over valid wrists of ``‖J_root − P3D_root‖²``.
            The split keeps a wrist-position error out of the gradient of the articulation
            and orientation: in the camera frame, rotating a hand about its wrist moves its
            joints' centroid, so a root error alone pulls the orientation away from the truth
            (docs/training.md, "L_3D relative to the wrists").
    """
    if pred.dim() == 4:
        gt, valid = gt[:, None].expand_as(pred), valid[:, None].expand(pred.shape[:-1])
    if not root_relative:
        return _mean_sq_dm(pred - gt, valid)
    roots = [RIGHT_ROOT, LEFT_ROOT]
    root_err = pred[..., roots, :] - gt[..., roots, :]  # (..., 2, 3)
    root_ok = valid[..., roots]  # (..., 2)
    # per hand: the error minus its wrist's error = the error of the wrist-relative joints
    rel = (pred - gt).unflatten(-2, (2, NUM_HAND_JOINTS)) - root_err[..., None, :]
    rel_ok = valid.unflatten(-1, (2, NUM_HAND_JOINTS)) & root_ok[..., None]
    return _mean_sq_dm(rel, rel_ok) + _mean_sq_dm(root_err, root_ok)


def _mean_sq_dm(err: Tensor, valid: Tensor) -> Tensor:
    """Mean over ``valid`` entries of ``‖err‖²`` in dm²; err (..., 3) mm, valid (...) bool."""
    d2 = (err / DM).square().sum(-1)
    w = valid.to(d2.dtype)
    return (d2 * w).sum() / w.sum().clamp_min(1)


def joints2d_loss(pred: Tensor, gt_2d: Tensor, visible: Tensor, K: Tensor, size: int) -> Tensor:
    """Mean over visible joints of the squared reprojection error in normalized crop units.

    Args:
        pred: (B, [S,] 42, 3) camera-frame joints, mm; gt_2d: (B, 42, 2) crop pixels;
        visible: (B, 42) bool; K: (B, 3, 3); size: crop side.
    """
    if pred.dim() == 4:
        uv = project(pred, K[:, None])
        gt_2d, visible = gt_2d[:, None].expand_as(uv), visible[:, None].expand(uv.shape[:-1])
    else:
        uv = project(pred, K)
    d2 = ((uv - gt_2d) * (2.0 / size)).square().sum(-1)
    d2 = torch.where(pred[..., 2] > MIN_DEPTH_MM, d2, torch.zeros_like(d2))  # behind-camera guard
    w = visible.to(d2.dtype)
    return (d2 * w).sum() / w.sum().clamp_min(1)


def keypoint2d_loss(uv: Tensor, gt_2d: Tensor, visible: Tensor, size: int) -> Tensor:
    """``L_kp2d``: mean over visible joints of the L1 error of a keypoint head's 2D joints.

    Args:
        uv: (B, 42, 2) predicted joints in normalized crop units (``2 x / size - 1``);
        gt_2d: (B, 42, 2) crop pixels; visible: (B, 42) bool; size: crop side.
    """
    err = (uv - (gt_2d * (2.0 / size) - 1.0)).abs().sum(-1)
    w = visible.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1)


def rotation_loss(y: Tensor) -> Tensor:
    """``Σ_A ‖AᵀA − I‖²`` over the 32 raw 6D blocks of y (*, 218), averaged over predictions."""
    blocks = torch.cat([y[..., h * HAND_PARAM_DIM : h * HAND_PARAM_DIM + 6 * NUM_ROT] for h in range(2)], -1)
    res = rot6d_orthonormality_residual(blocks.unflatten(-1, (2 * NUM_ROT, 6)))
    return res.square().sum((-1, -2, -3)).mean()


def choose_theta_target(image_ids: Tensor, n_valid: Tensor, seed: int) -> Tensor:
    """Index of the one annotation per image used by ``L_θ``: a fixed function of
    (seed, image id), so the choice never changes during training.

    Args:
        image_ids: (B,) long; n_valid: (B,) number of annotations (≥ 1); seed: theta seed.

    Returns:
        (B,) long in ``[0, n_valid)``.
    """
    h = (image_ids.long() * 2654435761 + seed * 97 + 12345) % 2147483647
    h = (h * 48271) % 2147483647
    return h % n_valid.clamp_min(1).long()
