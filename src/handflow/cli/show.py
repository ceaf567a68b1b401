"""``handflow show``: one dataset item as a figure."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def show(
    data: Path = typer.Argument(..., help="Dataset root (InterHand2.6M layout)."),
    split: str = typer.Option("test", help="train, val or test."),
    index: int = typer.Option(0, help="Item index."),
    out: Path = typer.Option(Path("sample.png"), help="Output PNG."),
    image_size: int = typer.Option(256, help="Crop side in pixels."),
    hand_model: str = typer.Option(None, help="Hand model for parameters/visibility (default: the dataset's)."),
) -> None:
    """Draw the crop with 2D joints (visible vs occluded) and both hands' skeletons from the side."""
    from handflow.data import InterHandDataset
    from handflow.viz.sample import plot_item

    ds = InterHandDataset(data, split, image_size, hand_model=hand_model)
    typer.echo(str(plot_item(ds[index], out)))
