"""View selection against a slow loop implementation and known answers; the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from handflow.evaluation.viewselect import view_selection


def _table(spread, err, frames) -> dict[str, np.ndarray]:
    n = len(spread)
    return {"capture": np.zeros(n, np.int64), "seq": np.array(["a"] * n), "frame": np.asarray(frames),
            "camera": np.array([str(i) for i in range(n)]), "spread_mm": np.asarray(spread, float),
            "mpjpe_z0_rr": np.asarray(err, float), "mpjpe_z0_global": np.asarray(err, float) * 2}


def _loop(per, a="rr"):
    """Obviously-correct: dictionaries of frames, then one frame at a time."""
    frames: dict = {}
    for i in range(len(per["frame"])):
        s, e = per["spread_mm"][i], per[f"mpjpe_z0_{a}"][i]
        if np.isfinite(s) and np.isfinite(e):
            frames.setdefault((per["capture"][i], per["seq"][i], per["frame"][i]), []).append((s, e))
    best, worst, avg = [], [], []
    for views in frames.values():
        if len(views) < 2:
            continue
        lo = min(e for _, e in views)
        best.append(min(views)[1] - lo)
        worst.append(max(views)[1] - lo)
        avg.append(sum(e for _, e in views) / len(views) - lo)
    return np.mean(best), np.mean(worst), np.mean(avg), len(best)


def test_matches_the_loop_on_random_tables() -> None:
    rng = np.random.default_rng(0)
    n = 300
    per = _table(rng.random(n) * 30, rng.random(n) * 80, rng.integers(0, 60, n))
    per["mpjpe_z0_rr"][::17] = np.nan  # dropped views
    r = view_selection(per, "rr")["alignments"]["rr"]["summary"]
    b, w, a, f = _loop(per)
    assert r["best_ranked"]["mean"] == pytest.approx(b) and r["worst_ranked"]["mean"] == pytest.approx(w)
    assert r["average"]["mean"] == pytest.approx(a) and r["best_ranked"]["count"] == f
    assert abs(r["random"]["mean"] - a) < 3.0  # Monte-Carlo estimate of the same expectation


def test_known_answers() -> None:
    # spread monotone in error within each frame: the lowest-spread view is the best one
    frames = np.repeat(np.arange(20), 5)
    err = np.tile([10.0, 20.0, 30.0, 40.0, 50.0], 20)
    res = view_selection(_table(err / 10, err, frames), "rr")
    r = res["alignments"]["rr"]
    assert r["summary"]["best_ranked"]["mean"] == 0 and r["summary"]["worst_ranked"]["mean"] == 40
    assert r["summary"]["average"]["mean"] == 20 and r["spearman"] == pytest.approx(1) and r["best_beats_worst"] == 1
    assert res["frames"] == 20 and res["views_per_frame"] == 5
    # anti-correlated spread: ranking picks the worst view
    r = view_selection(_table(-err, err, frames), "rr")["alignments"]["rr"]
    assert r["summary"]["best_ranked"]["mean"] == 40 and r["spearman"] == pytest.approx(-1)
    # single-view frames are dropped; all alignments present are reported
    res = view_selection(_table([1.0, 2.0, 3.0], [5.0, 6.0, 7.0], [0, 0, 1]), "all")
    assert res["frames"] == 1 and set(res["alignments"]) == {"rr", "global"}


def test_missing_columns_are_named() -> None:
    per = _table([1.0], [2.0], [0])
    del per["spread_mm"]
    with pytest.raises(KeyError, match="spread_mm"):
        view_selection(per)
    with pytest.raises(KeyError, match="mpjpe_z0_rrr"):
        view_selection(_table([1.0], [2.0], [0]), "rrr")


def test_cli_on_an_evaluation_table(tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli import app

    rng = np.random.default_rng(1)
    frames = np.repeat(np.arange(10), 4)
    err = rng.random(40) * 50
    (tmp_path / "ev").mkdir()
    np.savez(tmp_path / "ev" / "per_image.npz", **_table(err + rng.normal(0, 5, 40), err, frames))
    r = CliRunner().invoke(app, ["view-select", "--eval", str(tmp_path / "ev"), "--out", str(tmp_path / "vs")])
    assert r.exit_code == 0, r.output
    assert "| RR |" in r.output and (tmp_path / "vs" / "view_selection.png").stat().st_size > 1000
    r = CliRunner().invoke(app, ["view-select", "--eval", str(tmp_path / "missing")])
    flat = "".join(c for c in r.output if c.isalnum())  # the error box wraps lines anywhere
    assert r.exit_code == 2 and "perimagenpznotfound" in flat
