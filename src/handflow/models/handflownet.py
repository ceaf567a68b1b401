"""HandFlowNet: ResNet feature -> conditional GLOW over the 218 two-hand parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.flow import ConditionalGlow
from handflow.hand.base import HandModel
from handflow.models.base import HandPoseModel, decode_joints
from handflow.models.losses import detmag_loss, nll_loss

__all__ = ["HandFlowNet", "ACTNORM_MIN_STD"]

#: floor of ActNorm's data-dependent std in standardized units
ACTNORM_MIN_STD = 0.05


class HandFlowNet(HandPoseModel):
    """The paper's model: backbone -> feature ``v`` (B, C) -> ``f_v: z -> y`` over the
    STANDARDIZED parameters (``self.normalizer``, fitted on training statistics, saved in
    every checkpoint). ``z0`` is the *z = 0 estimate* ``f_v(0)`` (not the exact mode with
    affine coupling).

    Methods taking ``x`` accept images (B, 3, S, S) or features (B, C): pass features to reuse
    one backbone pass for several calls. Sampling projects the context once per image and
    reuses it for all samples.
    """

    kind = "flow"
    config_fields = ("flow_steps", "flow_hidden", "flow_blocks")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        m = cfg.model
        # parameters are standardized, so no dimension should be scaled by more than 1/ACTNORM_MIN_STD
        self.flow = ConditionalGlow(PARAM_DIM, self.backbone.dim, steps=m.flow_steps, hidden=m.flow_hidden,
                                    blocks=m.flow_blocks, scale_bound=m.scale_bound, min_std=ACTNORM_MIN_STD,
                                    check_finite=False)

    # ------------------------------------------------------------------ helpers
    def _feats(self, x: Tensor) -> Tensor:
        """Images (B, 3, S, S) -> features; features (B, C) pass through."""
        if x.dim() == 4:
            return self.features(x)
        if x.dim() == 2 and x.shape[-1] == self.backbone.dim:
            return x
        raise ValueError(f"expected images (B, 3, S, S) or features (B, {self.backbone.dim}), got {tuple(x.shape)}")

    def initialize(self, feats: Tensor, y_std: Tensor) -> None:
        """ActNorm data init. Call it on many diverse annotations (``fit_normalizer`` does,
        with a zero context: the couplings start as the identity, so the context plays no
        role at init); a first image batch of one sequence would see constant betas."""
        if not self.flow.initialized:
            self.flow.initialize(y_std, feats.detach())

    # ------------------------------------------------------------------ standardized space
    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> ``f_v(0)`` (B, 218), standardized."""
        return self.flow.mode(feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> (B, n, 218) standardized samples (context projected once); n = 0 gives (B, 0, 218)."""
        if n == 0:
            return feats.new_zeros(feats.shape[0], 0, PARAM_DIM, dtype=self.flow.dtype)
        return self.flow.sample(feats, n, generator=generator)

    # ------------------------------------------------------------------ physical space
    def z0(self, x: Tensor) -> Tensor:
        """Images or features -> the z = 0 estimate (B, 218), physical parameters."""
        return self.normalizer.denormalize(self.z0_std(self._feats(x)))

    def sample(self, x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Images or features -> (B, n, 218) physical samples; the backbone runs once."""
        return self.normalizer.denormalize(self.sample_std(self._feats(x), n, generator))

    def log_prob(self, y: Tensor, x: Tensor, standardized: bool = False) -> Tensor:
        """``log p(y | v)`` of parameters ``y`` (B, [N,] 218) given images or features ``x``.

        With ``standardized=False`` (default) ``y`` is physical and the density is in physical
        units: the normalizer's Jacobian ``−Σ log std`` is included. ``standardized=True``:
        ``y`` is standardized and the density is the flow's own. Returns (B, [N]).
        """
        feats = self._feats(x)
        if standardized:
            return self.flow.log_prob(y, feats)
        lp = self.flow.log_prob(self.normalizer.normalize(y), feats)
        return lp - self.normalizer.std.log().sum()

    @staticmethod
    def decode(y: Tensor, K: Tensor, size: int, hand_model: HandModel, vertices: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Physical parameters (B, [S,] 218) -> camera-frame joints (B, [S,] 42, 3) mm
        [+ ``{side: vertices}``]; see :func:`~handflow.models.decode_joints`."""
        return decode_joints(y, K, size, hand_model, vertices=vertices)

    # ------------------------------------------------------------------ training terms
    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One flow pass for ``z = [0, z_1..z_n]`` with the context projected once: (B, C) ->
        (z0 (B, 218), samples (B, n, 218)); n = 0 gives the z = 0 estimate and (B, 0, 218)."""
        B = feats.shape[0]
        z = torch.randn(B, n, PARAM_DIM, generator=generator, dtype=self.flow.dtype).to(feats.device)
        z = torch.cat([z.new_zeros(B, 1, PARAM_DIM), z], 1)
        y, _ = self.flow.forward(z, context_cache=self.flow.project_context(feats))
        return y[:, 0], y[:, 1:]

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll`` (min over the N annotations) and ``det`` (DetMag at ``max(1, num_samples)``
        sampled z per image, context detached so no gradient reaches the backbone). Both use
        only images with hand-model parameters (rows of ``y_mask`` with a True).

        Args:
            feats: (B, C); y_std: (B, N, 218) standardized annotations; y_mask: (B, N) bool.
            generator: CPU generator for the NLL noise and the DetMag z.
        """
        lc = self.cfg.loss
        out: dict[str, Tensor] = {}
        rows = y_mask.any(1)
        if not bool(rows.any()) or not (lc.active("nll") or lc.active("det")):
            return out
        cache = self.flow.project_context(feats)
        if lc.active("nll"):
            noise = torch.randn(y_std.shape, generator=generator, dtype=y_std.dtype).to(y_std.device) * lc.nll_noise
            y_in = torch.where(y_mask[..., None], y_std + noise, torch.zeros_like(y_std))  # padding rows stay finite
            out["nll"] = nll_loss(self.flow.log_prob(y_in, context_cache=cache), y_mask)
        if lc.active("det"):
            shape = (feats.shape[0], max(1, lc.num_samples), PARAM_DIM)
            z = torch.randn(shape, generator=generator, dtype=self.flow.dtype).to(feats.device)
            _, logdet = self.flow.forward(z, context_cache=cache.detach())
            out["det"] = detmag_loss(logdet, rows)
        return out
