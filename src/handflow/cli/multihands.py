"""``handflow multihands``: many plausible annotations per image; ``handflow multihands show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from handflow.cli.app import app
from handflow.cli.options import CONFIG_HELP, SET_HELP, option_overrides, shard_option

#: the options that are settings (option -> key of :class:`~handflow.multihands.generate.GenerateConfig`)
SETTINGS_OPTIONS = {"num": "num", "pixel_threshold": "pixel_threshold", "rounds": "rounds",
                    "proposals": "proposals_per_image", "prior_quantile": "prior_quantile", "seed": "seed",
                    "image_size": "image_size", "hand_model": "hand_model", "batch_images": "batch_images",
                    "part_size": "part_size"}
#: the options that are not settings (folders, the shard, the device, progress)
RUN_OPTIONS = ("data", "split", "out", "shard", "device", "progress", "config", "set_")

mh_app = typer.Typer(help="MultiHands: many plausible two-hand annotations per image (paper Sec. 4).",
                     no_args_is_help=False)
app.add_typer(mh_app, name="multihands")


@mh_app.callback(invoke_without_command=True)
def multihands(
    ctx: typer.Context,
    data: Path = typer.Option(None, help="Dataset root (InterHand2.6M layout, real or `handflow synth`)."),
    split: str = typer.Option("test", help="Split to annotate."),
    num: int = typer.Option(100, min=1, help="N: annotations kept per image (ground truth stored apart)."),
    out: Path = typer.Option(None, help="Output root; parts are written to OUT/<split>/."),
    pixel_threshold: float = typer.Option(None, help="T in crop pixels (unset: 2 % of --image-size)."),
    rounds: int = typer.Option(6, min=1, help="Perturb-check rounds (accepted proposals seed the next)."),
    proposals: int = typer.Option(96, min=1, help="Proposals per image and round."),
    prior_quantile: float = typer.Option(0.01, help="Reject articulations below this quantile of the prior."),
    seed: int = typer.Option(0, help="Random seed: same seed and settings, same output."),
    shard: str = typer.Option("0/1", help="Process shard i of n (i/n): parts c with c % n == i."),
    image_size: int = typer.Option(128, min=16, help="Crop side S (pixels) of the targets."),
    hand_model: str = typer.Option("openhand", help="openhand (embedded) or mano."),
    batch_images: int = typer.Option(32, min=1, help="Images checked together in one vectorized batch."),
    part_size: int = typer.Option(256, min=1, help="Images per part folder (the unit of resume)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Also perturb.<key>=VALUE (docs/multihands.md)."),
) -> None:
    """Generate MultiHands annotations for one split (resumable; rerun skips finished parts).

    Settings: the defaults, then --config FILE, then the options given, then --set KEY=VALUE."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None or out is None:
        raise typer.BadParameter("--data and --out are required (or use `handflow multihands show`)")
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    import torch

    from handflow.config import build, read_yaml
    from handflow.multihands.diagnostics import format_summary
    from handflow.multihands.generate import GenerateConfig, dataset_targets, generate

    shard_t = shard_option(shard)
    layers = [] if config is None else [read_yaml(config)]
    try:
        cfg = build(GenerateConfig, layers, [*option_overrides(ctx, SETTINGS_OPTIONS), *set_])
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda requested but torch sees no GPU")
    targets = dataset_targets(data, split, cfg.image_size, cfg.hand_model)
    typer.echo(f"{len(targets)} images with hand-model parameters in {data} ({split}); "
               f"T = {cfg.threshold_px:.2f} px, N = {cfg.num}, {cfg.rounds} rounds x {cfg.proposals_per_image} proposals")
    res = generate(out, split, cfg, targets, shard=shard_t, device=device, progress=progress)
    rates = res["meta"]["rates"]
    typer.echo(f"parts written {res['written']}, skipped (already done) {res['skipped']}; "
               f"complete: {res['complete']}")
    typer.echo("pass rates: " + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))
    if res["summary"] is not None:
        typer.echo(format_summary(res["summary"]))
        typer.echo(f"summary: {out / split / 'summary.json'}")
    else:
        typer.echo(json.dumps(res["meta"]["stats"]))


@mh_app.command("show")
def show(
    data: Path = typer.Option(..., help="Dataset root the annotations were generated from."),
    multihands: Path = typer.Option(..., help="Output root of `handflow multihands`."),
    split: str = typer.Option("test", help="Split."),
    index: int = typer.Option(0, min=0, help="i-th annotated image (sorted by image id)."),
    image_id: int = typer.Option(None, help="Select the image by its id instead of --index."),
    out: Path = typer.Option(Path("multihands.png"), help="Output PNG."),
    hand_model: str = typer.Option("openhand", help="Hand model of the dataset reader."),
) -> None:
    """Figure: all annotations of one image projected into it, and from two novel views."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    import torch

    from handflow.data.multihands_io import load
    from handflow.multihands.show import plot_multihands

    records = load(multihands, split)
    ids = sorted(records)
    if image_id is None:
        if index >= len(ids):
            raise typer.BadParameter(f"--index {index}: only {len(ids)} annotated images in {multihands}/{split}")
        image_id = ids[index]
    if image_id not in records:
        raise typer.BadParameter(f"image id {image_id} has no MultiHands annotations in {multihands}/{split}")
    rec = records[image_id]
    image = _load_image(data, split, rec.image_size, hand_model, image_id)
    path = plot_multihands(image, torch.as_tensor(rec.K), torch.as_tensor(rec.gt_joints), torch.as_tensor(rec.joints),
                           torch.as_tensor(rec.gt_visible), out, rec.image_size)
    typer.echo(f"image {image_id}: {len(rec.params)} annotations -> {path}")


def _load_image(data: Path, split: str, size: int, hand_model: str, image_id: int) -> Any:  # (3, S, S) tensor
    """The dataset crop of ``image_id`` (the same crop the annotations refer to)."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.data import InterHandDataset

    ds = InterHandDataset(data, split, size, hand_model=hand_model, augment=False)
    find = getattr(ds, "index_of", None)
    if callable(find):
        return ds[find(image_id)]["image"]
    getter = getattr(ds, "annotation", None)
    for i in range(len(ds)):
        it = getter(i) if callable(getter) else ds[i]
        if int(it["meta"]["image_id"]) == image_id:
            return ds[i]["image"]
    raise typer.BadParameter(f"image id {image_id} not found in {data} ({split})")
