"""The benchmark behind ``handflow report`` as plan → stages → results → render.

* :mod:`~handflow.pipeline.plan`: the settings (:class:`ReportPlan`, ``WORK/plan.json``) and the
  ``handflow report`` command that reproduces them; the runs come from an experiment table,
  YAML package data (:mod:`~handflow.pipeline.experiments`, ``configs/experiments/paper.yaml``);
* :mod:`~handflow.pipeline.stages`: the plan as commands (synth, multihands, backbone, features,
  train, evaluate), each with inputs, outputs, fingerprint and a done check, resumable and
  split by ``--shard i/n`` where the command supports it (``handflow report --plan-only``);
* :mod:`~handflow.pipeline.run`: runs the pending commands here, several side by side;
* :mod:`~handflow.pipeline.results`: every evaluation as one long table
  ``run, seed, image_id, metric, value`` (CSV) beside the page;
* :mod:`~handflow.pipeline.stats` and :mod:`~handflow.pipeline.render`: the tables, the findings
  (paired per-image differences, 2 s.e.) and the figures as group-bys of that table, through the
  template ``page.md`` (``handflow report --render``).
"""

from handflow.pipeline.plan import ReportPlan, load_plan, plan_command
from handflow.pipeline.run import render_report, run_report

__all__ = ["ReportPlan", "load_plan", "plan_command", "run_report", "render_report"]
