"""Every evaluation of a benchmark as ONE long table: ``run, seed, image_id, metric, value``.

:func:`gather` reads ``WORK/eval/<run>-s<seed>/per_image.npz`` of every run and seed of the
plan (read-only) and writes, into the page's folder:

* ``results.csv``: one row per (run, seed, image, metric) with a finite value (NaN, "not
  defined", is left out), values written exactly (``repr``); rows with an empty ``image_id``
  hold one value per run and seed: ``steps`` (the training step its checkpoint reached) and, for
  the run :data:`REFERENCE`, the mean-training-pose chance level of every column (no seed);
  also ``results.parquet`` when pyarrow is installed;
* ``images.csv``: ``image_id, capture, seq, frame, camera`` of the test images, in dataset
  order (what view selection groups by);
* ``context.json``: the facts of the page that are not measurements (the settings and the
  command, the experiment's runs and labels, data and MultiHands summaries, stage wall times).

:class:`ResultsTable` reads them back; the page is a set of group-bys of the table
(:mod:`handflow.pipeline.render`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handflow.atomic import atomic_path, write_json
from handflow.errors import CorruptFileError, MissingFileError
from handflow.pipeline.plan import ReportPlan, plan_command
from handflow.pipeline.stages import backbone_stage, eval_stage, features_stage, finished_step, synth_settings, train_stage

__all__ = ["ResultsTable", "gather", "read_results", "write_results", "REFERENCE", "IMAGE_KEYS", "HEADER"]

HEADER = ("run", "seed", "image_id", "metric", "value")
#: the columns of per_image.npz that identify an image rather than measure it
IMAGE_KEYS = ("image_id", "capture", "seq", "frame", "camera")
#: run name of the no-image reference (the mean training pose, :mod:`handflow.evaluation.chance`)
REFERENCE = "mean_pose"
NONE = -1  # an empty seed or image_id


@dataclass
class ResultsTable:
    """The long table grouped by (run, seed): ``values[(run, seed)][metric] = (image_ids, values)``
    (``image_ids`` of :data:`NONE` for per-run values), with the image index and the context."""

    values: dict[tuple[str, int], dict[str, tuple[np.ndarray, np.ndarray]]]
    images: dict[str, np.ndarray]
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pos = {int(i): k for k, i in enumerate(self.images["image_id"])}

    @property
    def runs(self) -> list[str]:
        """Evaluated runs, in the table's order (the reference left out)."""
        return list(dict.fromkeys(r for r, _ in self.values if r != REFERENCE))

    def __contains__(self, run: object) -> bool:
        return any(r == run for r, _ in self.values)

    def seeds(self, run: str) -> list[int]:
        return sorted(s for r, s in self.values if r == run)

    def per_image(self, run: str, metric: str) -> np.ndarray:
        """(seeds, M) values of ``metric`` on the image index (NaN where not defined)."""
        out = np.full((len(self.seeds(run)), len(self._pos)), np.nan)
        for k, s in enumerate(self.seeds(run)):
            ids, v = self.values[(run, s)].get(metric, (np.zeros(0, int), np.zeros(0)))
            keep = ids != NONE
            out[k, [self._pos[int(i)] for i in ids[keep]]] = v[keep]
        return out

    def seed_means(self, run: str, metric: str) -> np.ndarray:
        """Per-seed mean over the images where ``metric`` is defined (seeds in order; NaN for none),
        or the per-run value where there is no per-image one."""
        out = []
        for s in self.seeds(run):
            ids, v = self.values[(run, s)].get(metric, (np.zeros(0, int), np.zeros(0)))
            per = v[ids != NONE]
            out.append(float(per.mean()) if per.size else float(v[0]) if v.size else math.nan)
        return np.array(out, dtype=float)

    metric = seed_means  # the name the figure functions use

    def value(self, run: str, seed: int, metric: str, default: float = math.nan) -> float:
        """A per-run value (``image_id`` empty)."""
        ids, v = self.values.get((run, seed), {}).get(metric, (np.zeros(0, int), np.zeros(0)))
        return float(v[ids == NONE][0]) if (ids == NONE).any() else default

    def columns(self, run: str, seed: int) -> dict[str, np.ndarray]:
        """One evaluation as ``per_image.npz`` columns (image keys and every metric, image order)."""
        k = self.seeds(run).index(seed)
        return {**self.images, **{m: self.per_image(run, m)[k] for m, (ids, _) in self.values[(run, seed)].items()
                                  if (ids != NONE).any()}}


# ---------------------------------------------------------------------------- reading, writing
def _blank(x: int) -> str:
    return "" if x == NONE else str(x)


def _int(text: str) -> int:
    return NONE if text == "" else int(text)


def read_results(folder: str | Path) -> ResultsTable:
    """The table, image index and context written by :func:`gather` into ``folder``."""
    folder = Path(folder)
    if not (folder / "results.csv").is_file():
        raise MissingFileError(f"no results table {folder / 'results.csv'}: run `handflow report --render` first")
    rows: dict[tuple[str, int], dict[str, tuple[list[str], list[str]]]] = {}
    key: tuple[str, str, str] | None = None
    ids: list[str] = []
    vals: list[str] = []
    with open(folder / "results.csv", newline="") as fh:
        r = csv.reader(fh)
        if next(r, None) != list(HEADER):
            raise CorruptFileError(f"{folder / 'results.csv'} is not a results table (header {', '.join(HEADER)})")
        for run, seed, img, metric, value in r:  # rows come grouped by (run, seed, metric): look the group up on change
            if key != (run, seed, metric):
                key = (run, seed, metric)
                ids, vals = rows.setdefault((run, _int(seed)), {}).setdefault(metric, ([], []))
            ids.append(img)
            vals.append(value)
    with open(folder / "images.csv", newline="") as fh:
        recs = list(csv.DictReader(fh))
    images = {k: np.array([int(x[k]) if k != "seq" and k != "camera" else x[k] for x in recs]) for k in IMAGE_KEYS}
    ctx = json.loads((folder / "context.json").read_text()) if (folder / "context.json").exists() else {}
    values = {k: {m: (np.array([NONE] * len(i) if i[0] == "" else i, dtype=np.int64), np.array(v, dtype=float))
                  for m, (i, v) in d.items()} for k, d in rows.items()}
    return ResultsTable(values, images, ctx)


def write_results(folder: Path, rows: list[tuple[str, int, int, str, float]], images: dict[str, np.ndarray],
                  context: dict[str, Any]) -> None:
    """Write ``results.csv`` (+ ``.parquet`` with pyarrow), ``images.csv`` and ``context.json``."""

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "results.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows((run, _blank(s), _blank(i), m, repr(float(v))) for run, s, i, m, v in rows)
    with atomic_path(folder / "images.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(IMAGE_KEYS)
        w.writerows(zip(*(images[k].tolist() for k in IMAGE_KEYS)))
    write_json(folder / "context.json", context)
    try:
        # lazy: optional, Parquet is written only where pyarrow is installed
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    cols: list[list[Any]] = [list(c) for c in zip(*rows)] if rows else [[] for _ in HEADER]
    cols[1:3] = [[None if x == NONE else x for x in c] for c in cols[1:3]]  # empty seed / image_id: null
    pq.write_table(pa.table(dict(zip(HEADER, cols))), folder / "results.parquet")


# ---------------------------------------------------------------------------- gathering
def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _eval_rows(run: str, seed: int, z: dict[str, np.ndarray]) -> list[tuple[str, int, int, str, float]]:
    ids = z["image_id"].astype(np.int64)
    out = []
    for m, col in z.items():
        if m in IMAGE_KEYS or col.dtype.kind not in "biuf":
            continue
        v = col.astype(float)
        ok = np.isfinite(v)
        out += [(run, seed, int(i), m, float(x)) for i, x in zip(ids[ok], v[ok])]
    return out


def _context(plan: ReportPlan, first_summary: dict[str, Any]) -> dict[str, Any]:
    """The page's facts that are not measurements, read from the work folder."""
    exp = plan.experiment_table
    ref, seed0 = exp.methods[0] if exp.methods else plan.runs[0], plan.seeds[0]
    incomplete = []
    for split in ("test", "train"):
        m = _json(plan.mh / split / "meta.json")
        if m and not m.get("complete", True):
            size = int(m.get("config", {}).get("part_size", 256)) if isinstance(m.get("config"), dict) else 256
            incomplete.append({"split": split, "done": min(int(m["parts_done"]) * size, int(m["num_images"])),
                               "num_images": m["num_images"], "parts_done": m["parts_done"], "num_parts": m["num_parts"]})
    ctx: dict[str, Any] = {
        "plan": asdict(plan), "command": plan_command(plan), "experiment": exp.to_json(),
        "synth": " ".join(synth_settings(plan)), "splits": _json(plan.data / "synth_summary.json").get("splits", {}),
        "mh_test": _json(plan.mh / "test" / "summary.json"), "mh_incomplete": incomplete,
        "timings": _json(plan.root / "timings.json"),
        "evaluation": {k: first_summary.get(k) for k in ("device", "num_images", "num_images_multihands")},
        "reference_run": ref, "train_command": train_stage(plan, ref, seed0).command,
        "eval_command": eval_stage(plan, ref, seed0).command,
    }
    ctx["mh_test"].pop("rates", None)
    if plan.protocol == "shared" and plan.backbone_from is not None:  # a given model's backbone: nothing trained here
        from handflow.models.shipped import SHIPPED  # lazy: torch for a shared plan only

        ctx["backbone"] = {"from": plan.backbone_from, **_model_facts(plan.backbone_ckpt),
                           "shipped": plan.backbone_from in SHIPPED and not Path(plan.backbone_from).exists(),
                           "commands": [features_stage(plan).command]}
    elif plan.protocol == "shared":
        ctx["backbone"] = {"step": finished_step(plan.backbone_ckpt), "validation": _last_val(plan.backbone_ckpt.parents[1]),
                           "commands": [backbone_stage(plan).command, features_stage(plan).command]}
    ckpt = plan.run_dir(ref, seed0) / "checkpoints" / "last.ckpt"
    if ckpt.exists() and plan.data.exists():
        ctx["samples"] = {"run": ref, "seed": seed0, "checkpoint": str(ckpt), "data": str(plan.data)}
    return ctx


def _model_facts(path: Path) -> dict[str, Any]:
    """``{"kind", "step"}`` of a checkpoint or weights file (its stored model kind and the
    training step it was written at; empty when it cannot be read)."""
    from handflow.models.checkpoint import checkpoint_step, read_checkpoint  # lazy: torch for a shared plan only

    try:
        ck, cfg = read_checkpoint(path, map_location="meta")
    except (OSError, ValueError):
        return {}
    return {"kind": cfg.model.kind, "step": checkpoint_step(ck)}


def _last_val(run_dir: Path) -> dict[str, float] | None:
    """The last validation MPJPE (RR, Global) of the run's CSV log, if any."""
    rows = []
    for f in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(f, newline="") as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("val/mpjpe_rr")]
    if not rows:
        return None
    r = max(rows, key=lambda r: int(r["step"]))
    return {"rr": float(r["val/mpjpe_rr"]), "global": float(r["val/mpjpe_global"])}


def gather(plan: ReportPlan, folder: str | Path, reference: bool = True) -> ResultsTable:
    """Collect the plan's finished evaluations into the long table in ``folder`` (the work folder
    is only read). ``reference``: also compute the mean-training-pose row (decodes one pose per
    test image through the first run's checkpoint; skipped without a checkpoint or data)."""
    rows: list[tuple[str, int, int, str, float]] = []
    images: dict[str, list] = {k: [] for k in IMAGE_KEYS}
    seen: set[int] = set()
    first: dict[str, Any] | None = None
    for n in plan.runs:
        for s in plan.seeds:
            d = plan.eval_dir(n, s)
            if not (d / "summary.json").exists():
                continue
            first = first or json.loads((d / "summary.json").read_text())
            with np.load(d / "per_image.npz", allow_pickle=False) as f:
                z = {k: f[k] for k in f.files}
            for j, i in enumerate(z["image_id"].tolist()):
                if i not in seen:
                    seen.add(i)
                    for k in IMAGE_KEYS:
                        images[k].append(z[k][j].item())
            rows += _eval_rows(n, s, z)
            rows.append((n, s, NONE, "steps", float(finished_step(plan.run_dir(n, s) / "checkpoints" / "last.ckpt"))))
    if first is None:
        raise MissingFileError(f"no finished evaluation under {plan.root / 'eval'}: run the earlier stages first")
    if reference:
        rows += _reference_rows(plan, list(dict.fromkeys(r[0] for r in rows)))
    folder = Path(folder)
    write_results(folder, rows, {k: np.array(v) for k, v in images.items()}, _context(plan, first))
    return read_results(folder)


def _reference_rows(plan: ReportPlan, runs: list[str]) -> list[tuple[str, int, int, str, float]]:
    """Every evaluate column for the mean training pose, from the first evaluated run's
    checkpoint (all runs share the training data); none without a checkpoint or data."""
    from handflow.evaluation.chance import mean_pose_metrics  # lazy: loads a checkpoint (torch), only for the reference row

    for n in runs:
        for s in sorted(plan.seeds):
            ckpt = plan.run_dir(n, s) / "checkpoints" / "last.ckpt"
            if ckpt.exists() and plan.data.exists() and (plan.eval_dir(n, s) / "summary.json").exists():
                mh = plan.mh if (plan.mh / "test").is_dir() else None
                ref = mean_pose_metrics(ckpt, plan.data, "test", mh)
                return [(REFERENCE, NONE, NONE, k, float(v["mean"])) for k, v in ref.items() if math.isfinite(v["mean"])]
    return []
