"""``handflow pack``: pre-decoded crops of a split in one memory-mapped store (issue #17)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command("pack")
def pack(
    data: Path = typer.Option(..., help="Dataset root (InterHand2.6M layout)."),
    out: Path = typer.Option(..., help="Store folder; each split goes to OUT/<split>/."),
    split: str = typer.Option("train", help="Comma-separated splits to pack."),
    image_size: int = typer.Option(128, min=8, help="Training crop side S (data.image_size)."),
    margin: float = typer.Option(1.5, min=1.0, help="Stored crop side / S: room for scale, rotation and shift."),
    hand_model: str = typer.Option(None, help="openhand or mano (default: the dataset's own model)."),
    mano_path: Path = typer.Option(None, help="MANO files, with --hand-model mano."),
    chunk: int = typer.Option(256, min=1, help="Items per resume unit."),
    workers: int = typer.Option(0, min=0, help="Loader processes (0: this process)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Decode every image once and store its crop (uint8, with a margin) and targets.

    Train from it with `handflow train ... data.packed=OUT` (augmentation runs on whole batches;
    docs/training.md, "Packed store and batched augmentation"). A rerun resumes an interrupted
    pack; a store made from other annotations or settings is refused."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.data.packed import pack_split

    for s in (s.strip() for s in split.split(",") if s.strip()):
        meta = pack_split(data, s, out, image_size, margin=margin, hand_model=hand_model, mano_path=mano_path,
                          chunk=chunk, workers=workers, progress=progress)
        n, _, p, _ = meta["shape"]
        typer.echo(f"{s}: {n} crops of {p} px (S = {image_size}, pad {meta['pad']}) -> {out / s}")
