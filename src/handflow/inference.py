"""Prediction on any image: ``handflow.predict(...)`` and the ``handflow predict`` command.

For each image: the z = 0 estimate and N samples as parameters (218) and as camera-frame
joints (42, 3) mm, optionally meshes. Images are predicted in batches by a
:class:`~handflow.predictor.Predictor` (no Lightning): each image is warped to its own crop, the
backbone runs once per batch and all samples reuse its features (and the flow's cached
context projection).

Camera: without a box the whole image is the crop (padded to a square about its centre);
without a focal length it defaults to ``DEFAULT_FOCAL_FACTOR × max(W, H)`` pixels (a ~53°
field of view, typical of phone and webcam images), which is reported; without a principal
point it is the image centre. A :class:`Camera` holds what is known (focal ``fx, fy`` and/or
principal point ``cx, cy``), globally or per image; per-image values win part by part.

Everything a user gives is checked before any model runs (:class:`~handflow.errors.InputError`,
one line naming the problem and the fix); an unreadable image is a
:class:`~handflow.errors.CorruptFileError`, a non-finite model output a
:class:`~handflow.errors.ModelOutputError`. docs/predict.md describes the options, the per-image
file, how output names map to inputs and what is refused.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch import Tensor

from handflow.atomic import atomic_path
from handflow.errors import CorruptFileError, HandflowError, InputError, ModelOutputError
from handflow.geometry.camera import crop_intrinsics, intrinsics
from handflow.metrics import sample_spread
from handflow.viz.predictions import plot_prediction, write_samples_html

__all__ = ["predict", "Prediction", "Camera", "ImageJob", "PerImage", "DEFAULT_FOCAL_FACTOR", "IMAGE_SUFFIXES",
           "MIN_IMAGE_SIDE", "MAX_ASPECT", "MESH_FORMATS", "MANIFEST", "list_images", "expand_inputs", "output_names",
           "load_image", "image_size", "check_image", "check_image_size", "check_mesh_format", "check_samples",
           "check_focal", "check_principal", "check_box", "parse_camera", "global_camera", "read_camera_file",
           "read_per_image", "plan_images", "crop_camera", "check_finite", "iter_predictions", "write_prediction",
           "write_predictions", "Manifest", "DEFAULT_BATCH_SIZE", "check_batch_size"]

DEFAULT_FOCAL_FACTOR = 1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: smallest accepted image side (pixels)
MIN_IMAGE_SIDE = 16
#: largest accepted ratio of an image's long side to its short side
MAX_ASPECT = 8.0
MESH_FORMATS = ("obj", "ply", "glb")
#: images per backbone pass of ``handflow predict`` / :func:`predict`
DEFAULT_BATCH_SIZE = 16
#: the manifest written in the output folder: input path -> output name, status, reason
MANIFEST = "index.csv"
#: EXIF orientations (5-8) that swap width and height
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
#: Pillow modes of 16-bit single-channel images (scaled by 2**16 - 1, not clipped at 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535.0
#: what a decoder raises on a file that is not a readable image
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
#: keys of a camera given as an object (InterHand2.6M's campos / camrot are extrinsics: ignored)
_CAMERA_KEYS, _IGNORED_CAMERA_KEYS = ("K", "focal", "princpt"), ("campos", "camrot")
_BOX_KEY = "bbox"
#: entries of K that must be 0: the skew K[0][1] and those below the diagonal
_K_ZEROS = ((0, 1), (1, 0), (2, 0), (2, 1))
#: CSV columns of a per-image file besides ``image``
_CSV_BOX, _CSV_FOCAL, _CSV_PRINCIPAL = ("x", "y", "w", "h"), ("fx", "fy"), ("cx", "cy")

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------- checked values
def _show(value: Any, limit: int = 80) -> str:
    """A one-line, bounded repr of a user's value (tensors and arrays as nested lists)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().tolist()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _numbers(value: Any, n: int, name: str, what: str) -> tuple[float, ...]:
    """``value`` (a number, sequence, array or tensor) as ``n`` finite floats, else :class:`InputError`
    ``"{name} must be {what}, got {value}"``."""
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {what}, got {_show(value)}") from None
    if arr.size != n or not np.isfinite(arr).all():
        raise InputError(f"{name} must be {what}, got {_show(value)}")
    return tuple(float(v) for v in arr)


def _shape(value: Any) -> tuple[int, ...]:
    """The array shape of a (numeric, already checked) value."""
    return tuple(value.shape) if isinstance(value, Tensor) else np.asarray(value, dtype=np.float64).shape


def check_samples(samples: Any, name: str = "samples") -> int:
    """A sample count: an integer ≥ 0 (0: the z = 0 estimate only)."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 0:
        raise InputError(f"{name} must be a whole number >= 0 (0: the z = 0 estimate only), got {_show(samples)}")
    return int(samples)


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """Images per batch: an integer ≥ 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"{name} must be a whole number >= 1 (images per backbone pass), got {_show(batch_size)}")
    return int(batch_size)


def check_focal(value: Any, name: str = "focal") -> tuple[float, float]:
    """A focal length in pixels, ``f`` or ``(fx, fy)``, positive and finite -> ``(fx, fy)``."""
    scalar = isinstance(value, (int, float, str, np.number)) or (isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0)
    what = "a positive finite number of pixels" + ("" if scalar else ", or a pair fx, fy of them")
    f = _numbers(value, 1, name, what) * 2 if scalar else _numbers(value, 2, name, what)
    if min(f) <= 0:
        raise InputError(f"{name} must be {what}, got {_show(value)}")
    return f[0], f[1]


def check_principal(value: Any, name: str = "principal") -> tuple[float, float]:
    """A principal point ``(cx, cy)`` in pixels, finite."""
    cx, cy = _numbers(value, 2, name, "two finite numbers cx, cy in pixels")
    return cx, cy


def check_box(value: Any, name: str = "bbox") -> Box:
    """A box ``(x, y, w, h)`` in image pixels: finite, positive width and height."""
    what = "x, y, w, h in pixels: finite, with positive width and height"
    x, y, w, h = _numbers(value, 4, name, what)
    if w <= 0 or h <= 0:
        raise InputError(f"{name} must be {what}, got {_show(value)}")
    return x, y, w, h


@dataclass(frozen=True)
class Camera:
    """What is known of one image's pinhole intrinsics, in pixels; ``None`` parts take the
    defaults of the image's size (focal ``DEFAULT_FOCAL_FACTOR × max(W, H)``, principal point
    the image centre).

    Attributes:
        focal: ``(fx, fy)``.
        principal: ``(cx, cy)``.
    """

    focal: tuple[float, float] | None = None
    principal: tuple[float, float] | None = None

    def override(self, other: Camera | None) -> Camera:
        """This camera with the parts that ``other`` gives replaced."""
        if other is None:
            return self
        return Camera(other.focal or self.focal, other.principal or self.principal)

    def matrix(self, W: int, H: int) -> tuple[Tensor, bool]:
        """-> ``K`` (3, 3) float64 of a W × H image, and whether the focal is the default."""
        fx, fy = self.focal or (DEFAULT_FOCAL_FACTOR * max(W, H),) * 2
        cx, cy = self.principal or (W / 2, H / 2)
        K = intrinsics(*(torch.tensor(v, dtype=torch.float64) for v in (fx, fy, cx, cy)))
        return K, self.focal is None

    @classmethod
    def from_matrix(cls, K: Any, name: str = "K") -> Camera:
        """From a 3 × 3 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (list, array or tensor).

        Refused: another shape, a non-finite entry, a non-zero entry below the diagonal or skew
        ``K[0][1]`` (the model's projection has none), ``K[2] != [0, 0, 1]``, ``fx, fy <= 0``."""
        flat = _numbers(K, 9, name, "a 3x3 matrix [[fx,0,cx],[0,fy,cy],[0,0,1]] of finite numbers")
        if _shape(K) != (3, 3):
            raise InputError(f"{name} must be a 3x3 matrix [[fx,0,cx],[0,fy,cy],[0,0,1]], got {_show(K)}")
        m = np.asarray(flat).reshape(3, 3)
        if any(m[i, j] != 0 for i, j in _K_ZEROS) or m[2, 2] != 1:
            raise InputError(f"{name} must be [[fx,0,cx],[0,fy,cy],[0,0,1]] (upper-triangular, no skew, last row 0,0,1), "
                             f"got {_show(m)}")
        if m[0, 0] <= 0 or m[1, 1] <= 0:
            raise InputError(f"{name} must have positive focal lengths K[0][0], K[1][1] in pixels, got {_show(m)}")
        return cls((float(m[0, 0]), float(m[1, 1])), (float(m[0, 2]), float(m[1, 2])))


def parse_camera(value: Any, name: str = "camera") -> Camera:
    """A camera given as a :class:`Camera`, a 3 × 3 K, or an object with ``"K"`` or with
    ``"focal"`` (``f`` or ``[fx, fy]``) and/or ``"princpt"`` (``[cx, cy]``), as InterHand2.6M
    writes cameras (its ``campos`` / ``camrot`` are ignored). Every part is checked."""
    if isinstance(value, Camera):
        return Camera(None if value.focal is None else check_focal(value.focal, f"{name} focal"),
                      None if value.principal is None else check_principal(value.principal, f"{name} principal"))
    if not isinstance(value, Mapping):
        return Camera.from_matrix(value, name)
    unknown = sorted(set(value) - set(_CAMERA_KEYS) - set(_IGNORED_CAMERA_KEYS))
    if unknown:
        raise InputError(f"{name} has unknown keys {unknown}: give \"K\" or \"focal\" and/or \"princpt\"")
    if "K" in value:
        if "focal" in value or "princpt" in value:
            raise InputError(f"{name} gives both \"K\" and \"focal\"/\"princpt\": give one of the two")
        return Camera.from_matrix(value["K"], f"{name} K")
    if "focal" not in value and "princpt" not in value:
        raise InputError(f"{name} gives no intrinsics: give \"K\" or \"focal\" and/or \"princpt\"")
    return Camera(check_focal(value["focal"], f"{name} focal") if "focal" in value else None,
                  check_principal(value["princpt"], f"{name} princpt") if "princpt" in value else None)


def global_camera(focal: Any = None, principal: Any = None, K: Any = None,
                  names: tuple[str, str, str] = ("focal", "principal", "K")) -> Camera:
    """The camera of every image without its own: from ``focal`` and/or ``principal``, or from
    ``K`` (giving both is refused). ``names`` are the arguments' names in messages."""
    if K is not None:
        if focal is not None or principal is not None:
            raise InputError(f"{names[2]} gives the whole camera: drop {names[0]} / {names[1]}, or drop {names[2]}")
        return parse_camera(K, names[2])
    return Camera(None if focal is None else check_focal(focal, names[0]),
                  None if principal is None else check_principal(principal, names[1]))


class _DuplicateKey(ValueError):
    """A JSON object names a key twice (``json`` would keep the last silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice."""
    keys = [k for k, _ in pairs]
    twice = sorted({k for k, n in Counter(keys).items() if n > 1})
    if twice:
        raise _DuplicateKey(twice)
    return dict(pairs)


def _read_json(path: Path, what: str) -> Any:
    """A JSON file, or a one-line error naming it (also for a key given twice in an object)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}") from None
    except _DuplicateKey as e:
        raise InputError(f"{what} file {path} names {e.args[0]} more than once: keep one entry each") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split())
        raise CorruptFileError(f"{what} file {path} is not readable JSON ({reason}): fix or re-export it") from None


def read_camera_file(path: str | Path) -> Camera:
    """A camera JSON file: ``{"K": [[fx,0,cx],[0,fy,cy],[0,0,1]]}`` or
    ``{"focal": [fx, fy], "princpt": [cx, cy]}``."""
    path = Path(path)
    return parse_camera(_read_json(path, "camera"), f"camera file {path}")


class PerImage(NamedTuple):
    """Per-image boxes and cameras, keyed by image file name or path (see :func:`plan_images`)."""

    boxes: dict[str, Box]
    cameras: dict[str, Camera]


def _per_image_entry(key: str, entry: Any, where: str, per: PerImage) -> None:
    """Check one JSON entry ``{"bbox": [x,y,w,h], "K" | "focal" / "princpt": ...}`` into ``per``."""
    name = f"{where} entry {key!r}"
    if not isinstance(entry, Mapping):
        raise InputError(f"{name} must be an object with \"bbox\" and/or \"K\" / \"focal\" / \"princpt\", got {_show(entry)}")
    unknown = sorted(set(entry) - {_BOX_KEY, *_CAMERA_KEYS, *_IGNORED_CAMERA_KEYS})
    if unknown:
        raise InputError(f"{name} has unknown keys {unknown}: use \"bbox\", \"K\", \"focal\", \"princpt\"")
    if _BOX_KEY in entry:
        per.boxes[key] = check_box(entry[_BOX_KEY], f"{name} bbox")
    camera = {k: v for k, v in entry.items() if k != _BOX_KEY}
    if set(camera) & set(_CAMERA_KEYS):
        per.cameras[key] = parse_camera(camera, name)


def _csv_numbers(row: Mapping[str, str], columns: tuple[str, ...], name: str, check: Any) -> Any:
    """The checked value of a group of CSV columns: all empty -> None; some empty -> InputError."""
    cells = [(row.get(c) or "").strip() for c in columns]
    if not any(cells):
        return None
    if not all(cells):
        raise InputError(f"{name} gives only some of {', '.join(columns)}: fill all of them or none")
    return check(cells, name)


def _per_image_row(row: Mapping[str, str], where: str, per: PerImage) -> None:
    """Check one CSV row (columns ``image`` and any of x, y, w, h, fx, fy, cx, cy) into ``per``."""
    key = (row.get("image") or "").strip()
    name = f"{where} row {key!r}"
    if not key:
        raise InputError(f"{where} has a row without an image name: fill its 'image' column")
    box = _csv_numbers(row, _CSV_BOX, f"{name} x,y,w,h", check_box)
    if box is not None:
        per.boxes[key] = box
    fy = (row.get("fy") or "").strip()
    focal = _csv_numbers({**row, "fy": fy or (row.get("fx") or "")}, _CSV_FOCAL, f"{name} fx,fy", check_focal)
    principal = _csv_numbers(row, _CSV_PRINCIPAL, f"{name} cx,cy", check_principal)
    if focal is not None or principal is not None:
        per.cameras[key] = Camera(focal, principal)


def read_per_image(path: str | Path) -> PerImage:
    """Per-image boxes and cameras from a JSON or CSV file (by its suffix; docs/predict.md).

    JSON: ``{"photo.jpg": {"bbox": [x, y, w, h], "K": [[fx,0,cx],[0,fy,cy],[0,0,1]]},
    "b/photo.jpg": {"focal": [fx, fy], "princpt": [cx, cy]}}``. CSV: a header with ``image``
    and any of ``x, y, w, h`` (box), ``fx, fy`` (fy defaults to fx), ``cx, cy``; empty cells
    are not given. Every value is checked; an image named twice is refused."""
    path = Path(path)
    where = f"per-image file {path}"
    per = PerImage({}, {})
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                columns = [c.strip() for c in reader.fieldnames or []]
                rows = list(reader)
        except FileNotFoundError:
            raise InputError(f"{where} not found") from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise CorruptFileError(f"{where} is not readable CSV ({' '.join(str(e).split())}): fix or re-export it") from None
        allowed = {"image", *_CSV_BOX, *_CSV_FOCAL, *_CSV_PRINCIPAL}
        if "image" not in columns or set(columns) - allowed:
            raise InputError(f"{where} must have a header with 'image' and any of x,y,w,h,fx,fy,cx,cy, got {columns}")
        rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in rows]
        twice = sorted({k for k, n in Counter((r.get("image") or "").strip() for r in rows).items() if n > 1})
        if twice:
            raise InputError(f"{where} names {twice} more than once: keep one row per image")
        for row in rows:
            _per_image_row(row, where, per)
    else:
        data = _read_json(path, "per-image")
        if not isinstance(data, Mapping):
            raise InputError(f"{where} must hold a JSON object mapping image names to entries, got {_show(data)}")
        for key, entry in data.items():
            _per_image_entry(str(key), entry, where, per)
    return per


# ----------------------------------------------------------------------------- inputs and names
def expand_inputs(paths: Sequence[str | Path] | str | Path) -> tuple[list[Path], list[Path]]:
    """Files and folders -> (image paths, missing paths). Folders give their files with an
    :data:`IMAGE_SUFFIXES` suffix, sorted; a file given twice (also through its folder) counts once."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    missing: list[Path] = []
    for p in map(Path, items):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.exists():
            found.append(p)
        else:
            missing.append(p)
    seen: set[Path] = set()
    unique = []
    for p in found:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique, missing


def list_images(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Expand files and folders into image paths (sorted within folders, each file once).

    Raises:
        FileNotFoundError: a path does not exist, or no image was found."""
    found, missing = expand_inputs(paths)
    if missing:
        raise FileNotFoundError(f"no such image or folder: {missing[0]}")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {paths}")
    return found


def _collisions(names: Sequence[str]) -> list[list[int]]:
    """Groups (≥ 2) of indices whose names are equal ignoring case (as on macOS / Windows disks)."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n.casefold(), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _qualified(path: Path, root: Path, with_suffix: bool) -> str:
    """The path below ``root`` joined with ``_``, without its suffix unless ``with_suffix``."""
    parts = [*path.parent.relative_to(root).parts, path.stem]
    return "_".join(parts) + (f"_{path.suffix.lstrip('.')}" if with_suffix and path.suffix else "")


def output_names(paths: Sequence[Path | None]) -> list[str]:
    """One distinct output name per input (case-insensitively distinct).

    * the file stem when no other input has it (``photo.jpg`` -> ``photo``);
    * inputs sharing a stem: their folders below the group's common folder, then the stem
      (``a/photo.jpg``, ``b/photo.jpg`` -> ``a_photo``, ``b_photo``), plus the suffix where
      that is still shared (``photo.jpg``, ``photo.png`` -> ``photo_jpg``, ``photo_png``);
    * a name still taken gets ``-2``, ``-3``, ... in input order; a tensor input (``None``) is
      ``image0000``, ``image0001``, ... by position.
    """
    names = [p.stem if p is not None else f"image{k:04d}" for k, p in enumerate(paths)]
    for group in _collisions(names):
        files = [p for i in group if (p := paths[i]) is not None]
        if len(files) < len(group):
            continue
        full = [Path(os.path.normpath(p.absolute())) for p in files]
        root = Path(os.path.commonpath([str(f.parent) for f in full]))
        qualified = [_qualified(f, root, False) for f in full]
        counts = Counter(q.casefold() for q in qualified)
        for i, f, q in zip(group, full, qualified):
            names[i] = _qualified(f, root, True) if counts[q.casefold()] > 1 else q
    taken: set[str] = set()
    for i, n in enumerate(names):
        k, name = 1, n
        while name.casefold() in taken:
            k += 1
            name = f"{n}-{k}"
        names[i] = name
        taken.add(name.casefold())
    return names


def _matching_images(key: str, by_name: Mapping[str, list[int]], forms: Sequence[tuple[Path, ...]]) -> list[int]:
    """Indices of the images that a per-image key names: a relative key names the images whose
    path (as given, made absolute, or resolved) ends with its parts (``photo.jpg``,
    ``b/photo.jpg``); an absolute key (or one with ``..``) names the image at that place."""
    k = Path(key)
    if k.is_absolute() or ".." in k.parts:
        target = (Path.cwd() / k).resolve()
        return [i for i in by_name.get(target.name, []) if target in forms[i]]
    parts = tuple(q for q in k.parts if q != ".")
    if not parts:
        return []
    return [i for i in by_name.get(parts[-1], []) if any(f.parts[-len(parts):] == parts for f in forms[i])]


def _assign(values: Mapping[str, Any] | Sequence[Any] | None, paths: Sequence[Path | None], name: str,
            ) -> tuple[list[Any], list[str]]:
    """Per-image values -> (one value or None per input, keys that name no input).

    A mapping is keyed by file name or path (:func:`_matching_images`); the longest key naming
    an image wins (a shorter one it overrides counts as naming no input); a key that is the best
    match of several images is ambiguous (refused). A sequence gives one value (or None) per
    input, in order."""
    if values is None:
        return [None] * len(paths), []
    if not isinstance(values, Mapping):
        values = list(values)
        if len(values) != len(paths):
            raise InputError(f"{name} gives {len(values)} values for {len(paths)} images: give one per image "
                             "(None for the defaults) or a mapping from file name to value")
        return values, []
    forms = [() if p is None else (p.absolute(), p.resolve()) for p in paths]
    by_name: dict[str, list[int]] = {}
    for i, fs in enumerate(forms):
        for n in {f.name for f in fs}:
            by_name.setdefault(n, []).append(i)
    best: list[str | None] = [None] * len(paths)
    for key in map(str, values):
        for i in _matching_images(key, by_name, forms):
            if (b := best[i]) is None or len(Path(key).parts) > len(Path(b).parts):
                best[i] = key
    for key in sorted(set(filter(None, best))):
        hits = [str(p) for p, b in zip(paths, best) if b == key]
        if len(hits) > 1:
            raise InputError(f"{name} key {key!r} names {len(hits)} images ({', '.join(hits[:3])}): use a longer path "
                             "(e.g. folder/file.jpg)")
    unknown = sorted(set(map(str, values)) - set(filter(None, best)))
    lookup = {str(k): v for k, v in values.items()}
    return [None if b is None else lookup[b] for b in best], unknown


# ----------------------------------------------------------------------------- images
def _decode_error(path: Path, e: BaseException) -> CorruptFileError:
    return CorruptFileError(f"cannot read image {path} ({' '.join(str(e).split()) or type(e).__name__}): "
                            "re-save it as JPEG or PNG, or remove it")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of an image file as viewers show it (after its EXIF orientation), from its
    header only (nothing is decoded).

    Raises:
        CorruptFileError: not a readable image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            W, H = im.size
            orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS as e:
        raise _decode_error(path, e) from None
    return (H, W) if orientation in _TRANSPOSING_ORIENTATIONS else (W, H)


def _to_unit_rgb(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> (H, W, 3) float32 in [0, 1]. 16-bit single-channel images
    are scaled by 2¹⁶ − 1 (Pillow's RGB conversion would clip them at 255: almost white);
    16-bit RGB PNGs are already reduced to 8 bits by Pillow."""
    if im.mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.asarray(im, dtype=np.float32) / _SIXTEEN_BIT_MAX, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: str | Path) -> Tensor:
    """Read an image as viewers show it: (3, H, W) float32 in [0, 1], EXIF orientation
    applied (``PIL.ImageOps.exif_transpose``), 16-bit images scaled by their bit depth.

    Raises:
        CorruptFileError: not a readable image (empty, truncated, another format)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as e:
        raise _decode_error(path, e) from None
    return torch.from_numpy(_to_unit_rgb(upright)).permute(2, 0, 1).contiguous()


def check_image_size(W: int, H: int, label: str) -> None:
    """Refuse an image smaller than :data:`MIN_IMAGE_SIDE` a side or longer than
    :data:`MAX_ASPECT` : 1 (the crop would be mostly padding)."""
    if min(W, H) < MIN_IMAGE_SIDE:
        raise InputError(f"{label} is {W}x{H} px: at least {MIN_IMAGE_SIDE} px a side is needed; use a larger image")
    if max(W, H) > MAX_ASPECT * min(W, H):
        raise InputError(f"{label} is {W}x{H} px (aspect {max(W, H) / min(W, H):.1f}:1): at most {MAX_ASPECT:g}:1 is "
                         "supported; crop it around the hands first")


def check_image(image: Any, label: str = "image") -> Tensor:
    """A (3, H, W) floating-point tensor with finite values in [0, 1] and an accepted size
    (:func:`check_image_size`); returns it."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"{label} must be a (3, H, W) RGB tensor, got {shape}")
    if not image.is_floating_point():
        raise InputError(f"{label} must be a floating-point tensor in [0, 1], got {image.dtype}: use image.float() / 255")
    if not bool(torch.isfinite(image).all()):
        raise InputError(f"{label} contains NaN or inf: give finite values in [0, 1]")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 1:
        raise InputError(f"{label} has values in [{lo:g}, {hi:g}], outside [0, 1]: scale it (e.g. / 255) or clamp it")
    check_image_size(image.shape[2], image.shape[1], label)
    return image


def _check_in_image(W: int, H: int, box: Box | None, camera: Camera, label: str) -> None:
    """Refuse a box that does not overlap the W × H image or a principal point outside it."""
    if box is not None:
        x, y, w, h = box
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            raise InputError(f"the box x,y,w,h = {x:g},{y:g},{w:g},{h:g} lies outside the {W}x{H} image {label}: "
                             "give it in pixels of that image")
    if camera.principal is not None:
        cx, cy = camera.principal
        if not (0 <= cx <= W and 0 <= cy <= H):
            raise InputError(f"the principal point cx,cy = {cx:g},{cy:g} lies outside the {W}x{H} image {label}: "
                             "give it in pixels of that image")


# ----------------------------------------------------------------------------- planning
@dataclass
class ImageJob:
    """One input of a prediction run, planned before any model runs.

    Attributes:
        source: the image file (None for a tensor input); name: its output name
            (:func:`output_names`); box: ``(x, y, w, h)`` or None (whole image); camera: its
            :class:`Camera`; image: a (3, H, W) tensor input; size: ``(W, H)`` as shown;
            error: why it is skipped (set by :func:`plan_images`), else None; tag: how
            messages name a tensor input (default "the image tensor").
    """

    source: Path | None
    name: str
    box: Box | None
    camera: Camera
    image: Tensor | None = None
    size: tuple[int, int] | None = None
    error: HandflowError | None = None
    tag: str | None = None

    @property
    def file(self) -> Path:
        """The image file of a file input (a tensor input has none: TypeError)."""
        if self.source is None:
            raise TypeError(f"{self.label} is a tensor input, not a file")
        return self.source

    @property
    def label(self) -> str:
        """How messages name this input."""
        return str(self.source) if self.source is not None else self.tag or "the image tensor"


def plan_or_raise(images: Any, bbox: Any, focal: Any, principal: Any, K: Any, boxes: Any, cameras: Any) -> list[ImageJob]:
    """The API's planning (:func:`handflow.predict`, :meth:`handflow.predictor.Predictor.forward`):
    :func:`plan_images` with the global box and camera checked, unmatched per-image keys as a
    ``UserWarning``, and the first planning error raised."""
    jobs, unknown = plan_images(images, None if bbox is None else check_box(bbox), global_camera(focal, principal, K),
                                boxes, cameras)
    warn_unknown_keys(unknown, stacklevel=4)
    for job in jobs:
        if job.error is not None:
            raise job.error
    return jobs


def warn_unknown_keys(unknown: Sequence[str], shown: int = 5, stacklevel: int = 3) -> None:
    """A ``UserWarning`` naming per-image keys that name no input image (not an error)."""
    if unknown:
        more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
        warnings.warn(f"per-image boxes / cameras name no input image: {', '.join(unknown[:shown])}{more}",
                      stacklevel=stacklevel)


def plan_images(
    images: Sequence[str | Path] | str | Path | Tensor | Sequence[Tensor],
    bbox: Box | None = None,
    camera: Camera | None = None,
    boxes: Mapping[str, Any] | Sequence[Any] | None = None,
    cameras: Mapping[str, Any] | Sequence[Any] | None = None,
    names: tuple[str, str] = ("boxes", "cameras"),
) -> tuple[list[ImageJob], list[str]]:
    """Inputs -> one :class:`ImageJob` per image, and the per-image keys that name no image.

    Reads only image headers. Each job gets its output name, its box (per-image, else
    ``bbox``) and camera (``camera`` with the per-image parts replaced); an unreadable file,
    a size out of range, a box outside the image or a principal point outside it set its
    ``error`` (nothing raised), so a caller may skip it or raise it.

    Args:
        images: files / folders (expanded by :func:`list_images`; a missing path raises
            ``FileNotFoundError``), or tensors in [0, 1] (checked: InputError): one (3, H, W)
            image, a (B, 3, H, W) batch or a list of (3, H_i, W_i) images.
        bbox: checked ``(x, y, w, h)`` for every image (:func:`check_box`).
        camera: the camera of images without their own (default: all defaults).
        boxes: per image, a mapping from file name or path (``photo.jpg``, ``b/photo.jpg``, an
            absolute path; the longest key naming an image wins) or a sequence with one entry (or
            None) per image; values as :func:`check_box` takes them.
        cameras: per image, as ``boxes``; values as :func:`parse_camera` takes them.
        names: how messages name ``boxes`` and ``cameras``.
    """
    camera = camera or Camera()
    tensors = _tensor_images(images)
    if tensors is not None:
        paths: list[Path | None] = [None] * len(tensors)
        jobs = [ImageJob(None, n, bbox, camera, image=t, tag=tag) for (t, tag), n in zip(tensors, output_names(paths))]
    else:
        paths = list(list_images(cast("Sequence[str | Path] | str | Path", images)))  # not tensors
        jobs = [ImageJob(p, n, bbox, camera) for p, n in zip(paths, output_names(paths))]
    own_boxes, unknown_boxes = _assign(boxes, paths, names[0])
    own_cameras, unknown_cameras = _assign(cameras, paths, names[1])
    for job, b, c in zip(jobs, own_boxes, own_cameras):
        where = f"{names[0]}[{job.label!r}]"
        job.box = job.box if b is None else check_box(b, where)
        job.camera = camera if c is None else camera.override(parse_camera(c, f"{names[1]}[{job.label!r}]"))
        try:
            job.size = (job.image.shape[2], job.image.shape[1]) if job.image is not None else image_size(job.file)
            check_image_size(*job.size, job.label)
            _check_in_image(*job.size, job.box, job.camera, job.label)
        except HandflowError as e:
            job.error = e
    return jobs, sorted(set(unknown_boxes) | set(unknown_cameras))


def _tensor_images(images: Any) -> list[tuple[Tensor, str]] | None:
    """Tensor inputs as checked (3, H, W) images with their names in messages; None for paths."""
    if isinstance(images, Tensor):
        if images.dim() == 4:
            return [(check_image(t, f"image tensor {b}"), f"image tensor {b}") for b, t in enumerate(images)]
        if images.dim() != 3:
            raise InputError(f"the image tensor must be a (3, H, W) RGB image or a (B, 3, H, W) batch, got {tuple(images.shape)}")
        return [(check_image(images, "the image tensor"), "the image tensor")]
    if isinstance(images, Sequence) and not isinstance(images, str) and images and all(isinstance(t, Tensor) for t in images):
        return [(check_image(t, f"image tensor {b}"), f"image tensor {b}") for b, t in enumerate(images)]
    return None


# ----------------------------------------------------------------------------- prediction
@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        path: the input image.
        z0_params: (218,) physical parameters of the z = 0 estimate.
        sample_params: (S, 218).
        z0_joints: (42, 3) camera-frame mm.
        sample_joints: (S, 42, 3) camera-frame mm.
        K_crop: (3, 3) crop intrinsics; crop: (3, s, s) the network input.
        focal: focal length ``fx`` used (pixels of the full image); focal_is_default: whether
            it was the documented default.
        meshes: on request, ``{side: vertices (1+S, V, 3)}`` (index 0 = z = 0 estimate).
        K: (3, 3) float64 intrinsics of the full image; box: (4,) float64 square crop box
            ``[x0, y0, side, side]`` in its pixels.
    """

    path: Path | None
    z0_params: Tensor
    sample_params: Tensor
    z0_joints: Tensor
    sample_joints: Tensor
    K_crop: Tensor
    crop: Tensor
    focal: float
    focal_is_default: bool
    meshes: dict[str, Tensor] = field(default_factory=dict)
    K: Tensor | None = None
    box: Tensor | None = None


def crop_camera(W: int, H: int, camera: Camera, bbox: Box | None, size: int) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Intrinsics of a W × H image and of its square crop.

    Returns:
        K (3, 3) and K_crop (3, 3) float64, the square box (4,) ``[x0, y0, side, side]`` (the
        given box, or the whole image, widened to a square about its centre), and whether the
        focal length is the default."""
    K, focal_is_default = camera.matrix(W, H)
    x, y, w, h = bbox if bbox is not None else (0.0, 0.0, float(W), float(H))
    side = max(w, h)
    box = torch.tensor([x + w / 2 - side / 2, y + h / 2 - side / 2, side, side], dtype=torch.float64)
    return K, crop_intrinsics(K, box, size), box, focal_is_default


def check_finite(p: Prediction, label: str) -> None:
    """Raise :class:`ModelOutputError` if any output of ``p`` is NaN or inf."""
    parts = {"z = 0 estimate": p.z0_params, "samples": p.sample_params, "z = 0 joints": p.z0_joints,
             "sample joints": p.sample_joints, **{f"{side} mesh": v for side, v in p.meshes.items()}}
    bad = [name for name, v in parts.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelOutputError(f"the model gave non-finite values (NaN or inf) in the {', '.join(bad)} for {label}: nothing "
                               "written for it; the checkpoint has probably diverged (use an earlier one or retrain)")


def iter_predictions(model: Any, jobs: Sequence[ImageJob], samples: int, meshes: bool = False, seed: int = 0,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[ImageJob, Prediction | HandflowError]]:
    """Predict planned jobs in batches of ``batch_size`` (one backbone pass each): yields, in job
    order and as soon as a job's batch is done, ``(job, Prediction)``, or ``(job, error)`` for a
    job planned with an error, an image that cannot be decoded (CorruptFileError), or a
    non-finite output (ModelOutputError).

    ``model``: a :class:`~handflow.predictor.Predictor`, a checkpoint path or a loaded training
    module. One sampling generator (``seed``) runs through the batches in order: an image's
    samples depend on the seed and on its batch (docs/predict.md); the z = 0 estimate on neither."""
    # cycle: handflow.predictor imports this module
    from handflow.predictor import as_predictor, load_job_images

    batch_size = check_batch_size(batch_size)
    predictor = as_predictor(model)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        images = load_job_images(chunk)
        ok = [i for i, im in enumerate(images) if isinstance(im, Tensor)]
        loaded = [im for im in images if isinstance(im, Tensor)]  # the images of ``ok``
        results: dict[int, Prediction | HandflowError] = {}
        if ok:
            batch = predictor.predict_checked(loaded, [chunk[i].camera for i in ok], [chunk[i].box for i in ok],
                                              samples, meshes, g, [chunk[i].source for i in ok])
            for i, p in zip(ok, batch):
                try:
                    check_finite(p, chunk[i].label)
                    results[i] = p
                except ModelOutputError as e:
                    results[i] = e
        for i, job in enumerate(chunk):
            res = results.get(i, images[i])
            yield job, res  # type: ignore[misc]


def predict(
    model: Any,
    images: Sequence[str | Path] | str | Path | Tensor | Sequence[Tensor],
    samples: int = 100,
    bbox: Any = None,
    focal: Any = None,
    meshes: bool = False,
    seed: int = 0,
    *,
    principal: Any = None,
    K: Any = None,
    boxes: Mapping[str, Any] | Sequence[Any] | None = None,
    cameras: Mapping[str, Any] | Sequence[Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Prediction]:
    """Predict two-hand distributions for images, in batches (no Lightning needed).

    Every argument and every image header is checked before the model is loaded or run;
    the first problem raises (one line naming it and the fix).

    Args:
        model: a checkpoint path, a :class:`~handflow.predictor.Predictor`
            (:func:`handflow.load_model`) or a loaded training module
            (:func:`handflow.training.load_checkpoint`).
        images: paths / folders, or float tensors in [0, 1]: one (3, H, W) image, a (B, 3, H, W)
            batch or a list of (3, H_i, W_i) images.
        samples: S ≥ 0 samples per image (0: the z = 0 estimate only).
        bbox: ``(x, y, w, h)`` box around both hands in image pixels (default: whole image).
        focal: focal length in pixels, ``f`` or ``(fx, fy)`` (default:
            ``DEFAULT_FOCAL_FACTOR × max(W, H)``).
        meshes: also return camera-frame vertices.
        seed: sampling seed (one generator runs through the batches in order).
        principal: principal point ``(cx, cy)`` in pixels (default: the image centre).
        K: a 3 × 3 intrinsics matrix (or ``{"K": ...}`` / ``{"focal": ..., "princpt": ...}``)
            instead of ``focal`` / ``principal``.
        boxes: per-image boxes: ``{file name or path: (x, y, w, h)}`` or one per image (None:
            ``bbox``); see :func:`plan_images`.
        cameras: per-image cameras: ``{file name or path: K | {"K"} | {"focal", "princpt"} |
            Camera}`` or one per image; their parts replace the global camera's.
        batch_size: images per backbone pass.

    Returns:
        one :class:`Prediction` per image (``z0_joints`` (42, 3), ``sample_joints`` (S, 42, 3) mm, ...).

    Raises:
        InputError: a bad argument, image tensor, size, box or principal point.
        CorruptFileError: an unreadable image. ModelOutputError: a non-finite output.
        FileNotFoundError: a missing path, or no images found.

    Examples:
        >>> import torch, handflow
        >>> from handflow.config import load_config
        >>> from handflow.predictor import Predictor
        >>> model = Predictor.from_config(load_config("cpu", ["data.image_size=64", "model.flow_hidden=32"]))  # or "last.ckpt"
        >>> preds = handflow.predict(model, torch.rand(3, 3, 80, 100), samples=5, focal=120.0, batch_size=2)
        >>> len(preds), preds[0].sample_joints.shape, preds[0].K[0, 0].item()
        (3, torch.Size([5, 42, 3]), 120.0)
    """
    samples, batch_size = check_samples(samples), check_batch_size(batch_size)
    jobs = plan_or_raise(images, bbox, focal, principal, K, boxes, cameras)
    out = []
    for _, res in iter_predictions(model, jobs, samples, meshes, seed, batch_size):
        if isinstance(res, HandflowError):
            raise res
        out.append(res)
    return out


# ----------------------------------------------------------------------------- writing
def check_mesh_format(fmt: str | None, name: str = "meshes") -> str | None:
    """None, or one of :data:`MESH_FORMATS` (any case) whose writer (trimesh) is importable."""
    if fmt is None:
        return None
    if str(fmt).lower() not in MESH_FORMATS:
        raise InputError(f"{name} must be one of {', '.join(MESH_FORMATS)}, got {fmt!r}")
    # lazy: trimesh is the [viz] extra
    try:
        import trimesh  # noqa: F401
    except ImportError:
        raise InputError(f"{name} needs trimesh: install handflow[viz] (pip install 'handflow[viz]'), or drop {name}") from None
    return str(fmt).lower()


def write_prediction(p: Prediction, name: str, out: str | Path, module: Any, meshes: str | None = None, html: bool = True) -> str:
    """Write ``<name>.npz`` (params, joints, cameras), ``<name>.png`` (figure), optionally
    ``<name>.html`` (3D view, with ≥ 1 sample) and ``<name>_z0.<meshes>`` (obj / ply / glb
    through trimesh). Returns the summary line."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {k: v.numpy() for k, v in (("K", p.K), ("box", p.box)) if v is not None}
    arrays: dict[str, Any] = {"z0_params": p.z0_params.numpy(), "sample_params": p.sample_params.numpy(),
                              "z0_joints": p.z0_joints.numpy(), "sample_joints": p.sample_joints.numpy(),
                              "K_crop": p.K_crop.numpy(), "focal": p.focal, **extra}
    np.savez(out / f"{name}.npz", **arrays)
    spread = float(sample_spread(p.sample_joints[None])[0]) if len(p.sample_joints) > 1 else 0.0
    plot_prediction(p.crop, p.K_crop, p.z0_joints, p.sample_joints, out / f"{name}.png",
                    title=f"{name}: {len(p.sample_joints)} samples, mean spread {spread:.1f} mm")
    if html and len(p.sample_joints):
        write_samples_html(p.z0_joints, p.sample_joints, out / f"{name}.html")
    if meshes:
        _write_meshes(p, module, out / name, meshes)
    fy = float(p.K[1, 1]) if p.K is not None else p.focal
    focal = f"{p.focal:.0f}" if round(fy) == round(p.focal) else f"{p.focal:.0f}x{fy:.0f}"
    return (f"{name}: wrist depth {p.z0_joints[20, 2]:.0f} mm, spread {spread:.1f} mm, focal {focal} px"
            + (" (default)" if p.focal_is_default else ""))


def write_predictions(preds: list[Prediction], out: str | Path, module: Any, meshes: str | None = None,
                      html: bool = True) -> list[str]:
    """Write every prediction (:func:`write_prediction`) under its :func:`output_names` name
    (the mesh format is checked before anything is written). Returns one summary line per image."""
    meshes = check_mesh_format(meshes)
    names = output_names([p.path for p in preds])
    return [write_prediction(p, n, out, module, meshes, html) for p, n in zip(preds, names)]


def _write_meshes(p: Prediction, module: Any, base: Path, fmt: str) -> None:
    # lazy: trimesh is the [viz] extra
    import trimesh

    ext = check_mesh_format(fmt)
    hand = module.hand_model
    parts = []
    for side, color in (("right", (228, 87, 46, 255)), ("left", (46, 134, 171, 255))):
        m = trimesh.Trimesh(p.meshes[side][0].numpy(), hand.faces_for(side).numpy(), process=False)
        # a mesh built without texture has ColorVisuals (trimesh 4.0, the lower bound, leaves .visual untyped)
        m.visual.vertex_colors = color  # type: ignore[union-attr, unused-ignore]
        parts.append(m)
    trimesh.util.concatenate(parts).export(f"{base}_z0.{ext}")


class Manifest:
    """``OUT/index.csv``: one row per input, in input order: ``input`` (the path as given),
    ``name`` (output name, empty if none), ``status`` (``ok``, ``skipped`` or ``pending``) and
    ``reason`` (why skipped). Rewritten atomically on every change, so it is current after
    each image and a stopped run shows what is pending."""

    COLUMNS = ("input", "name", "status", "reason")

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / MANIFEST
        self.rows: dict[str, dict[str, str]] = {}

    def set(self, source: str, name: str, status: str, reason: str = "", flush: bool = True) -> None:
        """Add or update the row of ``source``; rewrite the file unless ``flush`` is False."""
        self.rows[source] = {"input": source, "name": name, "status": status, "reason": " ".join(reason.split())}
        if flush:
            self.write()

    def write(self) -> None:
        """Write all rows (temporary file, then an atomic rename)."""
        with atomic_path(self.path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, self.COLUMNS)
            w.writeheader()
            w.writerows(self.rows.values())
