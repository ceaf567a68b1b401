"""``handflow features``: cache a trained backbone's features (shared-feature protocol)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command("features")
def features(
    checkpoint: Path = typer.Option(..., help="Trained handflow checkpoint whose backbone is cached."),
    data: Path = typer.Option(..., help="Dataset root (InterHand2.6M layout)."),
    out: Path = typer.Option(..., help="Output folder (features.json, <split>.pt)."),
    splits: str = typer.Option("train,val,test", help="Comma-separated splits."),
    batch_size: int = typer.Option(64, min=1, help="Images per backbone pass."),
    workers: int = typer.Option(1, min=0, help="Data-loading worker processes."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run the backbone once over every image (no augmentation) and store the pooled features.

    Heads then train on them: `handflow train ... model.backbone_checkpoint=CKPT
    model.freeze_backbone=true data.features=OUT` (docs/evaluation.md, shared-feature protocol).
    """
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.pipeline.features import cache_features

    meta = cache_features(checkpoint, data, out, tuple(s for s in splits.split(",") if s), batch_size=batch_size,
                          num_workers=workers, device=device, progress=progress)
    counts = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    typer.echo(f"features of {meta['backbone']} ({meta['dim']}-d, digest {meta['backbone_digest']}): {counts} -> {out}")
