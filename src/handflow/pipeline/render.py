"""The results page from the long table: tables, findings and figures as group-bys of
:class:`~handflow.pipeline.results.ResultsTable`, filled into the template ``page.md``.

The template holds every sentence of the page; its ``@@ name`` lines start its sections (the
page, then the optional paragraphs). A placeholder alone on a line whose value is empty is
dropped together with the blank line after it. :func:`render_page` is pure (table -> text);
:func:`write_page` also draws the figures and merges the text into the page file: the image
protocols (``end2end``, ``shared``) write the page's image part, ``keypoints`` its part between
:data:`KP_BEGIN` and :data:`KP_END`, each keeping the other (:func:`merge_page`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from handflow.atomic import write_text
from handflow.pipeline.results import NONE, REFERENCE, ResultsTable
from handflow.pipeline.stats import findings, fmt, view_selection

__all__ = ["render_page", "write_page", "merge_page", "template_sections", "KP_BEGIN", "KP_END", "REF_LABEL", "TITLE",
           "KP_PART_TITLE"]

KP_BEGIN, KP_END = "<!-- handflow report --protocol keypoints: begin -->", "<!-- handflow report --protocol keypoints: end -->"
TITLE = "# Results: the paper's tables on the synthetic benchmark"
KP_PART_TITLE = "## Keypoint-evidence protocol: every model conditioned on the 2D evidence of its image"
REF_LABEL = "*mean training pose (no image)*"
ALIGNS = ("global", "rrr", "rr")
STAGE_ORDER = ("data", "multihands", "backbone", "features", "train", "evaluate", "write")
PER_SEED = ("mmd_global", "mmd_rrr", "mmd_rr", "spread_mm", "mpjpe_z0_rr", "min_global", "max_global")
SAMPLE_SHOTS = ("confident", "median", "ambiguous")


def template_sections() -> dict[str, str]:
    """The sections of ``page.md``: name -> template text."""
    text = resources.files("handflow.pipeline").joinpath("page.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(2).rstrip("\n") for m in re.finditer(r"^@@ (\w+)\n(.*?)(?=^@@ |\Z)", text, re.M | re.S)}


def _fill(template: str, values: dict[str, Any]) -> str:
    """``template`` with ``values``; a lone placeholder line with an empty value goes, with the
    blank line after it."""
    lines, out, skip = template.split("\n"), [], False
    for line in lines:
        if skip and line == "":
            skip = False
            continue
        skip = False
        m = re.fullmatch(r"\$\{(\w+)\}", line)
        if m and values.get(m.group(1), "") == "":
            skip = True
            continue
        out.append(line)
    return Template("\n".join(out)).substitute({k: str(v) for k, v in values.items()})


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _model_table(t: ResultsTable, runs: list[str], label: dict[str, str], cols: list[tuple[str, int]],
                 ref: bool) -> list[list[str]]:
    """Rows ``label, mean ± std over seeds`` of each (column, digits); the reference row last."""
    rows = [[label[n]] + [fmt(t.seed_means(n, k), d) for k, d in cols] for n in runs]
    if ref:
        rows.append([REF_LABEL] + [fmt(np.array([t.value(REFERENCE, NONE, k)]), d) for k, d in cols])
    return rows


def _splits(splits: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.get('images', '?')} images" for k, v in splits.items()) or "splits unknown"


def _mh_line(s: dict[str, Any]) -> str:
    """One line from a MultiHands split summary (``handflow.multihands.diagnostics.summarize``)."""
    parts = [f"{s.get('num_images', '?')} images, {s.get('fraction_fewer_than_num', float('nan')):.1%} with fewer than N"]
    per = s.get("per_image", {})
    spreads = [f"{k.split('_')[1].upper()} {per[k]['mean']:.1f}" for k in ("spread_global", "spread_rrr", "spread_rr")
               if isinstance(per.get(k), dict) and "mean" in per[k]]
    if spreads:
        parts.append("mean annotation spread (mm) " + ", ".join(spreads))
    return "; ".join(parts)


def _paragraphs(sec: dict[str, str], ctx: dict[str, Any]) -> dict[str, str]:
    """The optional paragraphs above the tables (empty when they do not apply)."""
    plan, t = ctx["plan"], ctx.get("timings") or {}
    out = {"timings": "", "protocol": "", "mh_test": "", "mh_incomplete": ""}
    if t:
        out["timings"] = _fill(sec["timings"], {"parts": ", ".join(f"{s} {t[s] / 60:.1f} min" for s in STAGE_ORDER if s in t),
                                                "total": f"{sum(t.values()) / 60:.1f}"})
    if plan["protocol"] == "shared":
        bb, v = ctx["backbone"], ctx["backbone"].get("validation")
        if bb.get("from") is not None:  # --backbone-from: a shipped model (by name) or a file
            source = f"the shipped model `{bb['from']}`" if bb.get("shipped") else f"`{bb['from']}`"
            backbone = _fill(sec["shared_from"], {"source": source, "kind": bb.get("kind", "?"), "step": bb.get("step", "?")})
        else:
            val = f"; validation MPJPE of its estimate RR {v['rr']:.1f} mm, Global {v['global']:.1f} mm" if v else ""
            backbone = _fill(sec["shared_trained"], {"kind": plan["backbone_kind"], "step": bb["step"], "validation": val})
        k = int(plan.get("feature_copies", 1))
        copies = _fill(sec["shared_copies"], {"copies": k}) if k > 1 else ""
        out["protocol"] = _fill(sec["shared"], {"backbone": backbone, "copies": copies, "steps": plan["steps"],
                                                "commands": "\n".join(bb["commands"])})
    elif plan["protocol"] == "keypoints":
        out["protocol"] = _fill(sec["keypoints"], {"noise": f"{plan['keypoint_noise_px']:g}"})
    if ctx.get("mh_test"):
        out["mh_test"] = _fill(sec["mh_test"], {"line": _mh_line(ctx["mh_test"])})
    if ctx.get("mh_incomplete"):
        out["mh_incomplete"] = _fill(sec["mh_incomplete"], {"parts": "; ".join(
            f"{m['split']} split {m['done']} of {m['num_images']} images ({m['parts_done']} of {m['num_parts']} parts)"
            for m in ctx["mh_incomplete"])})
    return out


def _seeds_text(t: ResultsTable, plan: dict[str, Any]) -> str:
    """The seeds the tables average over; while evaluations of the plan are missing (a run in
    progress), which seeds the plan has and how many evaluations are done, so a partial page
    never reads as the full one."""
    planned = [int(s) for s in plan["seeds"]]
    done = {(n, s) for n in t.runs for s in t.seeds(n)}
    total = len(plan["runs"]) * len(planned)
    shown = sorted({s for _, s in done})
    if len(done) >= total and shown == sorted(planned):
        return ", ".join(map(str, planned))
    return (f"{', '.join(map(str, shown)) or 'none'} (the plan has seeds {', '.join(map(str, planned))}: "
            f"{len(done)} of {total} evaluations done; rerun the command to complete them)")


def render_page(t: ResultsTable, figure_prefix: str | None = None) -> str:
    """The page (or, for the keypoint protocol, its part) from the table and its context."""
    ctx, sec = t.context, template_sections()
    plan, exp, ev = ctx["plan"], ctx["experiment"], ctx.get("evaluation") or {}
    kp = plan["protocol"] == "keypoints"
    h, fig = ("###" if kp else "##"), figure_prefix or ("results_kp_" if kp else "results_")
    label = {n: r["label"] for n, r in exp["runs"].items()}
    ref_run, ref = ctx.get("reference_run", "flow"), REFERENCE in t
    methods = [n for n in exp["methods"] if n in t]
    ablations = [n for n in exp["ablations"] if n in t]
    mmd = [(f"mmd_{a}", 3) for a in ALIGNS]
    vs = view_selection(t, ref_run)
    values: dict[str, Any] = {
        "title": KP_PART_TITLE if kp else TITLE, "h": h, "fig": fig,
        "status_section": "The keypoint-evidence protocol" if kp else "Status of the benchmark",
        "command": ctx["command"], "device": ev.get("device") or plan["device"], "preset": plan["preset"],
        "steps": plan["steps"], "seeds": _seeds_text(t, plan), "synth": ctx["synth"],
        "splits": _splits(ctx.get("splits") or {}), "image_size": plan["image_size"],
        **{k: plan[k] for k in ("mh_test_num", "mh_train_num", "mh_train_rounds", "mh_train_proposals", "samples")},
        "num_images": ev.get("num_images") or "?", "num_images_multihands": ev.get("num_images_multihands") or "?",
        "seed": plan["seeds"][0], "train_command": ctx["train_command"], "eval_command": ctx["eval_command"],
        **_paragraphs(sec, ctx), "reference_note": sec["reference_note"] if ref else "",
        "table1": _table(["model"] + [f"{m} {a.upper()}" for a in ALIGNS for m in ("min", "max")],
                         _model_table(t, methods, label, [(f"{m}_{a}", 1) for a in ALIGNS for m in ("min", "max")], ref)),
        "table2": _table(["model", "MMD Global", "MMD RRR", "MMD RR", "spread (mm)", "MPJPE RR z=0", "RR best-of-N",
                          "RR* z=0 (occluded)"],
                         _model_table(t, methods, label, mmd + [(k, 1) for k in ("spread_mm", "mpjpe_z0_rr", "mpjpe_best_rr",
                                                                                  "mpjpe_z0_rr_occ")], ref)),
        "ablations": "`, `".join(f"{label[n]}: {_switched_off(exp['runs'][n])}" for n in ablations if n != ref_run),
        "table3": _table(["model", "MMD Global", "MMD RRR", "MMD RR", "spread (mm)", "MPJPE RR z=0"],
                         _model_table(t, ablations, label, mmd + [("spread_mm", 1), ("mpjpe_z0_rr", 1)], False)),
        "view_selection": "", "samples_section": "",
        "findings": _table(["finding", "holds", "evidence"],
                           [[c, {True: "yes", False: "**no**", None: "–"}[ok], e] for c, ok, e in findings(t, exp)]),
        "per_seed": _table(["run", "seed", "steps", "MMD Global", "MMD RRR", "MMD RR", "spread", "RR z=0", "min Global",
                            "max Global"],
                           [[label[n], str(s), str(int(t.value(n, s, "steps", -1)))]
                            + [f"{t.seed_means(n, k)[i]:.3f}" for k in PER_SEED]
                            for n in t.runs for i, s in enumerate(t.seeds(n))]),
    }
    if vs:
        from handflow.evaluation.report_figures import view_selection_table  # lazy: figures load torch and the data reader

        values["view_selection"] = _fill(sec["view_selection"], {"h": h, "fig": fig, "seed": min(vs),
                                                                 "table": view_selection_table(vs)})
    shots = ctx.get("samples")
    if shots and shots["run"] in t and shots["seed"] in t.seeds(shots["run"]):
        values["samples_section"] = _fill(sec["samples"], {"h": h, "seed": shots["seed"], "images": "\n".join(
            f"![{fig}samples_{s}](figures/{fig}samples_{s}.png)" for s in SAMPLE_SHOTS)})
    return _fill(sec["page"], values) + "\n"


def _switched_off(run: dict[str, Any]) -> str:
    return " ".join([*run["overrides"], *([] if run["multihands"] else ["no data.multihands"])]) or "no override"


class _FigureData:
    """What :mod:`handflow.evaluation.report_figures` reads: per-seed means and one run's columns."""

    def __init__(self, t: ResultsTable, run: str) -> None:
        self.metric = t.seed_means
        self.per_image = {run: {s: t.columns(run, s) for s in t.seeds(run)}} if run in t else {}


def draw_figures(t: ResultsTable, fig_dir: Path, prefix: str) -> list[Path]:
    """The page's figures into ``fig_dir``: MMD bars of Tables 2 and 3, view selection, spread vs
    error, and the sample figures (these run the reference model on three test images)."""
    from handflow.evaluation import report_figures as figs  # lazy: matplotlib and torch, only when figures are drawn

    ctx, exp = t.context, t.context["experiment"]
    ref_run = ctx.get("reference_run", "flow")
    labels = {n: r["label"] for n, r in exp["runs"].items()}
    data = _FigureData(t, ref_run)
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = [figs.mmd_bars(data, [n for n in exp[k] if n in t], fig_dir / f"{prefix}{name}.png", labels)
             for k, name in (("methods", "mmd"), ("ablations", "ablations"))]
    vs = view_selection(t, ref_run)
    if vs:
        paths += [figs.view_selection_figure(vs, fig_dir / f"{prefix}view_selection.png"),
                  figs.spread_vs_error(data, ref_run, fig_dir / f"{prefix}spread_vs_error.png")]
    shots = ctx.get("samples")
    if shots and shots["run"] in t and shots["seed"] in t.seeds(shots["run"]) and Path(shots["checkpoint"]).exists():
        paths += figs.qualitative(Path(shots["checkpoint"]), Path(shots["data"]), t.columns(shots["run"], shots["seed"]), fig_dir,
                                  ctx["plan"]["samples"], prefix=prefix)
    return paths


def write_page(t: ResultsTable, out_md: str | Path, figures: bool = True) -> Path:
    """Render the page into ``out_md`` (merged with the page already there, :func:`merge_page`)
    and, with ``figures``, draw its figures into ``<out_md folder>/figures``."""

    out_md = Path(out_md)
    kp = t.context["plan"]["protocol"] == "keypoints"
    prefix = "results_kp_" if kp else "results_"  # the two parts keep their own figures
    part = render_page(t, prefix)
    if figures:
        draw_figures(t, out_md.parent / "figures", prefix)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_md, merge_page(out_md.read_text() if out_md.exists() else None, part, kp))
    return out_md


def merge_page(old: str | None, part: str, keypoints: bool) -> str:
    """The results page with ``part`` written in: the keypoint part (``keypoints``) replaces the
    text between :data:`KP_BEGIN` and :data:`KP_END` (appended when absent) and keeps the rest;
    an image part replaces everything but the keypoint part, which it keeps at the end."""
    kp_old, rest = "", old or ""
    if old and KP_BEGIN in old and KP_END in old:
        a, b = old.index(KP_BEGIN), old.index(KP_END) + len(KP_END)
        kp_old, rest = old[a:b], (old[:a] + old[b:]).rstrip() + "\n"
    if keypoints:
        head = rest.rstrip() if rest.strip() else TITLE
        return f"{head}\n\n{KP_BEGIN}\n{part.rstrip()}\n{KP_END}\n"
    return part.rstrip() + "\n" + (f"\n{kp_old}\n" if kp_old else "")
