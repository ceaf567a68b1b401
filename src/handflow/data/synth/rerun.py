"""Reruns of ``handflow synth``: the settings record, refusal of other settings, ``--overwrite``.

Before it writes any image, :func:`prepare_output` records the dataset's settings
(``SynthConfig.to_json()``, :func:`handflow.config.settings_of`, and their fingerprint,
:func:`handflow.fingerprint.check_or_record`) in
``ROOT/.synth_settings.json``; every shard part also stores them with its ``[i, n]``. A rerun
with the same settings resumes (finished shards are skipped, the bytes stay those of an
uninterrupted run); other settings, or another shard count ``n`` than the parts already
written, are refused with one line naming the differences. A folder holding synth's outputs
(``images/``, ``annotations/``, ``synth_summary.json``) but no record is refused too.

``overwrite`` first deletes exactly the files the recorded settings write (the plan's image
paths, the annotation, shard, skeleton and summary files, their interrupted ``.tmp-*``
files, then the record) and the folders this leaves empty; other files stay. It runs only
unsharded (``n == 1``): shard processes running in parallel would delete each other's work.
"""

from __future__ import annotations

import re
from pathlib import Path

from handflow.config.settings import settings_of
from handflow.data.synth.cameras import camera_name
from handflow.data.synth.ih_writer import SHARD_DIR, image_rel_path, split_files
from handflow.data.synth.settings import FORMAT_VERSION, SynthConfig
from handflow.errors import CorruptFileError, InputError
from handflow.fingerprint import check_or_record, record_settings, recorded_settings, remove_outputs

__all__ = ["SETTINGS_FILE", "SUMMARY_FILE", "RERUN_FIX", "prepare_output", "check_settings", "clear_dataset",
           "dataset_files", "shard_counts"]

SETTINGS_FILE = ".synth_settings.json"
SUMMARY_FILE = "synth_summary.json"
RERUN_FIX = "rerun with those settings to resume, or pass --overwrite to replace it, or use another --out"
_SHARD_RE = re.compile(r"^\.?(shard_\d+_of_(\d+)\.json)(\.tmp-\d+)?$")


def _outputs(root: Path) -> list[Path]:
    """The top-level files and folders synth writes (besides the record)."""
    return [root / "images", root / "annotations", root / SUMMARY_FILE]


def _shard_names(root: Path, splits: tuple[str, ...], with_tmp: bool) -> dict[Path, int]:
    """``{shard part path: its shard count n}`` of the parts under ``annotations/<split>/.shards``
    (``with_tmp``: also the parts whose atomic write was interrupted)."""
    found: dict[Path, int] = {}
    for s in splits:
        d = Path(root) / "annotations" / s / SHARD_DIR
        for p in d.iterdir() if d.is_dir() else ():
            m = _SHARD_RE.match(p.name)
            if m and (with_tmp or (m.group(3) is None and not p.name.startswith("."))):
                found[d / m.group(1)] = int(m.group(2))
    return found


def shard_counts(root: Path, splits: tuple[str, ...]) -> set[int]:
    """The shard counts ``n`` of the finished shard parts in ``root`` (empty if none)."""
    return set(_shard_names(root, splits, with_tmp=False).values())


def check_settings(root: Path, config: SynthConfig, n: int, record: bool = True) -> None:
    """Refuse ``root`` if it was written with other settings than ``config`` or holds shard
    parts of another count than ``n``; record ``config`` if there is no record yet (``record``;
    otherwise a folder without a record, from an older handflow, is accepted as it is).

    Raises:
        SettingsMismatch: other settings, or synth outputs without a record (``record``).
        CorruptFileError: the record is unreadable.
    """
    root = Path(root)
    counts = shard_counts(root, config.splits)  # the shard layout, as the parts on disk record it
    found = {"shards": min(counts) if len(counts) == 1 else sorted(counts)} if counts else None
    check_or_record(root / SETTINGS_FILE, settings_of(config), what=str(root), fix=RERUN_FIX, outputs=_outputs(root),
                    record=record, found=found, expected=found and {"shards": n})


def dataset_files(root: Path, config: SynthConfig, shard_parts: list[Path] | None = None) -> list[Path]:
    """Every file a run with ``config`` writes under ``root`` (whether written yet or not):
    the plan's images, the annotation and extra files, ``skeleton.txt``, the summary, and the
    shard parts ``shard_parts`` (default: those present)."""
    # cycle: generate imports this module
    from handflow.data.synth.generate import make_plan
    root = Path(root)
    files = [root / "images" / p.split / image_rel_path(p.capture, p.seq_name, camera_name(k), p.frame_start + f)
             for p in make_plan(config) for f in range(p.length) for k in range(config.cameras_for(p.split))]
    for s in config.splits:
        files += split_files(root, s).values()
    if shard_parts is None:
        shard_parts = list(_shard_names(root, config.splits, with_tmp=True))
    return files + shard_parts + [root / "annotations" / "skeleton.txt", root / SUMMARY_FILE]


def clear_dataset(root: Path) -> int:
    """Delete the dataset recorded in ``root`` (see the module docstring); returns the number
    of files deleted (0 if ``root`` holds no dataset).

    Raises:
        SettingsMismatch: synth outputs without a record (what they are is unknown).
        CorruptFileError: the record is unreadable or from another format version.
    """
    root = Path(root)
    old = recorded_settings(root / SETTINGS_FILE, _outputs(root), str(root))
    if old is None:
        return 0
    try:
        cfg = SynthConfig.from_json(old)
    except (TypeError, ValueError) as e:
        raise CorruptFileError(f"{root / SETTINGS_FILE} does not hold synth settings ({e}): move the folder's "
                               "files away yourself, or use another --out") from None
    if cfg.format_version != FORMAT_VERSION:
        raise CorruptFileError(f"{root} holds a synth dataset of format version {cfg.format_version} (this handflow "
                               f"writes {FORMAT_VERSION}), whose files cannot be listed: move them away yourself, or "
                               "use another --out")
    n = remove_outputs(root, dataset_files(root, cfg))
    return n + remove_outputs(root, [root / SETTINGS_FILE])  # last: an interrupted clear can be rerun


def prepare_output(root: Path, config: SynthConfig, n: int, overwrite: bool = False) -> int:
    """Make ``root`` ready for shard ``i/n`` of ``config``: clear it first (``overwrite``),
    then :func:`check_settings` with recording. Returns the number of files deleted."""
    cleared = 0
    if overwrite:
        if n > 1:
            raise InputError(f"--overwrite cannot be combined with --shard i/{n} (shards running in parallel would "
                             "delete each other's output): replace the dataset in one run without --shard, or move "
                             "it away before starting the shards, or use another --out")
        cleared = clear_dataset(root)
        record_settings(root / SETTINGS_FILE, settings_of(config))  # the user's files left behind are no obstacle
    check_settings(root, config, n, record=True)
    return cleared
