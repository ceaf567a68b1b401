"""``handflow train``."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app
from handflow.cli.options import SET_HELP, option_overrides

#: the options that are settings (option -> key of :class:`~handflow.config.Config`); unset, the
#: preset's value stands
SETTINGS_OPTIONS = {"data": "data.root", "out": "train.out_dir", "model": "model.kind", "devices": "train.devices",
                    "num_nodes": "train.num_nodes", "strategy": "train.strategy", "precision": "train.precision"}
#: the options that are not settings
RUN_OPTIONS = ("config", "resume", "set_")
_SET_HELP = SET_HELP.replace("seed=3", "loss.w_det=0")


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
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
) -> None:
    """Train a model. Extra arguments are config overrides: loss.w_det=0 train.max_steps=500
    (or --set loss.w_det=0). Settings: the preset or YAML file, then the overrides, then the
    options given."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.config import check_hardware, load_config
    from handflow.training import train as run

    overrides = [*ctx.args, *set_]
    bad = [a for a in overrides if "=" not in a or a.startswith("-")]
    if bad:
        raise typer.BadParameter(f"unknown option(s) {bad}; config overrides look like section.key=value")
    overrides += option_overrides(ctx, SETTINGS_OPTIONS)  # after the extra arguments: the options win
    cfg = load_config(config, overrides)  # ConfigError / FileNotFoundError: one line through the CLI's handler
    check_hardware(cfg)
    mode = resume.strip().lower()
    how: str | bool = True if mode == "auto" else False if mode in ("no", "none", "false", "0") else resume
    if isinstance(how, str) and not Path(how).is_file():
        raise typer.BadParameter(f"--resume {resume!r}: no such checkpoint (use 'auto', 'no' or a .ckpt path)")
    last = run(cfg, resume=how)
    typer.echo(f"checkpoint: {last}")
