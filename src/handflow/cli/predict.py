"""``handflow predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="Trained checkpoint (last.ckpt)."),
    images: list[Path] = typer.Option(..., help="Image files or folders (repeatable)."),
    out: Path = typer.Option(Path("predictions"), help="Output folder."),
    samples: int = typer.Option(100, help="Samples per image."),
    bbox: str = typer.Option(None, help="x,y,w,h box around both hands (default: whole image)."),
    focal: float = typer.Option(None, help="Focal length in pixels (default: max(W, H))."),
    meshes: str = typer.Option(None, help="Also write meshes: obj, ply or glb."),
    html: bool = typer.Option(True, help="Write an interactive 3D HTML view per image."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Predict the z = 0 estimate and samples for images; write arrays, figures and meshes."""
    from handflow.inference import write_predictions
    from handflow.training import load_checkpoint

    box = None
    if bbox:
        try:
            box = tuple(float(v) for v in bbox.split(","))
            assert len(box) == 4
        except (ValueError, AssertionError):
            raise typer.BadParameter(f"--bbox must be x,y,w,h, got {bbox!r}") from None
    module, _ = load_checkpoint(checkpoint)
    from handflow.inference import predict as run

    preds = run(module, [str(p) for p in images], samples=samples, bbox=box, focal=focal, meshes=bool(meshes), seed=seed)
    for line in write_predictions(preds, out, module, meshes=meshes, html=html):
        typer.echo(line)
