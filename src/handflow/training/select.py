"""Checkpoint selection on the validation split: early stopping after the fact.

A run saves ``checkpoints/stepNNNNNNN.ckpt`` every ``train.ckpt_every`` steps.
:func:`select_checkpoint` scores each of them by the run's **own training objective** (the
weighted sum of its active loss terms, :meth:`HandFlowModule.compute_losses`) on the
validation split, and links the lowest as ``checkpoints/best.ckpt``. Every model kind is
selected by its own loss, so the rule favours none of them.

Why it matters: a head trained on a fixed set of features (the shared-feature protocol,
no augmentation) memorises the training images. Measured on the synthetic benchmark of
``docs/results.md``, HandFlowNet's log-likelihood of the validation ground truth peaks after
≈ 200 steps and then falls by 7 nats per dimension while the training one keeps rising.

The scores go to ``selection.json`` beside the checkpoints::

    {"criterion": "validation loss (own objective)", "split": "val", "limit": 2048, "images": M,
     "steps": {"200": {"loss": ..., "terms": {...}}, ...}, "best_step": 200,
     "best": "checkpoints/best.ckpt", "source": "checkpoints/step0000200.ckpt"}

A rerun reuses the scores of checkpoints already scored (same split and image count).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from handflow.atomic import atomic_path, write_json
from handflow.data.datamodule import InterHandDataModule
from handflow.training.runner import load_checkpoint

__all__ = ["BEST", "SELECTION", "step_checkpoints", "validation_loss", "select_checkpoint"]

log = logging.getLogger(__name__)

BEST = "best.ckpt"
SELECTION = "selection.json"
_STEP = re.compile(r"step(\d+)\.ckpt$")


def step_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of a run's periodic checkpoints, in step order."""
    found = {int(m.group(1)): p for p in (Path(run_dir) / "checkpoints").glob("step*.ckpt") if (m := _STEP.search(p.name))}
    return dict(sorted(found.items()))


def _val_batches(cfg: Any, hand_model: Any, split: str, limit: int, batch_size: int) -> list[dict[str, Any]]:
    """Collated batches of at most ``limit`` images spread evenly over ``split`` (no augmentation)."""
    ds = InterHandDataModule.from_config(cfg, batch_size=batch_size, num_workers=0, hand_model=hand_model,
                                         augment=False).dataset(split)
    if len(ds) == 0:
        raise ValueError(f"split {split!r} of {cfg.data.root} has no image to select a checkpoint on")
    idx = torch.linspace(0, len(ds) - 1, min(limit, len(ds))).round().long().unique().tolist()
    return [torch.utils.data.default_collate([ds[i] for i in idx[a:a + batch_size]]) for a in range(0, len(idx), batch_size)]


@torch.no_grad()
def validation_loss(module: Any, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-weighted mean of the module's total loss and of each term over ``batches``
    (eval mode; the loss's noise comes from the module's fixed generator, so every
    checkpoint of a run sees the same draws). Returns ``{"loss": float, "terms": {...}}``."""
    module.eval()
    n, total, terms = 0, 0.0, {}
    for b in batches:
        B = int(b["K"].shape[0])
        loss, t, _ = module.compute_losses(b)
        if not torch.isfinite(loss):
            return {"loss": float("inf"), "terms": {k: float(v) for k, v in t.items()}}
        n, total = n + B, total + B * float(loss)
        for k, v in t.items():
            terms[k] = terms.get(k, 0.0) + B * float(v)
    return {"loss": total / n, "terms": {k: v / n for k, v in terms.items()}}


def select_checkpoint(run_dir: str | Path, split: str = "val", limit: int = 2048, batch_size: int = 64,
                      progress: bool = False) -> dict[str, Any]:
    """Score every ``stepNNNNNNN.ckpt`` of ``run_dir`` on ``split`` and link the best as
    ``checkpoints/best.ckpt``; returns the ``selection.json`` dict.

    Args:
        run_dir: a ``handflow train`` output folder.
        split: the split scored (never the test split of a benchmark).
        limit: at most this many images, spread evenly over the split.
        batch_size: images per loss evaluation.
        progress: show a progress bar over the checkpoints.

    Raises:
        FileNotFoundError: the run has no periodic checkpoint.
    """
    run_dir = Path(run_dir)
    ckpts = step_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"no step*.ckpt in {run_dir / 'checkpoints'}: train with train.ckpt_every set "
                                "(handflow train writes one every ckpt_every steps)")
    sel_path = run_dir / SELECTION
    old = json.loads(sel_path.read_text()) if sel_path.is_file() else {}
    scores: dict[str, Any] = old.get("steps", {}) if (old.get("split"), old.get("limit")) == (split, limit) else {}
    batches = None
    for step, path in tqdm(ckpts.items(), desc=f"select {run_dir.name}", disable=not progress, unit="ckpt"):
        if str(step) in scores:
            continue
        module, cfg = load_checkpoint(path)
        if batches is None:
            batches = _val_batches(cfg, module.hand_model, split, limit, batch_size)
        scores[str(step)] = validation_loss(module, batches)
        log.info("%s step %d: validation loss %.4f", run_dir.name, step, scores[str(step)]["loss"])
    best = min(ckpts, key=lambda s: (scores[str(s)]["loss"], s))
    target = run_dir / "checkpoints" / BEST
    with atomic_path(target) as tmp:
        try:
            os.link(ckpts[best], tmp)
        except OSError:
            shutil.copyfile(ckpts[best], tmp)
    out = {"criterion": "validation loss (own objective)", "split": split, "limit": limit,
           "images": sum(int(b["K"].shape[0]) for b in batches) if batches else old.get("images"),
           "steps": {str(s): scores[str(s)] for s in ckpts}, "best_step": best,
           "best": str(target.relative_to(run_dir)), "source": str(ckpts[best].relative_to(run_dir))}
    write_json(sel_path, out)
    return out
