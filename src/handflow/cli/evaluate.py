"""``handflow evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="Trained checkpoint (any model kind)."),
    data: Path = typer.Option(..., help="Dataset root (InterHand2.6M layout, real or synthetic)."),
    out: Path = typer.Option(..., help="Output folder: per_image.npz, summary.json/.csv/.md (resumable)."),
    split: str = typer.Option("test", help="Split to evaluate."),
    multihands: Path = typer.Option(None, help="MultiHands output root (min/max MPJPE and MMD need it)."),
    samples: int = typer.Option(100, min=1, help="Samples per image."),
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(0, help="Sampling seed."),
    limit: int = typer.Option(None, min=1, help="Evaluate only the first LIMIT images."),
    num_workers: int = typer.Option(0, min=0, help="Data-loader processes."),
    chunk_images: int = typer.Option(512, min=1, help="Images per resumable chunk (written under OUT/chunks/)."),
    overwrite: bool = typer.Option(False, help="Discard an earlier evaluation in OUT (other settings) and start afresh."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    features: Path = typer.Option(None, help="A `handflow features` cache of this checkpoint's frozen backbone: its "
                                  "features replace decoding the images (shared-feature protocol)."),
) -> None:
    """Single-annotation MPJPE (z = 0 and best of N), min/max MPJPE over plausible annotations,
    MMD per alignment and sample spread of one checkpoint; rerun to resume."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.evaluation import RunMismatch
    from handflow.evaluation import evaluate as run
    from handflow.evaluation.scoring import summary_markdown

    try:
        summary = run(checkpoint, data, out, split=split, multihands=multihands, samples=samples, batch_size=batch_size,
                      device=device, seed=seed, limit=limit, num_workers=num_workers, chunk_images=chunk_images,
                      progress=progress, overwrite=overwrite, features=features)
    except (FileNotFoundError, RunMismatch, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary_markdown(summary))
    typer.echo(f"written: {out / 'per_image.npz'}, {out / 'summary.json'}, {out / 'summary.csv'}, {out / 'summary.md'}")
