"""``handflow synth``: write the synthetic two-hand dataset in the InterHand2.6M format."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from handflow.cli.app import app
from handflow.cli.options import CONFIG_HELP, SET_HELP, option_overrides, shard_option

#: the options that are settings (option -> key of :class:`~handflow.data.synth.settings.SynthConfig`)
SETTINGS_OPTIONS = {"frames": "frames", "cameras": "cameras", "image_size": "image_size", "seed": "seed",
                    "hand_model": "hand_model", "splits": "splits", "test_frames": "test_frames",
                    "train_cameras": "train_cameras", "val_cameras": "val_cameras", "test_cameras": "test_cameras"}
#: the options that are not settings (they may change between runs of one dataset)
RUN_OPTIONS = ("out", "shard", "mano_path", "workers", "merge_only", "progress", "overwrite", "config", "set_")


@app.command()
def synth(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="Dataset root to write (InterHand2.6M layout)."),
    frames: int = typer.Option(200, min=1, help="Number of frames (3D scenes) over all splits."),
    cameras: int = typer.Option(16, min=1, help="Cameras per capture on the dome."),
    image_size: int = typer.Option(256, min=16, help="Square image size S (real images are 334x512)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same bytes."),
    shard: str = typer.Option("0/1", help="Process shard i of n (i/n); merges when all are present."),
    hand_model: str = typer.Option("openhand", help="openhand (embedded) or mano (needs --mano-path)."),
    mano_path: Path = typer.Option(None, help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl."),
    splits: str = typer.Option("train,val,test", help="Comma-separated splits (80/10/10 % of frames)."),
    test_frames: int = typer.Option(None, min=1, help="Frames of the test split instead of its 10 % share "
                                    "(train and val stay the same: a bigger test set for the same training data)."),
    train_cameras: int = typer.Option(None, min=1, help="Cameras per capture of the train split (default --cameras): "
                                      "fewer views per frame, more distinct poses for the same images."),
    val_cameras: int = typer.Option(None, min=1, help="Cameras per capture of the val split (default --cameras)."),
    test_cameras: int = typer.Option(None, min=1, help="Cameras per capture of the test split (default --cameras; "
                                     "view selection wants many, e.g. 12)."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each renders on its own)."),
    merge_only: bool = typer.Option(False, "--merge", help="Only merge existing shards into the final files."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset in OUT written with other settings: "
                                   "deletes only the files synth wrote there, then generates afresh (not with "
                                   "--shard i/n, n > 1, nor --merge)."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Generate interacting two-hand scenes seen by a dome of cameras (train/val/test).

    Settings: the defaults, then --config FILE, then the options given, then --set KEY=VALUE.
    A rerun with the same settings resumes (finished shards are skipped); other settings are
    refused unless --overwrite is given. --workers and --progress may change between runs."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.config import build, read_yaml
    from handflow.data.synth.generate import SynthConfig, find_shard_count, generate, merge

    shard_t = shard_option(shard)
    layers = [] if config is None else [read_yaml(config)]
    settings = build(SynthConfig, layers, [*option_overrides(ctx, SETTINGS_OPTIONS), *set_])
    split_t = settings.splits
    if merge_only:
        if overwrite:
            raise typer.BadParameter("--overwrite regenerates the dataset; --merge only merges existing shards: "
                                     "give one of them")
        summary = merge(out, find_shard_count(out, split_t), settings)
        typer.echo(json.dumps(summary, indent=1))
        return
    result = generate(out, settings, shard_t, workers=workers,
                      mano_path=None if mano_path is None else str(mano_path), progress=progress,
                      overwrite=overwrite)
    if result["cleared"]:
        typer.echo(f"--overwrite: deleted the {result['cleared']} files of the earlier dataset in {out}")
    if result["skipped"]:
        typer.echo(f"shard {shard} already finished in {out}: skipped")
    if result["timers"]:
        typer.echo("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(result["timers"].items())))
    if result["summary"] is None:
        typer.echo(f"shard {shard} written ({result['images']} images); the merge runs when every shard is done")
    else:
        _print_summary(result["summary"], out)


def _print_summary(summary: dict, out: Path) -> None:
    t = Table(title=f"synthetic dataset in {out}")
    for c in ("split", "frames", "images", "sequences", "captures", "subjects"):
        t.add_column(c)
    for s, v in summary["splits"].items():
        t.add_row(s, *(str(v[k]) for k in ("frames", "images", "sequences", "captures", "subjects")))
    con = Console()
    con.print(t)
    occ = summary["occluded_joint_fraction"]
    con.print(f"collision rejections {summary['collision_rejections']}, dropped views {summary['dropped_views']}, "
              f"occluded joints {occ['mean']:.1%} (mean per image), one hand hides the other in "
              f"{summary['hand_occludes_other_fraction']:.1%} of images; summary: {out / 'synth_summary.json'}")
