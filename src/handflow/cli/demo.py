"""``handflow demo``: the main job end to end on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from handflow.cli.app import app


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Output folder for figures and summary."),
    quick: bool = typer.Option(False, help="Tiny budget (used by the test suite)."),
    seed: int = typer.Option(0, help="Random seed."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train from scratch instead of fine-tuning the "
                                                                   "shipped image model."),
) -> None:
    """Run the demo on the embedded defaults (open hand model, synthetic data, CPU model)."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.demo import run_demo

    run_demo(out=out, quick=quick, seed=seed, from_scratch=from_scratch)
