"""A reference that sees no image: the mean training parameters.

A model that learned nothing from the image outputs (in standardized units) zero, i.e. the
mean of its training parameters. Decoded through each test image's crop camera, that mean
gives the chance level of every metric of ``handflow evaluate``: what a table's numbers must
beat before they say anything about the image. Its "samples" are the one mean pose (spread 0,
the MMD of a point mass).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from handflow.evaluation.per_image import COLUMNS
from handflow.evaluation.scoring import _open_dataset, _open_multihands, joint_columns
from handflow.evaluation.summary import column_stats
from handflow.models import decode_joints

__all__ = ["mean_pose_metrics"]


def mean_pose_metrics(checkpoint: str | Path, data: str | Path, split: str = "test",
                      multihands: str | Path | None = None, batch_size: int = 256) -> dict[str, dict[str, Any]]:
    """Every ``handflow evaluate`` column for the mean training pose of ``checkpoint``.

    Args:
        checkpoint: a ``handflow train`` checkpoint; only its parameter normalizer (the
            training mean), hand model and crop size are used.
        data: dataset root; split: the split evaluated.
        multihands: ``handflow multihands`` root for the min/max and MMD columns (NaN without).
        batch_size: images per batch (no image is decoded).

    Returns:
        ``{column: {mean, std, sem, count}}`` over the split's images, as in ``summary.json``.
    """
    # lazy: handflow.training needs Lightning (the [train] extra); handflow.evaluation imports without it
    from handflow.training import load_checkpoint

    module, cfg = load_checkpoint(checkpoint)
    ds = _open_dataset(Path(data), split, cfg, load_images=False)
    records = None if multihands is None else _open_multihands(Path(multihands), split, np.asarray(ds.index.a["img_id"]))
    mean = module.model.normalizer.mean.float()  # (D,)
    parts = []
    for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size):
        with torch.no_grad():
            J = decode_joints(mean.expand(batch["K"].shape[0], 1, -1), batch["K"].float(), cfg.data.image_size,
                              module.hand_model)  # (B, 1, 42, 3): the estimate and its one "sample"
        parts.append(joint_columns(torch.cat([J, J], 1), batch, "cpu", records))
    return {k: column_stats(np.concatenate([p[k] for p in parts])) for k in COLUMNS}
