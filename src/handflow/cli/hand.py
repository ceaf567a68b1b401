"""``handflow hand``: draw a hand model (both hands, five poses, front and side views)."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def hand(
    model: str = typer.Option("openhand", help="Hand model: openhand or mano."),
    path: Path | None = typer.Option(None, help="MANO folder or file (model=mano)."),
    out: Path = typer.Option(Path("hand_model.png"), help="Output PNG."),
    seed: int = typer.Option(0, help="Seed of the prior sample."),
) -> None:
    """Draw the hand gallery of a hand model and print its summary."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.demo import hand_model_summary
    from handflow.hand import load_hand_model
    from handflow.viz.hands import plot_hand_gallery

    m = load_hand_model(model, path=path)
    plot_hand_gallery(m, out, seed=seed)
    typer.echo(hand_model_summary(m) + f"figure: {out}")
