"""The README's demo, end to end in its quick mode (synthesize, train, predict, figures)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path) -> None:
    from handflow.demo import run_demo

    run_demo(tmp_path, quick=True, seed=0)
    for name in ("hand_model.png", "dataset_sample.png", "training_curves.png", "summary.txt"):
        assert (tmp_path / name).stat().st_size > 0, name
    pngs = list((tmp_path / "predictions").glob("*.png"))
    assert len(pngs) == 2 and list((tmp_path / "predictions").glob("*.html"))
    summary = (tmp_path / "summary.txt").read_text()
    assert "MPJPE (RR, mm)" in summary and "nan" not in summary.lower()
    assert (tmp_path / "run_quick" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "data_quick" / ".synth_settings.json").exists()  # a full demo in the same folder keeps its own data/
