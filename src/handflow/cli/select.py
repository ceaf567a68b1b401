"""``handflow select``: pick a run's checkpoint on the validation split."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command("select")
def select(
    run: Path = typer.Option(..., help="A `handflow train` output folder (with checkpoints/step*.ckpt)."),
    split: str = typer.Option("val", help="Split scored (never the benchmark's test split)."),
    limit: int = typer.Option(2048, min=1, help="At most this many images, spread evenly over the split."),
    batch_size: int = typer.Option(64, min=1, help="Images per loss evaluation."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Score every periodic checkpoint by the run's own training loss on SPLIT and link the
    lowest as RUN/checkpoints/best.ckpt (scores in RUN/selection.json; a rerun reuses them)."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.training.select import select_checkpoint

    try:
        sel = select_checkpoint(run, split=split, limit=limit, batch_size=batch_size, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    for step, s in sel["steps"].items():
        mark = "  <- best" if int(step) == sel["best_step"] else ""
        typer.echo(f"step {int(step):>8}: {split} loss {s['loss']:.4f}{mark}")
    typer.echo(f"{run / sel['best']} = {sel['source']} ({sel['images']} {split} images)")
