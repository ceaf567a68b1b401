"""``handflow report``: run the plan's stages here, then gather the results and render the page.

Each stage runs its pending commands (:attr:`Stage.done` false) as ``python -m handflow ...``
processes, ``parallel`` side by side (:func:`handflow.evaluation.jobs.run_jobs`), and adds its
wall time to ``WORK/timings.json`` (printed on the page) when it ran any, as each job ends and
when a job failed or the invocation was interrupted (Ctrl-C; the time was spent, and the
finished work is kept), so a killed invocation loses only the time since its last finished job. ``shard=(i, n)`` runs only the
``i``-th interleaved share of every stage's commands (a scheduler's array task). ``write``
gathers the table (:mod:`handflow.pipeline.results`) and renders the page
(:mod:`handflow.pipeline.render`) into ``out`` without running anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from handflow.atomic import write_json
from handflow.errors import InputError, MissingFileError
from handflow.evaluation.jobs import run_jobs
from handflow.pipeline.plan import ReportPlan, check_plan, load_plan, save_plan
from handflow.pipeline.render import write_page
from handflow.pipeline.results import gather
from handflow.pipeline.stages import STAGES, plan_stages, shard_of

__all__ = ["run_report", "render_report", "page_path", "TIMINGS", "DEFAULT_OUT"]

TIMINGS = "timings.json"
#: the page's folder inside the work folder when ``--out`` is not given (never docs/: copying a
#: page there is a deliberate step, docs/evaluation.md)
DEFAULT_OUT = "report"


def page_path(plan: ReportPlan, out: str | Path | None) -> Path:
    """``out/results.md``; ``out`` itself when it names a ``.md`` file; ``WORK/report/results.md`` without."""
    out = Path(out) if out is not None else plan.root / DEFAULT_OUT
    return out if out.suffix == ".md" else out / "results.md"


def _parallel(plan: ReportPlan, stage: str) -> int:
    return {"data": 1, "multihands": max(plan.parallel, plan.mh_shards), "backbone": 1, "features": 1}.get(stage, plan.parallel)


def run_report(plan: ReportPlan, stages: tuple[str, ...] = STAGES, out: str | Path | None = None, progress: bool = True,
               shard: tuple[int, int] | None = None) -> Path | None:
    """Run the requested stages in order; returns the page's path when ``write`` ran.

    ``("write",)`` alone reads the settings saved in ``WORK/plan.json`` (those given when there is
    none) and writes nothing into the work folder."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InputError(f"unknown stage(s) {bad}; stages: {list(STAGES)}")
    if set(stages) == {"write"}:  # nothing is written into the work folder
        if (plan.root / "plan.json").exists():
            plan = load_plan(plan.root)  # the settings the numbers were produced with (checked when they ran)
        else:
            check_plan(plan)
    else:
        check_plan(plan)
        save_plan(plan)
    if shard is not None and shard[0] != 0:
        stages = tuple(s for s in stages if s != "write")  # one array task renders
    commands = plan_stages(plan)
    for s in STAGES[:-1]:
        if s not in stages:
            continue
        jobs = [c.job() for c in shard_of([c for c in commands if c.stage == s], shard) if not c.done()]
        if s == "features" and jobs and not plan.backbone_ckpt.exists():
            raise MissingFileError(f"{plan.backbone_ckpt} not found: run the backbone stage first")
        if jobs:  # a stage with nothing to do adds no line "backbone 0.0 min" to the page
            clock = _StageClock(plan, s)
            try:  # recorded as each job ends: a killed invocation (SIGKILL, a closed session) loses only the rest
                run_jobs(jobs, _parallel(plan, s), s if s != "data" else "synth", progress, on_finish=clock.record)
            finally:  # a failed or interrupted invocation spent its time too (its finished work is kept)
                clock.record()
    return render_report(plan, out) if "write" in stages else None


def render_report(plan: ReportPlan, out: str | Path | None = None, figures: bool = True) -> Path:
    """Gather ``plan``'s evaluations into the results table beside the page, then render the page
    from it (``--render``). Reads the work folder only."""

    md = page_path(plan, out)
    table = gather(plan, md.parent)
    return write_page(table, md, figures=figures)


class _StageClock:
    """Adds the wall time of ``stage`` since the last :meth:`record` to ``WORK/timings.json``."""

    def __init__(self, plan: ReportPlan, stage: str) -> None:
        self.plan, self.stage, self.t = plan, stage, time.monotonic()

    def record(self) -> None:
        now = time.monotonic()
        _add_timing(self.plan, self.stage, now - self.t)
        self.t = now


def _add_timing(plan: ReportPlan, stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage`` in ``WORK/timings.json`` (wall time over every invocation)."""

    path = plan.root / TIMINGS
    t = json.loads(path.read_text()) if path.exists() else {}
    t[stage] = round(float(t.get(stage, 0.0)) + seconds, 1)
    write_json(path, t)
