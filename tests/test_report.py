"""handflow report: plan handling, job runner, aggregation and the findings checks, on fake
evaluation folders written in evaluate's output format."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from handflow.evaluation.jobs import Job, JobFailed, run_jobs
from handflow.evaluation.report import (
    RUNS, ReportPlan, collect, findings, load_plan, paired_difference, plan_command, run_report, synth_job, train_job, training_done,
)

M = 40  # images


def _write_eval(folder, mmd: float, spread: float, rng: np.random.Generator, min_g: float = 30.0, max_g: float = 60.0) -> None:
    """An evaluation folder like ``handflow evaluate`` writes, with per-image values around the given means."""
    folder.mkdir(parents=True)
    frames = np.repeat(np.arange(M // 4), 4)
    cols = {
        "image_id": np.arange(M), "capture": np.zeros(M, np.int64), "seq": np.array(["s"] * M), "camera": np.array([str(i % 4) for i in range(M)]),
        "frame": frames, "spread_mm": spread + rng.normal(0, 1, M),
        "mpjpe_z0_rr": 20 + rng.normal(0, 1, M), "mpjpe_z0_rrr": 25 + rng.normal(0, 1, M), "mpjpe_z0_global": 40 + rng.normal(0, 2, M),
        "mpjpe_best_rr": 15 + rng.normal(0, 1, M), "mpjpe_z0_rr_occ": 22 + rng.normal(0, 1, M),
        "min_global": min_g + rng.normal(0, 1, M), "max_global": max_g + rng.normal(0, 1, M),
        "min_rrr": min_g / 2 + rng.normal(0, 1, M), "max_rrr": max_g / 2 + rng.normal(0, 1, M),
        "min_rr": 10 + rng.normal(0, 1, M), "max_rr": 12 + rng.normal(0, 1, M),
    }
    for a in ("global", "rrr", "rr"):
        cols[f"mmd_{a}"] = mmd + rng.normal(0, 0.02, M)
    np.savez(folder / "per_image.npz", **cols)
    metrics = {k: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "sem": 0.0, "count": M}
               for k, v in cols.items() if v.dtype.kind == "f"}
    (folder / "summary.json").write_text(json.dumps({"metrics": metrics, "num_images": M, "num_images_multihands": M, "device": "cpu"}))


@pytest.fixture()
def fake_bench(tmp_path):
    plan = ReportPlan(work=str(tmp_path / "w"), seeds=(0, 1))
    rng = np.random.default_rng(0)
    means = {"flow": 0.4, "cvae": 0.5, "gaussian": 0.6, "mcdropout": 0.7, "deterministic": 0.9,
             "flow_no_multihands": 0.45, "flow_no_detmag": 0.5, "flow_no_theta": 0.42, "flow_no_2d": 0.38}
    for n, m in means.items():
        for s in plan.seeds:
            _write_eval(plan.eval_dir(n, s), m, 30.0 if n != "flow_no_detmag" else 15.0, rng)
    return plan


def test_findings_follow_the_numbers(fake_bench) -> None:
    res = collect(fake_bench)
    assert set(res.summary) == set(RUNS) and res.image_metric("flow", "mmd_rr").shape == (2, M)
    f = {c: h for c, h, _ in findings(res)}
    assert f["Deterministic min vs max MPJPE differ clearly (GLOBAL)"] is True
    assert f["MMD GLOBAL: flow < cVAE"] is True and f["MMD RRR: flow < Deterministic"] is True
    assert f["L_DetMag raises the sample spread"] is True
    assert f["w/o MultiHands worsens MMD GLOBAL"] is True
    # the w/o L_2D run is better than the full model here: the check must say so
    assert f["w/o L_2D worsens MMD GLOBAL"] is False


def test_paired_difference_against_a_loop() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, (2, 50)), rng.normal(0, 1, (2, 50))
    a[0, 3] = np.nan
    d, se, n = paired_difference(a, b)
    diffs = []
    for i in range(50):
        va = [x for x in a[:, i] if np.isfinite(x)]
        diffs.append(sum(va) / len(va) - b[:, i].mean())
    assert n == 50 and d == pytest.approx(np.mean(diffs)) and se == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(50))


def test_write_report_tables_and_figures(fake_bench, tmp_path) -> None:
    fake_bench.root.mkdir(parents=True, exist_ok=True)
    (fake_bench.root / "plan.json").write_text(json.dumps({**fake_bench.__dict__, "steps": 7}))
    md = run_report(ReportPlan(work=fake_bench.work), ("write",), tmp_path / "docs" / "results.md", progress=False)
    text = md.read_text()
    assert "--steps 7" in text  # the command comes from the saved plan
    row = next(line for line in text.splitlines() if line.startswith("| HandFlowNet (flow) | 0.4"))
    assert row.count("±") >= 3  # mean ± std over the two seeds
    assert "| GLOBAL |" in text and "views each" in text  # view selection table
    for fig in ("results_mmd.png", "results_ablations.png", "results_spread_vs_error.png", "results_view_selection.png"):
        assert (tmp_path / "docs" / "figures" / fig).stat().st_size > 1000
    assert "**no**" in text  # the failing finding is reported, not hidden


def test_plan_command_round_trip_and_mismatch(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), steps=50, seeds=(3,), runs=("flow", "cvae"), device="cuda", parallel=4)
    cmd = plan_command(plan)
    assert cmd.startswith("handflow report --work") and "--steps 50" in cmd and "--seeds 3" in cmd and "--runs flow,cvae" in cmd
    assert "--frames" not in cmd  # defaults are left out
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "plan.json").write_text(json.dumps(plan.__dict__))
    assert load_plan(tmp_path) == plan
    with pytest.raises(ValueError, match="other settings"):
        run_report(ReportPlan(work=str(tmp_path), steps=60), ("train",), progress=False)
    with pytest.raises(ValueError, match="unknown run"):
        run_report(ReportPlan(work=str(tmp_path / "x"), runs=("flow", "nope")), ("train",), progress=False)
    assert "--test-frames" not in synth_job(plan).argv


def test_test_frames_reach_synth_and_the_command(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), frames=1000, test_frames=250)
    argv = synth_job(plan).argv
    assert argv[argv.index("--test-frames") + 1] == "250" and argv[argv.index("--frames") + 1] == "1000"
    assert "--frames 1000 --test-frames 250" in plan_command(plan)
    (tmp_path / "plan.json").write_text(json.dumps(plan.__dict__))
    assert load_plan(tmp_path) == plan
    with pytest.raises(ValueError, match="test_frames"):  # a benchmark folder keeps its test split
        run_report(ReportPlan(work=str(tmp_path), frames=1000, test_frames=300), ("train",), progress=False)


def test_train_job_carries_the_run_settings(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), steps=10, workers=2, device="cpu")
    argv = train_job(plan, "flow_no_detmag", 1).argv
    assert argv[1:4] == ["-m", "handflow", "train"] and "loss.w_det=0" in argv and "train.seed=1" in argv
    assert f"data.multihands={plan.mh}" in argv and "train.max_steps=10" in argv
    assert not any(a.startswith("data.multihands") for a in train_job(plan, "flow_no_multihands", 0).argv)


def test_jobs_run_in_parallel_and_failures_name_the_log(tmp_path) -> None:
    ok = [Job(f"ok{i}", [sys.executable, "-c", f"print({i})"], tmp_path / f"ok{i}.log") for i in range(3)]
    run_jobs(ok, parallel=2, progress=False)
    assert [(tmp_path / f"ok{i}.log").read_text().splitlines()[-1] for i in range(3)] == ["0", "1", "2"]
    bad = Job("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "bad.log")
    with pytest.raises(JobFailed, match=r"bad \(exit 3\)[\s\S]*boom"):
        run_jobs([bad, *ok], parallel=2, progress=False)


def test_shared_protocol_jobs(tmp_path) -> None:
    """--protocol shared: one backbone job, one features job, and heads on the cached features."""
    from handflow.evaluation.report import backbone_job, features_job

    plan = ReportPlan(work=str(tmp_path), steps=30, protocol="shared", backbone_steps=70, backbone_kind="deterministic")
    bb = backbone_job(plan).argv
    assert "--model" in bb and bb[bb.index("--model") + 1] == "deterministic" and "train.max_steps=70" in bb
    assert str(plan.backbone_ckpt.parents[1]) in bb
    fe = features_job(plan).argv
    assert fe[3] == "features" and str(plan.backbone_ckpt) in fe and str(plan.features) in fe
    head = train_job(plan, "flow_no_2d", 0).argv
    for a in (f"model.backbone_checkpoint={plan.backbone_ckpt}", "model.freeze_backbone=true", f"data.features={plan.features}",
              "train.max_steps=30", "data.num_workers=0", "loss.w_2d=0"):
        assert a in head, a
    e2e = train_job(ReportPlan(work=str(tmp_path), steps=30), "flow", 0).argv
    assert not any(a.startswith(("model.backbone_checkpoint", "data.features")) for a in e2e)
    cmd = plan_command(plan)
    assert "--protocol shared" in cmd and "--backbone-steps 70" in cmd and "--backbone-kind" not in cmd  # the default
    flow_bb = ReportPlan(work=str(tmp_path), protocol="shared", backbone_kind="flow")
    assert "--backbone-kind flow" in plan_command(flow_bb)
    assert backbone_job(flow_bb).argv[backbone_job(flow_bb).argv.index("--model") + 1] == "flow"
    with pytest.raises(ValueError, match="unknown protocol"):
        run_report(ReportPlan(work=str(tmp_path / "y"), protocol="nope"), ("train",), progress=False)
    with pytest.raises(ValueError, match="unknown backbone kind"):
        run_report(ReportPlan(work=str(tmp_path / "z"), protocol="shared", backbone_kind="resnet"), ("train",), progress=False)


def test_mean_pose_reference_row(fake_bench, tmp_path, monkeypatch) -> None:
    """The no-image reference is a row of Tables 1 and 2 (values as computed, one per column)."""
    import handflow.evaluation.report as rep

    keys = [f"{m}_{a}" for a in ("global", "rrr", "rr") for m in ("min", "max", "mmd")]
    keys += ["spread_mm", "mpjpe_z0_rr", "mpjpe_best_rr", "mpjpe_z0_rr_occ"]
    ref = {k: {"mean": 100.0 + i + 0.25, "count": M} for i, k in enumerate(keys)}
    monkeypatch.setattr(rep, "_mean_pose_reference", lambda plan, res: ref)
    text = run_report(fake_bench, ("write",), tmp_path / "results.md", progress=False).read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| {rep.REF_LABEL} |")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[1:3] == [f"{ref['min_global']['mean']:.1f}", f"{ref['max_global']['mean']:.1f}"]
    assert rows[1].split(" | ")[1] == f"{ref['mmd_global']['mean']:.3f}" and "±" not in rows[1]
    assert rows[1].rstrip(" |").endswith(f"{ref['mpjpe_z0_rr_occ']['mean']:.1f}")


def test_a_run_stopped_by_its_time_cap_is_done(tmp_path) -> None:
    import torch

    ckpt = tmp_path / "last.ckpt"
    assert not training_done(ckpt, 10, None)
    torch.save({"global_step": 7, "callbacks": {"Timer": {"time_elapsed": {"train": 125.0}}}}, ckpt)
    assert not training_done(ckpt, 10, None) and not training_done(ckpt, 10, 3.0)
    assert training_done(ckpt, 10, 2.0)  # 125 s used of a 2-minute cap: resuming would step past it
    assert training_done(ckpt, 7, None)
