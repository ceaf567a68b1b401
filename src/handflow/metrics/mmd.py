r"""Maximum mean discrepancy (MMD) between predicted samples and plausible annotations.

For one image with samples :math:`x_1..x_S` and annotations :math:`y_1..y_N` (flattened aligned
joints, 126-d vectors in mm) and a Gaussian kernel
:math:`k_\sigma(a, b) = \exp(-\lVert a-b\rVert^2 / (2\sigma^2))`, the biased (V-statistic)
estimate is

.. math::
    \mathrm{MMD}^2_\sigma = \tfrac{1}{S^2}\sum_{ij} k(x_i,x_j) + \tfrac{1}{N^2}\sum_{ij} k(y_i,y_j)
    - \tfrac{2}{SN}\sum_{ij} k(x_i,y_j),

clamped at 0 before the square root. :func:`mmd` returns the mean over the bandwidths of
:math:`\mathrm{MMD}_\sigma`. Each :math:`\mathrm{MMD}_\sigma` is unit-free and lies in
:math:`[0, \sqrt 2]`; it is 0 for identical sets.

Implementation: the three kernel blocks are one quadratic form
:math:`a^\top K a` over the union :math:`z = [x; y]` with weights
:math:`a = [w_x/\sum w_x;\ -w_y/\sum w_y]` (``w`` the 0/1 masks). Squared distances use
:math:`\lVert a\rVert^2+\lVert b\rVert^2-2a\cdot b` after centring each image's points on their
mean (distances are translation invariant; centring removes the cancellation that camera-frame
magnitudes would cause), computed in ``dtype`` (float64 by default) and clamped at 0. Images
are processed ``chunk`` at a time, so the working memory is
``O(chunk * (S+N)^2)`` whatever ``B``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from handflow.constants import NUM_JOINTS
from handflow.metrics.align import align, check_alignment, check_joints

__all__ = ["DEFAULT_BANDWIDTHS", "DEFAULT_CHUNK", "mmd", "mmd_per_bandwidth"]

#: default Gaussian-kernel bandwidths in mm on the flattened 126-d aligned joints; a
#: bandwidth sigma resolves 126-d distances of roughly sigma/3 .. 3*sigma, so this set covers
#: ~7 mm .. 3 m, i.e. per-joint RMS differences of ~1 mm .. ~460 mm (docs/metrics.md)
DEFAULT_BANDWIDTHS: tuple[float, ...] = (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
#: images per chunk; working memory ~ 2 * chunk * (S+N)^2 * 8 bytes (~20 MB for S=N=100);
#: small chunks keep the kernel buffers in cache (16-64 measured fastest on CPU)
DEFAULT_CHUNK = 32


def _check_set(x: Tensor, name: str, mask: Tensor | None, B: int | None) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, {name[0].upper()}, 42, 3), got "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    if B is not None and x.shape[0] != B:
        raise ValueError(f"{name} has batch size {x.shape[0]}, samples have {B}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(f"the mask of {name} must be a bool tensor of shape {tuple(x.shape[:2])}")
    if x.shape[-2:] != (NUM_JOINTS, 3) or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor of shape (B, *, {NUM_JOINTS}, 3), got "
            f"{tuple(x.shape)} {x.dtype}"
        )
    return mask


def mmd_per_bandwidth(
    samples: Tensor,
    annotations: Tensor,
    alignment: str,
    bandwidths: Sequence[float] | Tensor | None = None,
    sample_mask: Tensor | None = None,
    ann_mask: Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """MMD per bandwidth (see the module docstring for the estimator).

    Args:
        samples: ``(B, S, 42, 3)`` mm, the predicted samples of each image.
        annotations: ``(B, N, 42, 3)`` mm, the plausible annotations of each image.
        alignment: ``"rr" | "rrr" | "global"``, applied to both sets before flattening.
        bandwidths: kernel bandwidths sigma in mm (K values); default
            :data:`DEFAULT_BANDWIDTHS`.
        sample_mask: optional ``(B, S)`` bool, False for padding samples (ignored, may be NaN).
        ann_mask: optional ``(B, N)`` bool, False for padding annotations (ignored).
        chunk: images per chunk (bounds memory).
        dtype: computation dtype (float64 default; float32 is up to ~2x faster and, as the
            points are centred first, within ~1e-5 of float64).

    Returns:
        ``(B, K)`` in ``[0, sqrt 2]``; ``NaN`` for images with no valid sample or annotation.
    """
    check_alignment(alignment)
    sample_mask = _check_set(samples, "samples", sample_mask, None)
    ann_mask = _check_set(annotations, "annotations", ann_mask, samples.shape[0])
    sig = torch.as_tensor(
        DEFAULT_BANDWIDTHS if bandwidths is None else bandwidths, dtype=dtype
    ).reshape(-1)
    if sig.numel() == 0 or not bool((sig > 0).all()) or not bool(torch.isfinite(sig).all()):
        raise ValueError(f"bandwidths must be a non-empty list of positive mm values, got {sig}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    gamma = (-0.5 / sig**2).to(samples.device)  # (K,)
    B, S = samples.shape[:2]
    out = torch.empty(B, sig.numel(), dtype=dtype, device=samples.device)
    for b0 in range(0, B, chunk):
        sl = slice(b0, b0 + chunk)
        # finiteness is checked per chunk so the check's memory is bounded as well
        check_joints(samples[sl], "samples", finite_where=sample_mask[sl, :, None])
        check_joints(annotations[sl], "annotations", finite_where=ann_mask[sl, :, None])
        out[sl] = _mmd_chunk(
            samples[sl], annotations[sl], sample_mask[sl], ann_mask[sl], alignment, gamma, dtype
        )
    return out


def _mmd_chunk(
    x: Tensor, y: Tensor, wx: Tensor, wy: Tensor, alignment: str, gamma: Tensor, dtype: torch.dtype
) -> Tensor:
    """(c, K) MMD for one chunk of images."""
    c, S = x.shape[:2]
    z = torch.cat([align(x, alignment), align(y, alignment)], dim=1).flatten(2).to(dtype)
    w = torch.cat([wx, wy], dim=1)  # (c, S+N)
    z = torch.where(w[..., None], z, torch.zeros((), dtype=dtype, device=z.device))
    nx, ny = wx.sum(1, keepdim=True), wy.sum(1, keepdim=True)  # (c, 1)
    # centre on the mean of the valid points (translation invariance, less cancellation)
    z = z - z.sum(1, keepdim=True) / (nx + ny).clamp_min(1)[..., None].to(dtype)
    z = torch.where(w[..., None], z, torch.zeros((), dtype=dtype, device=z.device))
    sq = (z * z).sum(-1)  # (c, S+N)
    d2 = torch.baddbmm(sq[:, :, None] + sq[:, None, :], z, z.transpose(1, 2), alpha=-2.0)
    d2.clamp_(min=0.0)
    # a = [wx / nx ; -wy / ny]: MMD^2 = a^T K a
    fx, fy = wx.to(dtype), wy.to(dtype)  # divide in `dtype` (bool / long would be float32)
    fx = fx / fx.sum(1, keepdim=True).clamp_min(1)
    fy = fy / fy.sum(1, keepdim=True).clamp_min(1)
    a = torch.cat([fx, -fy], dim=1)
    res = torch.empty(c, gamma.numel(), dtype=dtype, device=z.device)
    kern = torch.empty_like(d2)
    for k in range(gamma.numel()):
        torch.mul(d2, gamma[k], out=kern).exp_()
        res[:, k] = (torch.bmm(kern, a[..., None]).squeeze(-1) * a).sum(-1)
    res = res.clamp_(min=0.0).sqrt_()
    empty = (nx == 0) | (ny == 0)  # (c, 1)
    return res.masked_fill_(empty, float("nan"))


def mmd(
    samples: Tensor,
    annotations: Tensor,
    alignment: str,
    bandwidths: Sequence[float] | Tensor | None = None,
    sample_mask: Tensor | None = None,
    ann_mask: Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """MMD between samples and annotations, averaged over the kernel bandwidths.

    Args:
        samples: ``(B, S, 42, 3)`` mm.
        annotations: ``(B, N, 42, 3)`` mm.
        alignment: ``"rr" | "rrr" | "global"``.
        bandwidths: sigma values in mm; default :data:`DEFAULT_BANDWIDTHS`.
        sample_mask: optional ``(B, S)`` bool (False = padding).
        ann_mask: optional ``(B, N)`` bool (False = padding).
        chunk: images per chunk (bounds memory to ``O(chunk (S+N)^2)``).
        dtype: computation dtype (float64 default).

    Returns:
        ``(B,)`` mean over bandwidths of :math:`\\sqrt{\\max(\\mathrm{MMD}^2_\\sigma, 0)}`,
        in ``[0, sqrt 2]``; ``NaN`` for images without a valid sample or annotation.
    """
    return mmd_per_bandwidth(
        samples, annotations, alignment, bandwidths, sample_mask, ann_mask, chunk, dtype
    ).mean(dim=1)
