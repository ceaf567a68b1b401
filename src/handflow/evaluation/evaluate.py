"""``handflow evaluate``: every metric of the paper for one checkpoint on one split.

Per test image: the z = 0 estimate and ``S`` samples (backbone once, :meth:`HandPoseModel.predict`),
decoded to camera-frame joints (mm), then

- single-annotation MPJPE of the z = 0 estimate against the ground truth (RR, RRR, Global,
  and RR* on the joints occluded in the image) and of the best of the ``S`` samples;
- the mean per-joint sample spread (Global alignment, mm);
- with MultiHands annotations: min / max MPJPE of the z = 0 estimate over the plausible
  annotations (the ground truth counted as one of them: it is plausible by definition) and
  the MMD between the samples and those annotations, per alignment.

Work is split into chunks of images, each written atomically under ``out/chunks/``; a rerun
skips finished chunks, and each chunk has its own seeded generator so results do not depend
on where a run was resumed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import handflow
from handflow.constants import NUM_JOINTS
from handflow.metrics import mmd, mpjpe, mpjpe_min_max, mpjpe_occluded, sample_spread

__all__ = ["evaluate", "image_metrics", "RunMismatch", "ALIGNS", "COLUMNS"]

ALIGNS = ("rr", "rrr", "global")
#: per-image float columns of per_image.npz (the MultiHands ones are NaN without annotations)
COLUMNS = (
    "spread_mm",
    *(f"mpjpe_z0_{a}" for a in ALIGNS), "mpjpe_z0_rr_occ",
    *(f"mpjpe_best_{a}" for a in ALIGNS),
    *(f"min_{a}" for a in ALIGNS), *(f"max_{a}" for a in ALIGNS), *(f"mmd_{a}" for a in ALIGNS),
)
META = ("image_id", "capture", "seq", "camera", "frame")
#: generator seed of chunk c: seed * SEED_STRIDE + c
SEED_STRIDE = 1_000_003


class RunMismatch(ValueError):
    """``out`` holds an evaluation made with other settings."""


def image_metrics(z0: Tensor, samples: Tensor, gt: Tensor, valid: Tensor, visible: Tensor,
                  annotations: Tensor | None = None, ann_valid: Tensor | None = None) -> dict[str, Tensor]:
    """All per-image metrics of one batch (float64, mm).

    Args:
        z0: (B, 42, 3) z = 0 estimate; samples: (B, S, 42, 3); gt: (B, 42, 3) ground truth.
        valid: (B, 42) bool joints with ground truth; visible: (B, 42) bool visible in the image.
        annotations: optional (B, N, 42, 3) plausible annotations (ground truth included);
        ann_valid: (B, N) bool, False for padding rows.

    Returns:
        ``{column: (B,)}`` for every name in :data:`COLUMNS` (NaN where undefined).
    """
    z0, samples, gt = z0.double(), samples.double(), gt.double()
    out: dict[str, Tensor] = {"spread_mm": sample_spread(samples)}
    for a in ALIGNS:
        out[f"mpjpe_z0_{a}"] = mpjpe(z0, gt, a, mask=valid)
        out[f"mpjpe_best_{a}"] = mpjpe(samples, gt[:, None], a, mask=valid[:, None]).nan_to_num(math.inf).amin(1)
        out[f"mpjpe_best_{a}"] = torch.where(torch.isinf(out[f"mpjpe_best_{a}"]), torch.nan, out[f"mpjpe_best_{a}"])
    out["mpjpe_z0_rr_occ"] = mpjpe_occluded(z0, gt, visible, valid)
    nan = torch.full((z0.shape[0],), torch.nan, dtype=torch.float64, device=z0.device)
    for a in ALIGNS:
        if annotations is None:
            out[f"min_{a}"], out[f"max_{a}"], out[f"mmd_{a}"] = nan, nan, nan
            continue
        ann = annotations.double()
        lo, hi = mpjpe_min_max(z0, ann, a, mask=valid, ann_valid=ann_valid)
        out[f"min_{a}"], out[f"max_{a}"] = lo, hi
        out[f"mmd_{a}"] = mmd(samples, torch.where(ann_valid[..., None, None], ann, 0.0), a, ann_mask=ann_valid)
    return out


def _identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return {"size": st.st_size, "head_sha1": h.hexdigest()}


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _annotations(records: Any, ids: list[int], gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 1+N, 42, 3) ground truth + MultiHands joints, (B, 1+N) valid, (B,) has annotations."""
    recs = [records[i] if records is not None and i in records else None for i in ids]
    n = max([0] + [len(r.joints) for r in recs if r is not None])
    B = len(ids)
    ann = torch.zeros(B, 1 + n, NUM_JOINTS, 3, dtype=torch.float64)
    ok = torch.zeros(B, 1 + n, dtype=torch.bool)
    ann[:, 0], ok[:, 0] = gt.double().cpu(), True
    has = torch.zeros(B, dtype=torch.bool)
    for b, r in enumerate(recs):
        if r is not None:
            k = len(r.joints)
            ann[b, 1 : 1 + k] = torch.as_tensor(np.asarray(r.joints), dtype=torch.float64)
            ok[b, 1 : 1 + k] = True
            has[b] = True
    return ann, ok, has


def _summary_stats(v: np.ndarray) -> dict[str, float]:
    f = v[np.isfinite(v)]
    if f.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "sem": float("nan"), "count": 0}
    sd = float(f.std(ddof=1)) if f.size > 1 else 0.0
    return {"mean": float(f.mean()), "std": sd, "sem": sd / math.sqrt(f.size), "count": int(f.size)}


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, split: str = "test",
             multihands: str | Path | None = None, samples: int = 100, batch_size: int = 32, device: str = "cpu",
             seed: int = 0, limit: int | None = None, num_workers: int = 0, chunk_images: int = 512,
             progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data/split``; writes ``per_image.npz``, ``summary.json``,
    ``summary.csv`` and ``summary.md`` into ``out`` and returns the summary dict.

    Raises:
        FileNotFoundError: missing checkpoint, dataset split or MultiHands folder.
        RunMismatch: ``out`` holds an evaluation with other settings (use ``overwrite``).
        ValueError: ``samples < 1`` or MultiHands annotations that share no image with the split.
    """
    from tqdm import tqdm

    from handflow.data import InterHandDataset
    from handflow.models import decode_joints
    from handflow.training import load_checkpoint

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    checkpoint, data, out = Path(checkpoint), Path(data), Path(out)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no GPU")
    module, cfg = load_checkpoint(checkpoint)
    module = module.to(device).eval()
    size = cfg.data.image_size
    ds = InterHandDataset(data, split, size, hand_model=cfg.data.hand_model, mano_path=cfg.data.mano_path, augment=False)
    M = len(ds) if limit is None else min(limit, len(ds))
    records = None
    if multihands is not None:
        from handflow.multihands import load as load_multihands

        records = load_multihands(multihands, split)
    run = {"checkpoint": str(checkpoint.resolve()), "checkpoint_identity": _identity(checkpoint), "data": str(data.resolve()),
           "split": split, "multihands": None if multihands is None else str(Path(multihands).resolve()),
           "samples": samples, "seed": seed, "images": M, "chunk_images": chunk_images}
    out.mkdir(parents=True, exist_ok=True)
    chunks = out / "chunks"
    if (out / "run.json").exists() and not overwrite:
        old = json.loads((out / "run.json").read_text())
        diff = {k: (old.get(k), v) for k, v in run.items() if old.get(k) != v}
        if diff:
            raise RunMismatch(f"{out} holds an evaluation with other settings {diff}; use a fresh --out or --overwrite")
    elif overwrite and chunks.exists():
        for p in chunks.glob("*.npz"):
            p.unlink()
    chunks.mkdir(exist_ok=True)
    _atomic_text(out / "run.json", json.dumps(run, indent=1))
    n_chunks = math.ceil(M / chunk_images)
    bar = tqdm(total=M, desc=f"evaluate {split}", unit="img", disable=not progress)
    for c in range(n_chunks):
        path = chunks / f"chunk-{c:05d}.npz"
        lo, hi = c * chunk_images, min(M, (c + 1) * chunk_images)
        if path.exists():
            bar.update(hi - lo)
            continue
        g = torch.Generator().manual_seed(seed * SEED_STRIDE + c)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(lo, hi)), batch_size=batch_size,
                                             num_workers=num_workers, shuffle=False)
        cols: dict[str, list] = {k: [] for k in (*META, *COLUMNS, "has_multihands", "num_annotations")}
        for batch in loader:
            ids = [int(i) for i in batch["meta"]["image_id"]]
            with torch.no_grad():
                pred = module.model.predict(batch["image"].to(device), samples, g)
                K = batch["K"].float().to(device)
                z0 = decode_joints(pred["z0"], K, size, module.hand_model).cpu()
                smp = decode_joints(pred["samples"], K, size, module.hand_model).cpu()
            gt = batch["joints_cam"].double()
            ann, ann_ok, has = _annotations(records, ids, gt)
            m = image_metrics(z0, smp, gt, batch["joint_valid"].bool(), batch["visible"].bool(),
                              ann if records is not None else None, ann_ok)
            for k in COLUMNS:
                v = m[k].cpu().numpy()
                if k.startswith(("min_", "max_", "mmd_")):
                    v = np.where(has.numpy(), v, np.nan)
                cols[k].append(v)
            cols["has_multihands"].append(has.numpy())
            cols["num_annotations"].append((ann_ok.sum(1) - 1).numpy() * has.numpy())
            for k in META:
                cols[k].append(np.asarray([str(x) if k in ("seq", "camera") else int(x) for x in batch["meta"][k]]))
            bar.update(len(ids))
        _atomic_savez(path, {k: np.concatenate(v) for k, v in cols.items()})
    bar.close()
    return _finish(out, run, n_chunks, cfg, device, records is not None)


def _finish(out: Path, run: dict, n_chunks: int, cfg: Any, device: str, with_mh: bool) -> dict[str, Any]:
    parts = []
    for c in range(n_chunks):
        with np.load(out / "chunks" / f"chunk-{c:05d}.npz", allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    per = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if with_mh and not per["has_multihands"].any():
        raise ValueError(f"the MultiHands annotations in {run['multihands']} share no image id with {run['data']} "
                         f"({run['split']}): annotations of another dataset or split?")
    _atomic_savez(out / "per_image.npz", per)
    summary = {"model_kind": cfg.model.kind, **{k: run[k] for k in ("checkpoint", "data", "split", "multihands", "samples", "seed")},
               "num_images": int(len(per["image_id"])), "num_images_multihands": int(per["has_multihands"].sum()),
               "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
               "handflow_version": handflow.__version__,
               "metrics": {k: _summary_stats(per[k].astype(np.float64)) for k in COLUMNS}}
    _atomic_text(out / "summary.json", json.dumps(summary, indent=1))
    with open(out / "summary.csv.tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "mean", "std", "sem", "count"])
        for k, s in summary["metrics"].items():
            w.writerow([k, s["mean"], s["std"], s["sem"], s["count"]])
    os.replace(out / "summary.csv.tmp", out / "summary.csv")
    _atomic_text(out / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """Table-1 / Table-2 style Markdown of one evaluation."""
    m = summary["metrics"]

    def f(k: str, d: int = 1) -> str:
        s = m[k]
        return "–" if not s["count"] else f"{s['mean']:.{d}f} ± {s['sem']:.{d}f}"

    lines = [f"# Evaluation of `{summary['checkpoint']}` ({summary['model_kind']})", "",
             f"{summary['num_images']} images of {summary['data']} ({summary['split']}), {summary['samples']} samples each, "
             f"{summary['num_images_multihands']} with MultiHands annotations; mean ± standard error over images.", "",
             "| alignment | z = 0 MPJPE (mm) | best of N (mm) | min over annotations | max over annotations | MMD |",
             "|---|---|---|---|---|---|"]
    for a in ALIGNS:
        lines.append(f"| {a.upper()} | {f(f'mpjpe_z0_{a}')} | {f(f'mpjpe_best_{a}')} | {f(f'min_{a}')} | {f(f'max_{a}')} | "
                     f"{f(f'mmd_{a}', 3)} |")
    lines += ["", f"RR* (occluded joints) of the z = 0 estimate: {f('mpjpe_z0_rr_occ')} mm; mean sample spread "
              f"{f('spread_mm')} mm.", ""]
    return "\n".join(lines)
