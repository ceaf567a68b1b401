"""``handflow report``: Tables 1-3, ablations and view selection on the synthetic benchmark
(:mod:`handflow.pipeline`: plan -> stages -> results -> render)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def report(
    work: Path = typer.Option(Path("runs/report"), help="Working folder: data, MultiHands, runs, evaluations, logs."),
    out: Path = typer.Option(None, help="Folder of the page (results.md, figures/, the results table results.csv); "
                             "default WORK/report. A path ending in .md names the page itself. Copying the page into "
                             "docs/ is a separate step: --out docs (docs/evaluation.md)."),
    stages: str = typer.Option("data,multihands,backbone,features,train,evaluate,write",
                               help="Comma-separated stages to run, in order."),
    plan_only: bool = typer.Option(False, "--plan-only", help="Print every stage's command (one per line, --shard i/n "
                                   "where the command supports it) for a scheduler, and run nothing."),
    render: bool = typer.Option(False, "--render", help="Only gather the finished evaluations of --work into the results "
                                "table and render the page (same as --stages write): runs nothing, writes only into --out."),
    shard: str = typer.Option(None, help="i/n: run (or, with --plan-only, print) only the i-th of n interleaved shares of "
                              "every stage's commands (a scheduler's array task)."),
    experiment: str = typer.Option("paper", help="The table of runs: handflow/configs/experiments/NAME.yaml or a YAML file."),
    data_shards: int = typer.Option(1, min=1, help="handflow synth shards (--shard i/n commands; the last one merges)."),
    preset: str = typer.Option("cpu", help="Training preset of every run (cpu, paper or a YAML file)."),
    frames: int = typer.Option(2500, min=10, help="Synthetic frames (80/10/10 train/val/test by frame)."),
    test_frames: int = typer.Option(None, min=1, help="Frames of the test split instead of 10 % of --frames (train "
                                    "and val unchanged: a bigger test set for the same training data)."),
    cameras: int = typer.Option(12, min=1, help="Cameras per frame (views for view selection)."),
    image_size: int = typer.Option(128, min=32, help="Crop side; images are rendered at twice this size."),
    seeds: str = typer.Option(None, help="Training seeds of every run (comma-separated); default the experiment's (0,1)."),
    steps: int = typer.Option(12000, min=1,
                              help="Training steps per run (>= 10k: from scratch, 700 steps leave every model at chance)."),
    samples: int = typer.Option(100, min=1, help="Samples per test image."),
    runs: str = typer.Option("all", help="Runs to include (comma-separated names) or 'all'."),
    device: str = typer.Option("cpu", help="cpu or cuda (training, MultiHands and evaluation)."),
    parallel: int = typer.Option(1, min=1, help="Runs trained / evaluated side by side."),
    workers: int = typer.Option(1, min=0, help="Data-loader processes per training run."),
    mh_shards: int = typer.Option(1, min=1, help="MultiHands shards generated side by side."),
    mh_train_num: int = typer.Option(16, min=1, help="MultiHands annotations per training image."),
    train_minutes: float = typer.Option(None, help="Wall-clock cap per training run (minutes)."),
    protocol: str = typer.Option("end2end", help="end2end (every run trains its backbone), shared (one backbone, cached "
                                 "features, heads only: the CPU protocol) or keypoints (every run conditioned on the "
                                 "image's noisy 2D keypoints, no image read; its own part of the page), docs/evaluation.md."),
    backbone_steps: int = typer.Option(4000, min=1, help="--protocol shared: training steps of the one backbone."),
    backbone_minutes: float = typer.Option(None, help="--protocol shared: wall-clock cap of the backbone training (minutes)."),
    backbone_kind: str = typer.Option("deterministic", help="--protocol shared: model kind the one backbone is trained as "
                                      "(deterministic, flow, ...)."),
    backbone_from: str = typer.Option(None, help="--protocol shared: take the backbone of this shipped model (synthetic) "
                                      "or checkpoint/weights file instead of training one; the features and every head use it."),
    feature_copies: int = typer.Option(1, min=1, help="--protocol shared: features cached per training image, copy k under "
                                       "the training augmentation of epoch k, served in turn with its targets, so heads "
                                       "trained for several epochs do not fit one fixed feature per image."),
    keypoint_noise_px: float = typer.Option(2.0, min=0.0, help="--protocol keypoints: σ of the noise on the visible 2D "
                                            "joints, pixels at a 128 px crop (data.keypoint_noise_px)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train HandFlowNet, the four baselines and four ablations for every seed, evaluate them
    and write the paper's tables, checks of its findings and figures (resumable: rerun the same
    command to continue; `--render` only rewrites the page; `--plan-only` prints the commands)."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.multihands.generate import parse_shard
    from handflow.pipeline.experiments import load_experiment
    from handflow.pipeline.plan import ReportPlan, check_plan
    from handflow.pipeline.run import run_report
    from handflow.pipeline.stages import plan_text

    exp = load_experiment(experiment)
    try:
        seed_t = exp.seeds if seeds is None else tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    try:
        shard_t = None if shard is None else parse_shard(shard)
    except ValueError as e:
        raise typer.BadParameter(f"--{e}") from None
    run_t = tuple(exp.runs) if runs == "all" else tuple(r.strip() for r in runs.split(",") if r.strip())
    stage_t = ("write",) if render else tuple(s.strip() for s in stages.split(",") if s.strip())
    plan = ReportPlan(work=str(work), preset=preset, frames=frames, test_frames=test_frames, cameras=cameras,
                      image_size=image_size, seeds=seed_t, steps=steps, samples=samples, runs=run_t, device=device,
                      parallel=parallel, workers=workers,
                      mh_shards=mh_shards, mh_train_num=mh_train_num, train_minutes=train_minutes, protocol=protocol,
                      backbone_steps=backbone_steps, backbone_minutes=backbone_minutes,
                      backbone_kind=backbone_kind, keypoint_noise_px=keypoint_noise_px, experiment=experiment,
                      data_shards=data_shards, backbone_from=backbone_from, feature_copies=feature_copies)
    if plan_only:
        check_plan(plan)
        typer.echo(plan_text(plan, stage_t, shard_t))
        return
    md = run_report(plan, stage_t, out, progress, shard_t)  # errors: one line (cli.app)
    if md is not None:
        typer.echo(f"report: {md}")
