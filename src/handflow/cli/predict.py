"""``handflow predict``: every option is checked and every image header read before the model
loads (:func:`handflow.load_model`, no Lightning); the images are predicted in batches of
``--batch-size`` (one backbone pass each) and each result is written as soon as its batch is
done; a skipped image is named with its reason (and in ``OUT/index.csv``) and makes the command
exit 1 at the end.
docs/predict.md describes the options, the per-image file and how output names map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from handflow.cli.app import app
from handflow.errors import HandflowError, InputError

#: how many unmatched per-image keys are named in the warning
_SHOWN_UNKNOWN = 5


@dataclass
class _Options:
    """Checked options: box (x, y, w, h) or None, the global camera, per-image values, mesh format."""

    box: Any
    camera: Any
    per_image: Any
    meshes: str | None


def _floats(text: str | None, n: int, option: str, form: str) -> tuple[float, ...] | None:
    """``"a,b,..."`` -> n floats (syntax only; the values are checked later), or BadParameter."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise typer.BadParameter(f"{option} must be {form}, got {text!r}", param_hint=option)
    return values


def _options(checkpoint: Path, out: Path, samples: int, bbox: str | None, focal: float | None, principal: str | None,
             camera: Path | None, per_image: Path | None, meshes: str | None, batch_size: int) -> _Options:
    """Check every option (and read the camera and per-image files) before anything is written."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.inference import (
        check_batch_size,
        check_box,
        check_mesh_format,
        check_samples,
        global_camera,
        read_camera_file,
        read_per_image,
    )

    check_samples(samples, "--samples")
    check_batch_size(batch_size, "--batch-size")
    box = _floats(bbox, 4, "--bbox", "x,y,w,h")
    cxy = _floats(principal, 2, "--principal", "cx,cy")
    fmt = check_mesh_format(meshes, "--meshes")
    box = None if box is None else check_box(box, "--bbox")
    if camera is not None:
        if focal is not None or cxy is not None:
            raise InputError("--camera gives the whole camera: drop --focal / --principal, or drop --camera")
        cam = read_camera_file(camera)
    else:
        cam = global_camera(focal, cxy, names=("--focal", "--principal", "--camera"))
    if not checkpoint.is_file():
        raise InputError(f"--checkpoint {checkpoint} is not a file: give a trained checkpoint (runs/NAME/checkpoints/last.ckpt)")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder")
    return _Options(box, cam, None if per_image is None else read_per_image(per_image), fmt)


def _plan(images: list[Path], opts: _Options) -> tuple[list[Any], list[Path], list[str]]:
    """Expand the inputs and plan one job per image -> (jobs, missing paths, unmatched per-image keys)."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.inference import IMAGE_SUFFIXES, expand_inputs, plan_images

    found, missing = expand_inputs(images)
    if not found and not missing:
        raise InputError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, images))}")
    if not found:
        return [], missing, []
    per = opts.per_image
    jobs, unknown = plan_images(found, opts.box, opts.camera, per and per.boxes, per and per.cameras,
                                names=("--per-image", "--per-image"))
    return jobs, missing, unknown


def _skip(manifest: Any, source: str, name: str, reason: str) -> None:
    """Record and print one skipped input."""
    manifest.set(source, name, "skipped", reason, flush=False)
    typer.echo(f"skipped {source}: {reason}", err=True)


def _lift(keypoints: Path, checkpoint: Path | None, images: list[Path] | None, out: Path, samples: int, seed: int,
          meshes: str | None, html: bool, image_options: dict[str, object]) -> None:
    """``--keypoints FILE``: 2D-to-3D lifting (:func:`handflow.lifting.lifting_command`); the
    cameras come from the file, so the image options are refused."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.lifting import lifting_command

    given = [name for name, value in image_options.items() if value is not None] + (["--images"] if images else [])
    if given:
        raise typer.BadParameter(f"--keypoints takes its cameras from the file: drop {', '.join(given)}")
    for line in lifting_command(keypoints, checkpoint, out, samples=samples, seed=seed, meshes=meshes, html=html):
        typer.echo(line)


@app.command()
def predict(
    checkpoint: Path = typer.Option(None, help="Trained checkpoint (last.ckpt) or a shipped model's name (synthetic, "
                                               "lifting); default: the shipped image model, with --keypoints the shipped "
                                               "lifting model."),
    images: list[Path] = typer.Option(None, help="Image files or folders (repeatable)."),
    keypoints: Path = typer.Option(None, "--keypoints", help="Lift 2D keypoints instead of images: a JSON file of per-image "
                                                             "joints, confidences and cameras (docs/lifting.md)."),
    out: Path = typer.Option(Path("predictions"), help="Output folder (one set of files per image, and index.csv)."),
    samples: int = typer.Option(100, help="Samples per image (0: the z = 0 estimate only)."),
    bbox: str = typer.Option(None, help="x,y,w,h box around both hands, pixels (default: whole image)."),
    focal: float = typer.Option(None, help="Focal length in pixels (default: max(W, H))."),
    principal: str = typer.Option(None, help="cx,cy principal point in pixels (default: the image centre)."),
    camera: Path = typer.Option(None, help='Camera JSON with "K" (3x3, rows fx,0,cx / 0,fy,cy / 0,0,1) or "focal" (fx, fy) '
                                           'and "princpt" (cx, cy), as InterHand2.6M writes it; replaces --focal / --principal.'),
    per_image: Path = typer.Option(None, "--per-image", help="JSON or CSV mapping image file name (or path) to its bbox "
                                                             "and camera; others use the global options (docs/predict.md)."),
    meshes: str = typer.Option(None, help="Also write meshes: obj, ply or glb."),
    html: bool = typer.Option(True, help="Write an interactive 3D HTML view per image."),
    seed: int = typer.Option(0, help="Sampling seed (one generator runs through the batches in order)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per backbone pass; each batch is written when done."),
) -> None:
    """Predict the z = 0 estimate and samples for images; write arrays, figures and meshes."""
    # lazy: keeps `handflow --help` fast (a command's modules and torch load only when it runs)
    from handflow.inference import MANIFEST, Manifest, iter_predictions, write_prediction
    from handflow.models.shipped import DEFAULT_IMAGE_MODEL, resolve_weights, shipped_path

    if checkpoint is not None:
        checkpoint = resolve_weights(checkpoint)
    if keypoints is not None:
        _lift(keypoints, checkpoint, images, out, samples, seed, meshes, html,
              {"--bbox": bbox, "--focal": focal, "--principal": principal, "--camera": camera, "--per-image": per_image})
        return
    if not images:
        raise typer.BadParameter("give --images (files or folders) or --keypoints FILE")
    if checkpoint is None:
        checkpoint = shipped_path(DEFAULT_IMAGE_MODEL)
        typer.echo(f"no --checkpoint: using the shipped image model {DEFAULT_IMAGE_MODEL!r} (trained on synthetic images "
                   "of the open hand model; docs/training.md, \"Shipped model\")", err=True)
    opts = _options(checkpoint, out, samples, bbox, focal, principal, camera, per_image, meshes, batch_size)
    jobs, missing, unknown = _plan(images, opts)
    if unknown:
        more = f" and {len(unknown) - _SHOWN_UNKNOWN} more" if len(unknown) > _SHOWN_UNKNOWN else ""
        typer.echo(f"warning: --per-image {per_image}: {len(unknown)} entries name no input image: "
                   f"{', '.join(unknown[:_SHOWN_UNKNOWN])}{more}", err=True)
    manifest = Manifest(out)
    for p in missing:
        _skip(manifest, str(p), "", "no such file or folder")
    for job in jobs:
        if job.error is not None:
            _skip(manifest, job.label, job.name, str(job.error))
        else:
            manifest.set(job.label, job.name, "pending", flush=False)
    manifest.write()
    todo = [job for job in jobs if job.error is None]
    if todo:
        from handflow.predictor import load_model

        try:
            predictor = load_model(checkpoint)
        except Exception as e:  # the manifest must not promise results that never come
            for job in todo:
                manifest.set(job.label, job.name, "skipped", f"not predicted: the model did not load ({type(e).__name__})",
                             flush=False)
            manifest.write()
            raise
        for job, res in iter_predictions(predictor, todo, samples, opts.meshes is not None, seed, batch_size):
            if isinstance(res, HandflowError):
                _skip(manifest, job.label, job.name, str(res))
                manifest.write()
                continue
            line = write_prediction(res, job.name, out, predictor, opts.meshes, html)
            manifest.set(job.label, job.name, "ok")
            typer.echo(line)
    skipped = sum(row["status"] == "skipped" for row in manifest.rows.values())
    if skipped:
        typer.echo(f"{skipped} of {len(manifest.rows)} inputs skipped (listed above and in {out / MANIFEST})", err=True)
        raise typer.Exit(1)
