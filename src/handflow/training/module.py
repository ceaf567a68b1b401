"""LightningModule training any :class:`~handflow.models.HandPoseModel` with the six losses."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

import handflow
from handflow.config import Config, saved_config, to_dict
from handflow.constants import PARAM_DIM
from handflow.hand.registry import hand_model_named
from handflow.metrics import mpjpe, sample_spread
from handflow.models import build_model, decode_joints
from handflow.models.keypoint_encoder import batch_evidence, image_noise, training_noise
from handflow.models.losses import choose_theta_target, joints2d_loss, joints3d_loss, keypoint2d_loss, rotation_loss, theta_loss

__all__ = ["HandFlowModule", "git_commit"]

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    """The source tree's git commit, if it is a git checkout."""
    try:
        root = Path(handflow.__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class HandFlowModule(pl.LightningModule):
    """Wraps a model, its hand model and the losses (weights from ``cfg.loss``)."""

    def __init__(self, cfg: Config | dict) -> None:
        super().__init__()
        cfg = saved_config(cfg) if isinstance(cfg, dict) else cfg  # a dict: restored from a checkpoint
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg)})
        self.model = build_model(cfg)
        self.hand_model = hand_model_named(cfg.data.hand_model, cfg.data.mano_path)
        self.skipped_batches = 0

    # ------------------------------------------------------------------ helpers
    def _targets(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Annotations (B, N, 218) physical, mask (B, N), has_params (B,)."""
        has = batch["has_params"].bool()
        if "multi_y" in batch:
            return batch["multi_y"].float(), batch["multi_valid"].bool() & has[:, None], has
        return batch["y"].float()[:, None], has[:, None], has

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + int(self.global_step))

    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """Total loss, per-term values, and the decoded predictions (B, 1+S, 42, 3) mm."""
        lc, m = self.cfg.loss, self.model
        size = self.cfg.data.image_size
        feats = self.batch_features(batch)
        ys, mask, has = self._targets(batch)
        ys_std = m.normalizer.normalize(ys)
        g = self._generator()
        terms = m.head_losses(feats, ys_std, mask, g)
        z0 = m.z0_std(feats)
        n = max(lc.num_samples, 0)
        samples = m.sample_std(feats, n, g) if n else z0[:, None, :0]
        if lc.active("theta"):
            if "multi_theta" in batch:  # fixed row chosen by the MultiHands wrapper
                idx = batch["multi_theta"].long().to(z0.device)
            else:
                idx = choose_theta_target(batch["meta"]["image_id"].to(z0.device), mask.sum(1), lc.theta_seed)
            target = ys_std[torch.arange(len(idx), device=z0.device), idx]
            terms["theta"] = theta_loss(z0, target, has)
        preds = torch.cat([z0[:, None], samples], 1) if n else z0[:, None]
        need_joints = lc.active("3d") or lc.active("2d") or n > 0  # samples: for the spread log
        joints = None
        if need_joints:
            joints = decode_joints(m.normalizer.denormalize(preds), batch["K"].float(), size, self.hand_model)
        s = lc.sample_3d_scale
        if lc.active("3d"):
            rel = lc.joints3d_root_relative
            terms["3d"] = joints3d_loss(joints[:, 0], batch["joints_cam"], batch["joint_valid"], rel)
            if n:
                terms["3d"] = terms["3d"] + s * joints3d_loss(joints[:, 1:], batch["joints_cam"], batch["joint_valid"], rel)
        if lc.active("2d"):
            terms["2d"] = joints2d_loss(joints[:, 0], batch["joints_2d"], batch["visible"], batch["K"], size)
            if n:
                sampled = joints2d_loss(joints[:, 1:], batch["joints_2d"], batch["visible"], batch["K"], size)
                terms["2d"] = terms["2d"] + s * sampled
        if lc.active("rot"):
            terms["rot"] = rotation_loss(preds)
        if lc.active("kp2d") and m.cfg.model.context == "keypoints2d" and not m.cfg.model.freeze_backbone:
            uv, _ = m.backbone.keypoints(feats)
            terms["kp2d"] = keypoint2d_loss(uv, batch["joints_2d"], batch["visible"], size)
        total = sum(lc.weight(k) * v for k, v in terms.items())
        return total, terms, joints

    def batch_features(self, batch: dict[str, Any], noise_seed: int = 0) -> Tensor:
        """(B, C) features of a collated batch, on the module's device: the cached ``feats`` of a
        feature batch (shared-feature protocol, :mod:`handflow.data.features`), the keypoint
        encoder on the batch's 2D evidence (``model.backbone=keypoints``), else the backbone on
        ``image``.

        Evidence noise (``data.keypoint_noise_px``): in training mode drawn per step from
        ``(train.seed, global_step)`` (a resumed run sees the same draws); in eval mode a fixed
        function of ``(image_id, noise_seed)``, so every model is scored on the same evidence."""
        dev = self.device
        if "feats" in batch:
            return batch["feats"].to(dev, torch.float32)
        if self.model.uses_keypoints:
            B = batch["K"].shape[0]
            d = self.cfg.data
            if d.keypoint_noise_px <= 0:
                noise = None
            elif self.training:
                noise = training_noise(B, self.cfg.train.seed, int(self.global_step))
            else:
                noise = image_noise(batch["meta"]["image_id"], noise_seed)
            return self.model.features(batch_evidence(batch, d.image_size, d.keypoint_noise_px, noise).to(dev))
        if batch["image"].shape[-1] != self.cfg.data.image_size:
            raise ValueError(f"batch images are {batch['image'].shape[-1]} px but the model was configured for "
                             f"data.image_size={self.cfg.data.image_size}")
        return self.model.features(batch["image"].to(dev, torch.float32))

    @staticmethod
    def batch_is_finite(batch: dict[str, Any]) -> bool:
        keys = ("image", "feats", "y", "joints_cam", "joints_2d", "K")
        return all(bool(torch.isfinite(batch[k]).all()) for k in keys if k in batch) and (
            "multi_y" not in batch or bool(torch.isfinite(batch["multi_y"][batch["multi_valid"]]).all())
        )

    # ------------------------------------------------------------------ lightning
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if not self.batch_is_finite(batch):
            self.skipped_batches += 1
            log.warning("step %d: batch with NaN/inf inputs skipped (images %s)", self.global_step,
                        batch["meta"]["image_id"].tolist())
            return None
        self.ensure_initialized(batch)
        total, terms, joints = self.compute_losses(batch)
        if not torch.isfinite(total):
            self.skipped_batches += 1
            log.warning("step %d: non-finite loss %s skipped; terms %s", self.global_step, total.item(),
                        {k: float(v) for k, v in terms.items()})
            return None
        bs = batch["K"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for k, v in terms.items():
            self.log(f"train/{k}", v, batch_size=bs)
        if joints is not None and joints.shape[1] > 2:  # z = 0 estimate + >= 2 samples
            self.log("train/spread_mm", sample_spread(joints[:, 1:].detach()).mean(), prog_bar=True, batch_size=bs)
        self.log("train/skipped_batches", float(self.skipped_batches), batch_size=bs)
        return total

    @torch.no_grad()
    def ensure_initialized(self, batch: dict[str, Any]) -> None:
        """Fallback when :func:`~handflow.training.runner.fit_normalizer` was not run: fit the
        normalizer and initialise ActNorm from this (first) batch's annotations, as ProHMR
        does. Needs >= 2 images with hand-model parameters; raises otherwise."""
        m = self.model
        flow = getattr(m, "flow", None)
        if bool(m.normalizer.fitted) and (flow is None or flow.initialized):
            return
        ys, mask, _ = self._targets(batch)
        y = ys[mask]
        if y.shape[0] < 2:
            raise RuntimeError("the model is not initialised and this batch has < 2 images with hand-model "
                               "parameters: call handflow.training.fit_normalizer(module, train_dataset) first")
        if not bool(m.normalizer.fitted):
            log.warning("parameter normalizer fitted on the first batch only (%d annotations); "
                        "fit_normalizer on the training set gives better statistics", y.shape[0])
            m.normalizer.fit(y)
        # zero context, as fit_normalizer: the couplings start as the identity
        m.initialize(y.new_zeros(y.shape[0], m.backbone.dim), m.normalizer.normalize(y))

    def on_after_backward(self) -> None:
        """Skip a step whose gradients are not finite. Under 16-bit mixed precision the
        GradScaler already does this (and lowers its scale); clearing gradients there would
        break its bookkeeping, so the check is left to it."""
        plugin = getattr(self._trainer, "precision_plugin", None) if self._trainer is not None else None
        if getattr(plugin, "scaler", None) is not None:
            return
        bad = [n for n, p in self.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            log.warning("step %d: non-finite gradients in %s...; step skipped", self.global_step, bad[:3])
            self.skipped_batches += 1
            for p in self.parameters():
                p.grad = None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        m = self.model
        feats = self.batch_features(batch)
        z0 = m.z0(feats)
        J = decode_joints(z0, batch["K"].float(), self.cfg.data.image_size, self.hand_model)
        valid = batch["joint_valid"]
        bs = feats.shape[0]
        for a in ("rr", "global"):
            e = mpjpe(J, batch["joints_cam"], a, mask=valid)
            self.log(f"val/mpjpe_{a}", e[torch.isfinite(e)].mean(), batch_size=bs, prog_bar=a == "rr")

    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        params = list(self.parameters())  # frozen ones too (no gradient: not stepped), as older checkpoints resume
        # fused: one kernel for all tensors (a 20 M-parameter flow's step: 85 ms unfused, 9-13 ms fused on one core)
        # Lightning's mixed-precision plugin refuses gradient clipping with a fused optimizer
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) and not (
            "mixed" in t.precision and t.grad_clip > 0)
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused)
        if t.lr_schedule == "none" or t.max_steps < 1:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(t.max_steps, 1), eta_min=t.lr * t.lr_min_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["handflow"] = {"version": handflow.__version__, "git_commit": git_commit(),
                                  "skipped_batches": self.skipped_batches, "hand_model": self.cfg.data.hand_model,
                                  "model_kind": self.cfg.model.kind, "param_dim": PARAM_DIM}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = int(checkpoint.get("handflow", {}).get("skipped_batches", 0))
