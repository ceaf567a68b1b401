"""``handflow train``."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Option("cpu", help="Preset (cpu, paper) or a YAML file."),
    data: Path = typer.Option(None, help="Dataset root (InterHand2.6M layout)."),
    out: Path = typer.Option(None, help="Output folder (checkpoints, logs)."),
    model: str = typer.Option(None, help="Model kind: flow, deterministic, gaussian, mcdropout, cvae."),
    resume: bool = typer.Option(True, help="Resume from OUT/checkpoints/last.ckpt when present."),
) -> None:
    """Train a model. Extra arguments are config overrides: loss.w_det=0 train.max_steps=500."""
    from handflow.config import load_config
    from handflow.training import train as run

    overrides = list(ctx.args)
    if data is not None:
        overrides.append(f"data.root={data}")
    if out is not None:
        overrides.append(f"train.out_dir={out}")
    if model is not None:
        overrides.append(f"model.kind={model}")
    cfg = load_config(config, overrides)
    last = run(cfg, resume=resume)
    typer.echo(f"checkpoint: {last}")
