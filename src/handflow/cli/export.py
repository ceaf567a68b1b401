"""``handflow export``: a checkpoint's weights as a small weights-only file (issue #17)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app
from handflow.errors import InputError


@app.command("export")
def export(
    checkpoint: Path = typer.Option(..., help="A handflow checkpoint (runs/NAME/checkpoints/last.ckpt)."),
    out: Path = typer.Option(..., help="The weights file to write (e.g. model.pt)."),
    note: list[str] = typer.Option(None, help="KEY=VALUE stored with the weights under handflow.note (repeatable): "
                                              "the training command, compute, test figures."),
) -> None:
    """Write the network's weights (float16 for large tensors, no optimizer state): a file that
    `handflow predict --checkpoint`, `handflow evaluate` and `handflow.load_model` read
    (weights_only), and that `handflow train ... model.init_from=FILE` fine-tunes from."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.models.shipped import export_weights

    pairs = {}
    for item in note or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--note {item!r} is not KEY=VALUE")
        pairs[key.strip()] = value
    if out.exists() and out.is_dir():
        raise InputError(f"--out {out} is a folder: give a file name (e.g. {out / 'model.pt'})")
    path = export_weights(checkpoint, out, note=pairs)
    typer.echo(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB)")
