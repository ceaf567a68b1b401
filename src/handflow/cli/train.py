"""``handflow train``."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Option("cpu", help="Preset (cpu, paper) or a YAML file."),
    data: Path = typer.Option(None, help="Dataset root (InterHand2.6M layout, real or synthetic)."),
    out: Path = typer.Option(None, help="Output folder (checkpoints, CSV and TensorBoard logs)."),
    model: str = typer.Option(None, help="Model kind: flow, deterministic, gaussian, mcdropout, cvae."),
    resume: str = typer.Option("auto", help="'auto': resume from OUT/checkpoints/last.ckpt when present; "
                                            "'no': start fresh; or a checkpoint path."),
    devices: str = typer.Option(None, help="Lightning devices (e.g. 1, 4, auto)."),
    num_nodes: int = typer.Option(None, help="Number of nodes (multi-node DDP)."),
    strategy: str = typer.Option(None, help="Lightning strategy (auto, ddp, ddp_spawn, ...)."),
    precision: str = typer.Option(None, help="32-true, 16-mixed or bf16-mixed (mixed precision on GPU)."),
) -> None:
    """Train a model. Extra arguments are config overrides: loss.w_det=0 train.max_steps=500."""
    from handflow.config import check_hardware, load_config
    from handflow.training import train as run

    overrides = list(ctx.args)
    bad = [a for a in overrides if "=" not in a or a.startswith("-")]
    if bad:
        raise typer.BadParameter(f"unknown option(s) {bad}; config overrides look like section.key=value")
    for key, value in (("data.root", data), ("train.out_dir", out), ("model.kind", model), ("train.devices", devices),
                       ("train.num_nodes", num_nodes), ("train.strategy", strategy), ("train.precision", precision)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(config, overrides)  # ConfigError / FileNotFoundError: one line through the CLI's handler
    check_hardware(cfg)
    mode = resume.strip().lower()
    how: str | bool = True if mode == "auto" else False if mode in ("no", "none", "false", "0") else resume
    if isinstance(how, str) and not Path(how).is_file():
        raise typer.BadParameter(f"--resume {resume!r}: no such checkpoint (use 'auto', 'no' or a .ckpt path)")
    last = run(cfg, resume=how)
    typer.echo(f"checkpoint: {last}")
