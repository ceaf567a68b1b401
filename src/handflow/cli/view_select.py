"""``handflow view-select``: rank the views of each frame by sample spread (paper Sec. 5.8)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from handflow.cli.app import app


@app.command("view-select")
def view_select(
    eval_dir: Path = typer.Option(None, "--eval", help="Output folder of `handflow evaluate` (reuses its per_image.npz)."),
    checkpoint: Path = typer.Option(None, help="Or: evaluate this checkpoint first (into OUT/eval)."),
    data: Path = typer.Option(None, help="Dataset root (with --checkpoint)."),
    split: str = typer.Option("test", help="Split (with --checkpoint)."),
    samples: int = typer.Option(100, min=2, help="Samples per image (with --checkpoint)."),
    device: str = typer.Option("cpu", help="cpu or cuda (with --checkpoint)."),
    limit: int = typer.Option(None, min=1, help="First LIMIT images only (with --checkpoint)."),
    min_views: int = typer.Option(2, min=2, help="Frames with fewer usable views are skipped."),
    seed: int = typer.Option(0, help="Seed of the random-choice baseline."),
    out: Path = typer.Option(Path("view_selection"), help="Output folder: view_selection.json/.md/.png."),
) -> None:
    """Regret of the best-ranked (lowest spread), worst-ranked and a random view per frame."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    import numpy as np

    from handflow.evaluation.report_figures import view_selection_table
    from handflow.evaluation.viewselect import plot_view_selection, view_selection

    if eval_dir is None:
        if checkpoint is None or data is None:
            raise typer.BadParameter("give --eval DIR, or --checkpoint and --data to evaluate first")
        from handflow.evaluation import evaluate

        eval_dir = out / "eval"
        evaluate(checkpoint, data, eval_dir, split=split, samples=samples, device=device, limit=limit)
    npz = eval_dir / "per_image.npz"
    if not npz.exists():
        raise typer.BadParameter(f"{npz} not found: run `handflow evaluate --out {eval_dir}` first")
    with np.load(npz, allow_pickle=False) as z:
        per = {k: z[k] for k in z.files}
    try:
        res = view_selection(per, "all", min_views=min_views, seed=seed)
    except KeyError as e:
        raise typer.BadParameter(str(e)) from None
    if not res.get("frames"):
        raise typer.BadParameter(f"no frame in {npz} has >= {min_views} views with finite spread and MPJPE")
    out.mkdir(parents=True, exist_ok=True)
    table = view_selection_table({seed: res})
    summary = {"frames": res["frames"], "views_per_frame": res["views_per_frame"],
               **{a: {"summary": r["summary"], "spearman": r["spearman"], "best_beats_worst": r["best_beats_worst"]}
                  for a, r in res["alignments"].items()}}
    (out / "view_selection.json").write_text(json.dumps(summary, indent=1))
    (out / "view_selection.md").write_text("# View selection\n\nRegret (mm) = MPJPE of the chosen view − lowest MPJPE "
                                           f"over the frame's views.\n\n{table}\n")
    plot_view_selection(res, out / "view_selection.png", "global" if "global" in res["alignments"] else None)
    typer.echo(table)
    typer.echo(f"written: {out / 'view_selection.md'}, {out / 'view_selection.json'}, {out / 'view_selection.png'}")
