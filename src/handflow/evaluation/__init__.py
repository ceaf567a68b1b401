"""Evaluation: ``handflow evaluate`` (every metric of one checkpoint), view selection, the chance
reference and the report's figures (the benchmark report itself, ``handflow report``, is
:mod:`handflow.pipeline`).

>>> from handflow.evaluation import evaluate
>>> summary = evaluate("runs/flow/checkpoints/last.ckpt", "data_synth", "eval/flow", multihands="mh")  # doctest: +SKIP

(skipped as a doctest: it needs a trained checkpoint and a dataset; ``handflow.evaluate``'s own
example runs on a tiny synthetic one)
"""

from handflow.evaluation.scoring import ALIGNS, COLUMNS, RunMismatch, evaluate, image_metrics

__all__ = ["evaluate", "image_metrics", "RunMismatch", "ALIGNS", "COLUMNS"]
