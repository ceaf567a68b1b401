"""handflow report (handflow.pipeline): plan and stage commands, the results table gathered from
fake evaluation folders in evaluate's output format, the paired statistics against a loop, and
the page rendered from a small table."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from handflow.errors import SettingsMismatch
from handflow.evaluation.jobs import Job, JobFailed, run_jobs
from handflow.pipeline.plan import ReportPlan, load_plan, plan_command
from handflow.pipeline.results import NONE, REFERENCE, ResultsTable, gather, read_results
from handflow.pipeline.run import run_report
from handflow.pipeline.stages import backbone_stage, features_stage, plan_stages, synth_stages, train_stage, training_done
from handflow.pipeline.stats import findings, paired_difference

M = 40  # images
MEANS = {"flow": 0.4, "cvae": 0.5, "gaussian": 0.6, "mcdropout": 0.7, "deterministic": 0.9,
         "flow_no_multihands": 0.45, "flow_no_detmag": 0.5, "flow_no_theta": 0.42, "flow_no_2d": 0.38}


def _write_eval(folder, mmd: float, spread: float, rng: np.random.Generator, min_g: float = 30.0, max_g: float = 60.0) -> None:
    """An evaluation folder like ``handflow evaluate`` writes, with per-image values around the given means."""
    folder.mkdir(parents=True)
    frames = np.repeat(np.arange(M // 4), 4)
    cols = {
        "image_id": np.arange(M), "capture": np.zeros(M, np.int64), "seq": np.array(["s"] * M),
        "camera": np.array([str(i % 4) for i in range(M)]),
        "frame": frames, "spread_mm": spread + rng.normal(0, 1, M),
        "mpjpe_z0_rr": 20 + rng.normal(0, 1, M), "mpjpe_z0_rrr": 25 + rng.normal(0, 1, M),
        "mpjpe_z0_global": 40 + rng.normal(0, 2, M),
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
    summary = {"metrics": metrics, "num_images": M, "num_images_multihands": M, "device": "cpu"}
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture()
def fake_bench(tmp_path):
    plan = ReportPlan(work=str(tmp_path / "w"), seeds=(0, 1))
    rng = np.random.default_rng(0)
    for n, m in MEANS.items():
        for s in plan.seeds:
            _write_eval(plan.eval_dir(n, s), m, 30.0 if n != "flow_no_detmag" else 15.0, rng)
    with np.load(plan.eval_dir("flow", 1) / "per_image.npz") as z:
        cols = dict(z)
    cols["mpjpe_z0_rr_occ"][:5] = np.nan  # "not defined" on five images: left out of the table
    np.savez(plan.eval_dir("flow", 1) / "per_image.npz", **cols)
    return plan


# ------------------------------------------------------------------------------ statistics
def test_paired_difference_against_a_loop() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, (2, 50)), rng.normal(0, 1, (3, 50))
    a[0, 3] = np.nan  # one seed undefined: the image keeps the other seed
    a[:, 7] = np.nan  # no seed: the image is left out
    b[1, 9] = np.nan
    d, se, n = paired_difference(a, b)
    diffs = []
    for i in range(50):
        va = [x for x in a[:, i] if np.isfinite(x)]
        vb = [x for x in b[:, i] if np.isfinite(x)]
        if va and vb:
            diffs.append(sum(va) / len(va) - sum(vb) / len(vb))
    mean = sum(diffs) / len(diffs)
    sd = (sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1)) ** 0.5
    assert n == 49 == len(diffs)
    assert d == pytest.approx(mean, rel=1e-12) and se == pytest.approx(sd / len(diffs) ** 0.5, rel=1e-12)
    assert np.isnan(paired_difference(a[:, :1], b[:, :1])[0])  # one image: no standard error


def test_findings_follow_the_numbers(fake_bench, tmp_path) -> None:
    t = gather(fake_bench, tmp_path / "page", reference=False)
    f = {c: (h, e) for c, h, e in findings(t, t.context["experiment"])}
    assert f["Deterministic min vs max MPJPE differ clearly (GLOBAL)"][0] is True
    assert f["MMD GLOBAL: flow < cVAE"][0] is True and f["MMD RRR: flow < Deterministic"][0] is True
    assert f["L_DetMag raises the sample spread"][0] is True and f["L_DetMag raises the sample spread ≥ 1.5×"][0] is True
    assert f["w/o MultiHands worsens MMD GLOBAL"][0] is True
    # the w/o L_2D run is better than the full model here: the check must say so
    assert f["w/o L_2D worsens MMD GLOBAL"][0] is False
    # the evidence is the paired difference of the seed-averaged per-image values, 2 s.e.
    d, se, _ = paired_difference(t.per_image("flow_no_2d", "mmd_global"), t.per_image("flow", "mmd_global"))
    assert f"{d:+.4f} ± {2 * se:.4f} (2 s.e.)" in f["w/o L_2D worsens MMD GLOBAL"][1]


# ------------------------------------------------------------------------------ results table
def test_results_table_from_evaluation_folders(fake_bench, tmp_path) -> None:
    out = tmp_path / "page"
    t = gather(fake_bench, out, reference=False)
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["run", "seed", "image_id", "metric", "value"]
    per_image = [r for r in rows[1:] if r[2] != ""]
    n_metrics = 15  # float columns of _write_eval
    assert len(per_image) == len(MEANS) * 2 * M * n_metrics - 5  # the five NaN values are left out
    assert {r[3] for r in rows[1:] if r[2] == ""} == {"steps"}
    assert t.runs == list(MEANS) and t.seeds("flow") == [0, 1] and REFERENCE not in t
    with np.load(fake_bench.eval_dir("cvae", 1) / "per_image.npz") as z:
        assert np.array_equal(t.per_image("cvae", "mmd_rr")[1], z["mmd_rr"])  # exact round trip
        occ = np.load(fake_bench.eval_dir("flow", 1) / "per_image.npz")["mpjpe_z0_rr_occ"]
        assert t.seed_means("flow", "mpjpe_z0_rr_occ")[1] == pytest.approx(np.nanmean(occ), rel=1e-13)
        cols = t.columns("cvae", 1)
        for k in ("image_id", "capture", "frame"):
            assert np.array_equal(cols[k], z[k])
        assert cols["seq"].tolist() == z["seq"].tolist() and cols["camera"].tolist() == z["camera"].tolist()
    assert t.value("flow", 0, "steps") == -1  # no checkpoint
    again = read_results(out)
    assert again.context == t.context and again.context["command"] == plan_command(fake_bench)
    assert not (fake_bench.root / "plan.json").exists()  # the work folder is only read


# ------------------------------------------------------------------------------ page
def _small_table(seeds=(0, 1), reference: bool = True) -> ResultsTable:
    """Two methods, one ablation, two frames of four views: a table written by hand. Within a frame
    the spread and the z = 0 error both grow with the view (so spread ranks the views perfectly)."""
    view = np.arange(8) % 4
    images = {"image_id": np.arange(10, 18), "capture": np.zeros(8, np.int64), "seq": np.array(["q"] * 8),
              "frame": np.arange(8) // 4, "camera": np.array(list("abcd") * 2)}
    ids = images["image_id"]
    base = {"mmd_global": 0.5, "mmd_rrr": 0.6, "mmd_rr": 0.7, "spread_mm": 20.0, "mpjpe_z0_rr": 50.0, "mpjpe_z0_rrr": 60.0,
            "mpjpe_z0_global": 70.0, "min_global": 40.0, "max_global": 80.0, "min_rrr": 30.0, "max_rrr": 35.0}
    per_view = {"spread_mm": 0.25, "mpjpe_z0_rr": 2.0, "mpjpe_z0_rrr": 2.0, "mpjpe_z0_global": 2.0}
    shift = {"flow": 0.0, "deterministic": 0.25, "flow_no_2d": 0.125}
    values = {}
    for run, sh in shift.items():
        for s in seeds:
            v = {m: (ids, x + sh + s * 0.0625 + view * per_view.get(m, 0.0)) for m, x in base.items()}
            v["steps"] = (np.array([NONE]), np.array([100.0 + s]))
            values[(run, s)] = v
    if reference:
        values[(REFERENCE, NONE)] = {"mmd_global": (np.array([NONE]), np.array([1.25])),
                                     "min_global": (np.array([NONE]), np.array([99.5]))}
    exp = {"name": "t", "methods": ["flow", "deterministic"], "ablations": ["flow", "flow_no_2d"], "seeds": list(seeds),
           "single_annotation": "deterministic", "detmag": None,
           "runs": {"flow": {"kind": "flow", "label": "Flow", "overrides": [], "multihands": True},
                    "deterministic": {"kind": "deterministic", "label": "Det", "overrides": [], "multihands": True},
                    "flow_no_2d": {"kind": "flow", "label": "no 2D", "overrides": ["loss.w_2d=0"], "multihands": True}}}
    plan = {**ReportPlan(work="W", seeds=seeds, runs=("flow",)).__dict__, "seeds": list(seeds)}
    ctx = {"plan": plan, "command": "handflow report --work W", "experiment": exp, "synth": "--frames 9",
           "splits": {"test": {"images": 4}}, "mh_test": {}, "mh_incomplete": [], "timings": {"train": 90.0},
           "evaluation": {"device": "cpu", "num_images": 4, "num_images_multihands": 4}, "reference_run": "flow",
           "train_command": "handflow train X", "eval_command": "handflow evaluate Y"}
    return ResultsTable(values, images, ctx)


def test_page_from_a_small_table() -> None:
    from handflow.pipeline.render import REF_LABEL, render_page

    text = render_page(_small_table())
    lines = text.splitlines()
    assert lines[0] == "# Results: the paper's tables on the synthetic benchmark" and "\n\n\n" not in text
    # Table 2: mean ± std over the seeds of the per-seed means (0.5 + 0.0625 s; MPJPE 50 + mean view offset 3)
    assert "| Flow | 0.531 ± 0.044 | 0.631 ± 0.044 | 0.731 ± 0.044 | 20.4 ± 0.0 | 53.0 ± 0.0 | – | – |" in lines
    assert f"| {REF_LABEL} | 1.250 | – | – | – | – | – | – |" in lines  # the reference: one value, no seeds
    assert f"| {REF_LABEL} | 99.5 | – | – | – | – | – |" in lines
    assert "| no 2D | 0.656 ± 0.044 | 0.756 ± 0.044 | 0.856 ± 0.044 | 20.5 ± 0.0 | 53.2 ± 0.0 |" in lines
    assert "Same data, budget and seeds; each row switches one ingredient off (`no 2D: loss.w_2d=0`)." in lines
    assert "| Det | 1 | 101 | 0.812 | 0.912 | 1.012 | 20.688 | 53.312 | 40.312 | 80.312 |" in lines  # per-seed, steps
    assert "Wall time of the stages on this machine (sum over the invocations): train 1.5 min; total 1.5 min." in lines
    assert "## Samples (HandFlowNet, seed 0)" not in lines  # no checkpoint in the context
    # view selection: spread ranks the views perfectly; regrets 0 (best), 3 (mean view), 6 (worst)
    assert "| GLOBAL | 0.0 ± 0.0 | 3.0 ± 0.0 | 6.0 ± 0.0 | 100% | 1.00 |" in lines
    assert "2 test frames with 4.0 views each; seeds 0, 1." in lines
    # findings: paired per-image differences with 2 s.e.; the boundary (a 5.0 mm gap) does not hold
    assert ("| MMD GLOBAL: flow < Det | yes | flow 0.531 ± 0.044 vs 0.781 ± 0.044; per-image difference -0.2500 ± 0.0000 "
            "(2 s.e.) |") in lines
    assert ("| Det min vs max MPJPE differ clearly (RRR) | **no** | max − min = 5.0 ± 0.0 mm (min 30.3 ± 0.0, "
            "max 35.3 ± 0.0) |") in lines
    assert ("| no 2D worsens MMD RRR | yes | 0.756 ± 0.044 vs full 0.631 ± 0.044; per-image increase +0.1250 ± 0.0000 "
            "(2 s.e.) |") in lines
    assert ("| View selection RRR: best-ranked regret ≤ 0.5 × worst-ranked | yes | 0.0 vs 6.0 mm; per-frame best − 0.5 × worst "
            "-3.00 ± 0.00 (2 s.e.) |") in lines
    no_ref = render_page(_small_table(seeds=(3,), reference=False))
    assert REF_LABEL not in no_ref and "chance level" not in no_ref and "\n\n\n" not in no_ref
    assert "| Flow | 0.688 | 0.787 | 0.887 | 20.6 | 53.2 | – | – |" in no_ref  # one seed: no ±


def test_keypoint_part_and_figures(fake_bench, tmp_path) -> None:
    from handflow.pipeline.render import KP_BEGIN, KP_END, write_page

    t = gather(fake_bench, tmp_path / "page", reference=False)
    t.context["plan"]["protocol"] = "keypoints"
    md = tmp_path / "page" / "results.md"
    md.write_text("# R\nimage part\n")
    text = write_page(t, md).read_text()
    assert text.startswith("# R\nimage part\n\n" + KP_BEGIN + "\n## Keypoint-evidence protocol") and text.endswith(KP_END + "\n")
    assert "\n### Table 2: MMD" in text and "\n## Table 2" not in text and "σ = 2 px" in text
    for fig in ("mmd", "ablations", "spread_vs_error", "view_selection"):
        assert (md.parent / "figures" / f"results_kp_{fig}.png").stat().st_size > 1000


def test_render_cli_writes_into_the_work_folder_not_docs(fake_bench, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from handflow.cli import app

    monkeypatch.chdir(tmp_path)
    fake_bench.root.mkdir(parents=True, exist_ok=True)
    (fake_bench.root / "plan.json").write_text(json.dumps({**fake_bench.__dict__, "steps": 7}))
    monkeypatch.setattr("handflow.pipeline.results._reference_rows",
                        lambda plan, runs: [(REFERENCE, NONE, NONE, "mmd_global", 2.0)])
    monkeypatch.setattr("handflow.pipeline.render.draw_figures", lambda *a, **k: [])
    r = CliRunner().invoke(app, ["report", "--work", str(fake_bench.root), "--render"])
    assert r.exit_code == 0, r.output
    page = fake_bench.root / "report" / "results.md"
    text = page.read_text()
    assert "--steps 7" in text and "| *mean training pose (no image)* | 2.000 |" in text  # the saved plan's command
    assert (page.parent / "results.csv").is_file() and not (tmp_path / "docs").exists()


# ------------------------------------------------------------------------------ plan and stages
def test_plan_only_prints_every_command_with_shards(tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli import app

    work = tmp_path / "w"
    args = ["report", "--work", str(work), "--plan-only", "--seeds", "0,1", "--mh-shards", "2", "--data-shards", "3",
            "--steps", "5"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cmds = [line for line in r.output.splitlines() if line and not line.startswith("#")]
    assert [c.split()[1] for c in cmds] == ["synth"] * 3 + ["multihands"] * 4 + ["train"] * 18 + ["evaluate"] * 18
    assert all(c.startswith("handflow ") for c in cmds) and not work.exists()  # printed, nothing run or written
    assert sum(f"--shard {i}/3" in c for c in cmds for i in range(3)) == 3
    mh = [c for c in cmds if c.split()[1] == "multihands"]
    assert [("--split test" in c, f"--shard {i % 2}/2" in c) for i, c in enumerate(mh)] == \
        [(True, True)] * 2 + [(False, True)] * 2
    assert "train.max_steps=5" in cmds[7] and "loss.w_det=0" in "".join(cmds)
    assert r.output.count("# stage ") == 4 and r.output.count("#   fingerprint ") == len(cmds)
    r1 = CliRunner().invoke(app, [*args, "--shard", "1/2", "--stages", "train,evaluate"])
    shard = [line for line in r1.output.splitlines() if line and not line.startswith("#")]
    assert shard == cmds[8:25:2] + cmds[26::2]  # every other command of each stage
    bad = CliRunner().invoke(app, [*args, "--shard", "2/2"])
    assert bad.exit_code != 0 and "shard" in bad.output


def test_plan_command_round_trip_and_mismatch(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), steps=50, seeds=(3,), runs=("flow", "cvae"), device="cuda", parallel=4)
    cmd = plan_command(plan)
    assert cmd.startswith("handflow report --work") and "--steps 50" in cmd and "--seeds 3" in cmd and "--runs flow,cvae" in cmd
    assert "--frames" not in cmd and "--experiment" not in cmd  # defaults are left out
    (tmp_path / "plan.json").write_text(json.dumps(plan.__dict__))
    assert load_plan(tmp_path) == plan
    old = {k: v for k, v in plan.__dict__.items() if k not in ("experiment", "data_shards")}  # written by an older handflow
    (tmp_path / "plan.json").write_text(json.dumps(old))
    assert load_plan(tmp_path) == plan
    with pytest.raises(SettingsMismatch, match="steps=50"):
        run_report(ReportPlan(work=str(tmp_path), steps=60), ("train",), progress=False)
    with pytest.raises(ValueError, match="unknown run"):
        run_report(ReportPlan(work=str(tmp_path / "x"), runs=("flow", "nope")), ("train",), progress=False)
    assert all("--shard" not in st.argv and "--test-frames" not in st.argv for st in synth_stages(plan))


def test_test_frames_reach_synth_and_the_command(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), frames=1000, test_frames=250)
    (argv,) = [st.argv for st in synth_stages(plan)]
    assert argv[argv.index("--test-frames") + 1] == "250" and argv[argv.index("--frames") + 1] == "1000"
    assert "--frames 1000 --test-frames 250" in plan_command(plan)
    (tmp_path / "plan.json").write_text(json.dumps(plan.__dict__))
    with pytest.raises(ValueError, match="test_frames"):  # a benchmark folder keeps its test split
        run_report(ReportPlan(work=str(tmp_path), frames=1000, test_frames=300), ("train",), progress=False)


def test_train_stage_carries_the_run_settings(tmp_path) -> None:
    plan = ReportPlan(work=str(tmp_path), steps=10, workers=2, device="cpu")
    st = train_stage(plan, "flow_no_detmag", 1)
    assert st.argv[1:4] == ["-m", "handflow", "train"] and "loss.w_det=0" in st.argv and "train.seed=1" in st.argv
    assert f"data.multihands={plan.mh}" in st.argv and "train.max_steps=10" in st.argv
    assert st.outputs == (plan.run_dir("flow_no_detmag", 1) / "checkpoints" / "last.ckpt",) and not st.done()
    assert not any(a.startswith("data.multihands") for a in train_stage(plan, "flow_no_multihands", 0).argv)
    same, other = train_stage(plan, "flow_no_detmag", 1), train_stage(plan, "flow_no_detmag", 0)
    assert st.fingerprint == same.fingerprint != other.fingerprint


def test_a_new_ablation_is_a_yaml_entry(tmp_path) -> None:
    """An experiment file with one more run: it is planned, trained with its override and labelled."""
    from handflow.errors import InputError
    from handflow.pipeline.experiments import load_experiment

    text = (tmp_path / "x.yaml")
    text.write_text("runs:\n  flow: {kind: flow, label: F}\n"
                    "  flow_small_det: {kind: flow, label: det 0.1, overrides: [loss.w_det=0.1]}\n"
                    "methods: [flow]\nablations: [flow, flow_small_det]\nseeds: [4]\n")
    plan = ReportPlan(work=str(tmp_path / "w"), experiment=str(text), seeds=(4,))
    assert plan.runs == ("flow", "flow_small_det")
    assert "loss.w_det=0.1" in train_stage(plan, "flow_small_det", 4).argv
    assert f"--experiment {text}" in plan_command(plan)
    assert load_experiment("paper").runs["flow_no_theta"].overrides == ("loss.w_theta=0",)
    text.write_text("runs:\n  flow: {kind: flow, lable: F}\n")
    with pytest.raises(InputError, match="lable"):
        load_experiment(text)
    with pytest.raises(InputError, match="unknown experiment 'nope'.*paper"):
        load_experiment("nope")


def test_experiment_files_are_checked_by_the_settings_schema(tmp_path) -> None:
    """Keys and types of an experiment file through handflow.config: one-line InputErrors that
    name the close keys; the packaged table reads as before."""
    from handflow.errors import InputError
    from handflow.pipeline.experiments import RunSpec, experiment_from_dict, load_experiment

    run = {"kind": "flow"}
    cases = [
        ({"runs": {"flow": run}, "method": ["flow"]}, r"^experiment x: unknown key 'method' \(did you mean 'methods'\?\)"),
        ({"runs": {"flow": {"kind": "flow", "overides": ["a=1"]}}},
         r"^experiment x: run 'flow': unknown key 'overides' \(did you mean 'overrides'\?\); known in a run: \['kind'"),
        ({"runs": {"flow": run}, "seeds": ["one"]}, r"^experiment x: seeds=\['one'\] is not a valid list\[int\]"),
        ({"runs": {"flow": {"label": "F"}}}, r"^experiment x: run 'flow' needs at least 'kind'$"),
        ({"runs": {}}, r"^experiment x: needs a 'runs' mapping"),
        ([1], r"^experiment x: needs a 'runs' mapping"),
        ({"runs": {"flow": run}, "detmag": "nope"}, r"^experiment x: detmag names 'nope', which is not one of its runs"),
    ]
    for d, message in cases:
        with pytest.raises(InputError, match=message) as e:
            experiment_from_dict("x", d)
        assert "\n" not in str(e.value)
    exp = experiment_from_dict("x", {"runs": {"flow": run, "f2": {"kind": "flow", "label": "F2", "overrides": ["loss.w_det=0"],
                                                                  "multihands": False}}, "methods": ["flow"]})
    assert exp.runs["flow"] == RunSpec("flow", "flow") and exp.runs["f2"] == RunSpec("flow", "F2", ("loss.w_det=0",), False)
    assert exp.methods == ("flow",) and exp.ablations == () and exp.seeds == (0, 1) and exp.detmag is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: {flow: [\n")
    with pytest.raises(InputError, match=r"^experiment .*bad.yaml: cannot parse"):
        load_experiment(bad)
    paper = load_experiment("paper")
    assert list(paper.runs) == ["flow", "cvae", "gaussian", "mcdropout", "deterministic", "flow_no_multihands",
                                "flow_no_detmag", "flow_no_theta", "flow_no_2d"]
    assert paper.runs["flow_no_multihands"] == RunSpec("flow", "w/o MultiHands", (), False)
    assert paper.single_annotation == "deterministic" and paper.seeds == (0, 1) and len(paper.ablations) == 5


def test_jobs_run_in_parallel_and_failures_name_the_log(tmp_path) -> None:
    ok = [Job(f"ok{i}", [sys.executable, "-c", f"print({i})"], tmp_path / f"ok{i}.log") for i in range(3)]
    run_jobs(ok, parallel=2, progress=False)
    assert [(tmp_path / f"ok{i}.log").read_text().splitlines()[-1] for i in range(3)] == ["0", "1", "2"]
    bad = Job("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "bad.log")
    with pytest.raises(JobFailed, match=r"bad \(exit 3\)[\s\S]*boom"):
        run_jobs([bad, *ok], parallel=2, progress=False)


def test_shared_protocol_stages(tmp_path) -> None:
    """--protocol shared: one backbone command, one features command, and heads on the cached features."""
    plan = ReportPlan(work=str(tmp_path), steps=30, protocol="shared", backbone_steps=70, backbone_kind="deterministic")
    bb = backbone_stage(plan).argv
    assert "--model" in bb and bb[bb.index("--model") + 1] == "deterministic" and "train.max_steps=70" in bb
    assert str(plan.backbone_ckpt.parents[1]) in bb
    fe = features_stage(plan).argv
    assert fe[3] == "features" and str(plan.backbone_ckpt) in fe and str(plan.features) in fe
    head = train_stage(plan, "flow_no_2d", 0).argv
    for a in (f"model.backbone_checkpoint={plan.backbone_ckpt}", "model.freeze_backbone=true", f"data.features={plan.features}",
              "train.max_steps=30", "data.num_workers=0", "loss.w_2d=0"):
        assert a in head, a
    assert [st.stage for st in plan_stages(plan)][:4] == ["data", "multihands", "multihands", "backbone"]
    e2e = train_stage(ReportPlan(work=str(tmp_path), steps=30), "flow", 0).argv
    assert not any(a.startswith(("model.backbone_checkpoint", "data.features")) for a in e2e)
    assert "backbone" not in {st.stage for st in plan_stages(ReportPlan(work=str(tmp_path)))}
    cmd = plan_command(plan)
    assert "--protocol shared" in cmd and "--backbone-steps 70" in cmd and "--backbone-kind" not in cmd  # the default
    with pytest.raises(ValueError, match="unknown protocol"):
        run_report(ReportPlan(work=str(tmp_path / "y"), protocol="nope"), ("train",), progress=False)
    with pytest.raises(ValueError, match="unknown backbone kind"):
        run_report(ReportPlan(work=str(tmp_path / "z"), protocol="shared", backbone_kind="resnet"), ("train",), progress=False)


def test_shared_protocol_with_a_given_backbone_and_feature_copies(tmp_path) -> None:
    """--backbone-from NAME: no backbone training; the shipped file reaches the features command
    and every head (plan.json keeps the name); --feature-copies reaches both; both need
    --protocol shared, and a name that is no model, or a model the runs cannot take, is refused
    before anything runs."""
    from typer.testing import CliRunner

    from handflow.cli import app
    from handflow.errors import InputError
    from handflow.models.shipped import shipped_path
    from handflow.pipeline.plan import check_plan, save_plan
    from handflow.pipeline.render import render_page

    shipped = shipped_path("synthetic")
    plan = ReportPlan(work=str(tmp_path / "w"), steps=30, protocol="shared", backbone_from="synthetic", feature_copies=4)
    check_plan(plan)
    assert plan.backbone_ckpt == shipped
    stages = plan_stages(plan)
    assert "backbone" not in {st.stage for st in stages}
    (fe,) = [st for st in stages if st.stage == "features"]
    assert fe.argv[fe.argv.index("--checkpoint") + 1] == str(shipped) and fe.argv[fe.argv.index("--copies") + 1] == "4"
    heads = [st.argv for st in stages if st.stage == "train"]
    assert heads and all(f"model.backbone_checkpoint={shipped}" in h and "data.feature_copies=4" in h
                         and "model.freeze_backbone=true" in h for h in heads)
    cmd = plan_command(plan)
    assert "--backbone-from synthetic" in cmd and "--feature-copies 4" in cmd
    save_plan(plan)
    assert json.loads((plan.root / "plan.json").read_text())["backbone_from"] == "synthetic"
    assert load_plan(plan.root) == plan
    one = ReportPlan(work=str(tmp_path / "w1"), protocol="shared", backbone_from="synthetic")  # K = 1: the commands of before
    assert "--copies" not in features_stage(one).argv and not any("feature_copies" in a for a in train_stage(one, "flow", 0).argv)
    # the page says which model's backbone it is, and how many copies
    table = _small_table()
    table.context["plan"].update(protocol="shared", backbone_from="synthetic", feature_copies=4)
    table.context["backbone"] = {"from": "synthetic", "kind": "flow", "step": 4000, "shipped": True, "commands": [fe.command]}
    text = render_page(table)
    assert "The backbone is that of the shipped model `synthetic` (a `flow` model, 4000 training steps" in text
    assert "for every image, 4 augmented copies of every training image" in text and fe.command in text
    # refused in one line, before anything is written
    for bad, match in ((dict(backbone_from="synthetic"), "--protocol shared"), (dict(feature_copies=2), "--protocol shared"),
                       (dict(protocol="shared", backbone_from="nosuchmodel"), "no such file and no shipped model"),
                       (dict(protocol="shared", backbone_from="synthetic", image_size=64), "--image-size")):
        work = tmp_path / "bad"
        with pytest.raises(InputError, match=match) as e:
            run_report(ReportPlan(work=str(work), **bad), ("data",), progress=False)
        assert "\n" not in str(e.value) and not work.exists()
    r = CliRunner().invoke(app, ["report", "--work", str(tmp_path / "cli"), "--plan-only", "--protocol", "shared",
                                 "--backbone-from", "synthetic", "--feature-copies", "4", "--steps", "5"])
    assert r.exit_code == 0, r.output
    assert "# stage features" in r.output and "# stage backbone" not in r.output
    assert f"--checkpoint {shipped} " in r.output and "--copies 4" in r.output and "data.feature_copies=4" in r.output


def test_a_run_stopped_by_its_time_cap_is_done(tmp_path) -> None:
    import torch

    from handflow.pipeline.stages import finished_step

    ckpt = tmp_path / "last.ckpt"
    assert not training_done(ckpt, 10, None) and finished_step(ckpt) == -1
    big = torch.zeros(1000)  # stands for the weights and the optimizer state: read onto the meta device, not into memory
    timer = {"Timer": {"time_elapsed": {"train": 125.0}}}
    torch.save({"global_step": 7, "callbacks": timer, "optimizer_states": [{"m": big}]}, ckpt)
    assert finished_step(ckpt) == 7
    assert not training_done(ckpt, 10, None) and not training_done(ckpt, 10, 3.0)
    assert training_done(ckpt, 10, 2.0)  # 125 s used of a 2-minute cap: resuming would step past it
    assert training_done(ckpt, 7, None)


def test_run_report_runs_pending_commands_and_skips_finished_ones(tmp_path, monkeypatch) -> None:
    """Each stage runs the commands whose outputs are missing (its share of them with a shard),
    in stage order, and records its wall time only when it ran something."""
    from functools import partial

    from handflow.pipeline import run as run_mod
    from handflow.pipeline.stages import Stage

    plan = ReportPlan(work=str(tmp_path / "w"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "t0").write_text("")  # train 0 is finished

    def fake(stage: str, i: int) -> Stage:
        target = out / f"{stage[0]}{i}"
        argv = [sys.executable, "-c", f"open({str(target)!r}, 'w').write('x')"]
        return Stage(stage, f"{stage} {i}", argv, (), (target,), tmp_path / "logs" / f"{stage}{i}.log", partial(target.exists))

    monkeypatch.setattr(run_mod, "plan_stages", lambda p: [fake(s, i) for s in ("train", "evaluate") for i in range(4)])
    run_report(plan, ("train",), progress=False, shard=(1, 2))
    assert sorted(p.name for p in out.iterdir()) == ["t0", "t1", "t3"]
    run_report(plan, ("train", "evaluate"), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["e0", "e1", "e2", "e3", "t0", "t1", "t2", "t3"]
    assert (out / "t0").read_text() == ""  # finished: not run again
    assert set(json.loads((plan.root / "timings.json").read_text())) == {"train", "evaluate"}
    assert load_plan(plan.root) == plan


def test_a_failed_stage_still_records_its_wall_time(tmp_path, monkeypatch) -> None:
    """Time spent by an invocation that fails counts: the page's wall time is the sum over every
    invocation, not over the successful ones (a keypoint run stopped by a full disk lost ~45 min)."""
    from functools import partial

    from handflow.evaluation.jobs import JobFailed
    from handflow.pipeline import run as run_mod
    from handflow.pipeline.stages import Stage

    plan = ReportPlan(work=str(tmp_path / "w"))
    target = tmp_path / "never"
    job = Stage("train", "train 0", [sys.executable, "-c", "raise SystemExit(3)"], (), (target,), tmp_path / "train0.log",
                partial(target.exists))
    monkeypatch.setattr(run_mod, "plan_stages", lambda p: [job])
    with pytest.raises(JobFailed):
        run_report(plan, ("train",), progress=False)
    assert json.loads((plan.root / "timings.json").read_text())["train"] >= 0.0


def test_a_stopped_multihands_split_is_not_done(tmp_path) -> None:
    """A stopped generation leaves a summary saying ``complete: false``: the stage resumes it."""
    from handflow.pipeline.stages import multihands_stages

    plan = ReportPlan(work=str(tmp_path), mh_shards=2)
    (plan.mh / "test").mkdir(parents=True)
    test = [st for st in multihands_stages(plan) if "--split" in st.argv and st.argv[st.argv.index("--split") + 1] == "test"]
    assert len(test) == 2 and not any(st.done() for st in test)
    (plan.mh / "test" / "summary.json").write_text(json.dumps({"complete": False, "num_images": 3}))
    assert not any(st.done() for st in test)
    (plan.mh / "test" / "summary.json").write_text(json.dumps({"complete": True, "num_images": 5}))
    assert all(st.done() for st in test)


def test_experiment_yaml_reads_as_its_plain_data() -> None:
    """The packaged file through the settings system (omegaconf is a core dependency, issue #19)
    gives the table of its plain YAML data, in the file's order."""
    from importlib import resources

    import yaml

    from handflow.pipeline import experiments

    experiments._parse.cache_clear()
    exp = experiments.load_experiment("paper")
    text = resources.files("handflow.configs").joinpath("experiments", "paper.yaml").read_text()
    assert exp == experiments.experiment_from_dict("paper", yaml.safe_load(text))
    assert list(exp.runs)[:2] == ["flow", "cvae"] and exp.detmag == "flow_no_detmag"


def test_render_writes_nothing_into_the_work_folder(fake_bench, tmp_path, monkeypatch) -> None:
    import os

    monkeypatch.setattr("handflow.pipeline.render.draw_figures", lambda *a, **k: [])
    before = sorted((p, p.stat().st_mtime_ns) for p in fake_bench.root.rglob("*"))
    md = run_report(fake_bench, ("write",), tmp_path / "page", progress=False)
    assert md == tmp_path / "page" / "results.md" and md.read_text().startswith("# Results")
    assert sorted((p, p.stat().st_mtime_ns) for p in fake_bench.root.rglob("*")) == before
    assert not os.path.exists(fake_bench.root / "plan.json")


def test_plan_command_options_are_report_options() -> None:
    """plan_command writes only options `handflow report` takes, and every plan setting is one of
    them or documented as fixed (so the printed command reproduces the plan)."""
    from dataclasses import fields

    import typer.main

    from handflow.cli import app
    from handflow.pipeline.plan import OPTIONS

    cmd = typer.main.get_command(app).commands["report"]
    names = {o for p in cmd.params for o in p.opts}
    assert {opt for opt, _ in OPTIONS} | {"--work", "--seeds", "--runs"} <= names
    fixed = {"mh_test_num", "mh_train_rounds", "mh_train_proposals", "data_seed", "extra_overrides"}  # not options (yet)
    assert {f.name for f in fields(ReportPlan)} == {k for _, k in OPTIONS} | {"work", "seeds", "runs"} | fixed


def test_a_partial_run_says_which_seeds_its_tables_hold(fake_bench, tmp_path) -> None:
    """A plan whose evaluations are not all done (a run in progress) names the seeds the tables
    average over and how many evaluations are missing; a complete one just lists its seeds."""
    import shutil

    from handflow.pipeline.render import render_page

    full = render_page(gather(fake_bench, tmp_path / "a", reference=False))
    assert "seeds 0, 1; the tables show" in full
    for n in MEANS:
        shutil.rmtree(fake_bench.eval_dir(n, 1))
    partial = render_page(gather(fake_bench, tmp_path / "b", reference=False))
    assert f"seeds 0 (the plan has seeds 0, 1: {len(MEANS)} of {2 * len(MEANS)} evaluations done;" in partial


def test_stage_time_is_recorded_as_each_job_ends(tmp_path, monkeypatch) -> None:
    """A job sees the time of the jobs that ended before it in ``timings.json``: an invocation
    killed outright (no ``finally``: SIGKILL, a closed session) keeps the time of its finished
    jobs (a benchmark killed after 16 of 18 heads reported its training stage as 0.9 min)."""
    from functools import partial

    from handflow.pipeline import run as run_mod
    from handflow.pipeline.stages import Stage

    plan = ReportPlan(work=str(tmp_path / "w"))
    timings = plan.root / "timings.json"
    seen = tmp_path / "seen"
    first = Stage("train", "train 0", [sys.executable, "-c", "import time; time.sleep(0.3)"], (), (), tmp_path / "t0.log",
                  lambda: False)
    copy = f"import pathlib, shutil; p = pathlib.Path({str(timings)!r}); p.exists() and shutil.copy(p, {str(seen)!r})"
    second = Stage("train", "train 1", [sys.executable, "-c", copy], (), (seen,), tmp_path / "t1.log", partial(seen.exists))
    monkeypatch.setattr(run_mod, "plan_stages", lambda p: [first, second])
    run_report(plan, ("train",), progress=False)
    assert json.loads(seen.read_text())["train"] >= 0.3  # written when train 0 ended, before train 1 started
    assert json.loads(timings.read_text())["train"] >= json.loads(seen.read_text())["train"]
