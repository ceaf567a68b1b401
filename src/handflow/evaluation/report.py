"""Compatibility names: ``handflow report`` now lives in :mod:`handflow.pipeline` (issue #19).

plan (:mod:`handflow.pipeline.plan`) → stages (:mod:`handflow.pipeline.stages`, run by
:mod:`handflow.pipeline.run`) → one long results table (:mod:`handflow.pipeline.results`) →
the page (:mod:`handflow.pipeline.stats`, :mod:`handflow.pipeline.render`). New code imports
from there; these names keep older imports working.
"""

from __future__ import annotations

from handflow.pipeline.plan import PROTOCOLS, ReportPlan, load_plan, plan_command
from handflow.pipeline.render import KP_BEGIN, KP_END, merge_page
from handflow.pipeline.run import TIMINGS, run_report
from handflow.pipeline.stages import STAGES, training_done
from handflow.pipeline.stages import backbone_stage as backbone_job
from handflow.pipeline.stages import eval_stage as eval_job
from handflow.pipeline.stages import features_stage as features_job
from handflow.pipeline.stages import finished_step as _finished_step
from handflow.pipeline.stages import train_stage as train_job
from handflow.pipeline.stats import paired_difference

__all__ = ["ReportPlan", "PROTOCOLS", "STAGES", "TIMINGS", "KP_BEGIN", "KP_END", "load_plan", "plan_command", "run_report",
           "merge_page", "train_job", "eval_job", "backbone_job", "features_job", "training_done", "_finished_step",
           "paired_difference"]
