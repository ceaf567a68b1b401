"""``handflow features``: cache a trained backbone's features (shared-feature protocol)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command("features")
def features(
    checkpoint: Path = typer.Option(..., help="Handflow checkpoint or weights file (float16 exports too), or a shipped "
                                    "model's name (synthetic), whose backbone is cached."),
    data: Path = typer.Option(..., help="Dataset root (InterHand2.6M layout)."),
    out: Path = typer.Option(..., help="Output folder (features.json, <split>.pt)."),
    splits: str = typer.Option("train,val,test", help="Comma-separated splits."),
    copies: int = typer.Option(1, min=1, help="Features per training image: copy k is the image under the training "
                               "augmentation of epoch k, so heads trained for several epochs do not see one fixed "
                               "feature per image (1: one un-augmented feature; val and test always one)."),
    seed: int = typer.Option(0, help="Augmentation seed of the copies (--copies > 1; stored in features.json)."),
    batch_size: int = typer.Option(64, min=1, help="Images per backbone pass."),
    workers: int = typer.Option(1, min=0, help="Data-loading worker processes."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run the backbone over every image and store the pooled features (no augmentation; with
    --copies K, K augmented copies of every training image).

    Heads then train on them: `handflow train ... model.backbone_checkpoint=CKPT
    model.freeze_backbone=true data.features=OUT` (+ `data.feature_copies=K`; docs/evaluation.md,
    shared-feature protocol).
    """
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.pipeline.features import cache_features

    meta = cache_features(checkpoint, data, out, tuple(s for s in splits.split(",") if s), batch_size=batch_size,
                          num_workers=workers, device=device, progress=progress, copies=copies, seed=seed)
    counts = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    extra = f", train x {copies} augmented copies" if copies > 1 else ""
    typer.echo(f"features of {meta['backbone']} ({meta['dim']}-d, digest {meta['backbone_digest']}{extra}): {counts} -> {out}")
