"""``handflow show``: one dataset item as a figure (crop + 2D joints, side view in 3D)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def show(
    data: Path = typer.Argument(..., help="Dataset root (InterHand2.6M layout: images/ and annotations/)."),
    split: str = typer.Option("test", help="train, val or test."),
    index: int = typer.Option(0, help="Item index in the split."),
    out: Path = typer.Option(Path("sample.png"), help="Output PNG."),
    image_size: int = typer.Option(256, min=16, help="Crop side S in pixels."),
    hand_model: str = typer.Option(None, help="openhand or mano (default: the dataset's, see docs/data.md)."),
    mano_path: Path = typer.Option(None, help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (hand_model mano)."),
    visibility: str = typer.Option("auto", help="auto, extra, render or none (docs/data.md)."),
    cache_dir: Path = typer.Option(None, help="Index cache folder when the dataset root is read-only."),
) -> None:
    """Draw the crop with 2D joints (visible filled, occluded hollow) and both hands' skeletons from the side."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.data import InterHandDataset
    from handflow.viz.sample import plot_item

    ds = InterHandDataset(data, split, image_size, hand_model=hand_model, mano_path=mano_path,
                          visibility=visibility, cache_dir=cache_dir)
    if not 0 <= index < len(ds):
        raise typer.BadParameter(f"--index {index} out of range: split {split!r} has {len(ds)} items")
    typer.echo(str(plot_item(ds[index], out)))
