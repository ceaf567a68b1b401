"""Reruns of ``handflow synth`` (issue #15): the settings are recorded before any image; the
same settings resume byte for byte, other settings (or another shard count) are refused with
one line naming them, ``--overwrite`` replaces exactly synth's files, and a folder holding
synth's files without a record is never mixed into nor deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from handflow.data.synth import generate as gen
from handflow.data.synth import ih_writer as W
from handflow.errors import CorruptFileError, HandflowError, InputError, SettingsMismatch

TINY = dict(frames=3, cameras=2, image_size=32, seed=1)
FIX = "rerun with those settings to resume, or pass --overwrite to replace it, or use another --out"


@pytest.fixture(scope="module")
def backends() -> gen.Backends:
    torch.set_num_threads(1)
    return gen.default_backends("openhand")


def _cfg(**kw) -> gen.SynthConfig:
    return gen.SynthConfig(**{**TINY, **kw})


def _run(root: Path, backends: gen.Backends, shard: tuple[int, int] = (0, 1), **kw) -> dict:
    """``generate`` of ``TINY`` updated by the SynthConfig fields in ``kw`` (others go to generate)."""
    fields = set(gen.SynthConfig.__dataclass_fields__)
    cfg = _cfg(**{k: v for k, v in kw.items() if k in fields})
    return gen.generate(root, cfg, shard=shard, backends=backends, progress=False,
                        **{k: v for k, v in kw.items() if k not in fields})


def _snapshot(root: Path, mtimes: bool = True) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (hidden ones too) with its bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns if mtimes else 0)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _visible(root: Path) -> dict[str, bytes]:
    """The dataset's files as a reader sees them (no shard parts)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".shards" not in p.parts}


def _kill_after_first_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next generate dies (like Ctrl-C) in its second sequence, after the first one's images."""
    from handflow.data.synth import frames

    real, calls = frames.process_sequence, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(frames, "process_sequence", dying)


def _jpgs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "images").rglob("*.jpg")}


def _referenced(root: Path, splits=("train", "val", "test")) -> set[str]:
    out = set()
    for s in splits:
        data = json.loads(W.split_files(root, s)["data"].read_text())
        out |= {f"images/{s}/{im['file_name']}" for im in data["images"]}
    return out


# ----------------------------------------------------------------------------- (a), (b): refused
def test_killed_run_then_other_image_size_is_refused_and_nothing_changes(tmp_path, backends, monkeypatch):
    root = tmp_path / "synth"
    _kill_after_first_sequence(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(root, backends, image_size=48)
    monkeypatch.undo()
    assert _jpgs(root) and not (root / "annotations").exists()  # images of the first sequence, no annotation
    before = _snapshot(root)
    with pytest.raises(SettingsMismatch) as e:
        _run(root, backends, image_size=32)
    assert str(e.value) == f"{root} was written with image_size=48 (now 32): {FIX}"
    assert "\n" not in str(e.value) and isinstance(e.value, HandflowError)
    assert _snapshot(root) == before
    # the same settings resume it
    res = _run(root, backends, image_size=48)
    assert not res["skipped"] and res["summary"] is not None


def test_unfinished_sharded_run_then_other_seed_or_size_is_refused(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends, shard=(0, 2), image_size=48, seed=2)
    before = _snapshot(root)
    for shard in ((0, 2), (1, 2)):
        with pytest.raises(SettingsMismatch, match=r"written with image_size=48, seed=2 \(now 32, 1\): rerun"):
            _run(root, backends, shard=shard)
    with pytest.raises(SettingsMismatch, match=r"written with image_size=48, seed=2, shards=2 \(now 32, 1, 1\)"):
        _run(root, backends)
    with pytest.raises(SettingsMismatch, match=r"written with seed=2 \(now 1\)"):
        _run(root, backends, shard=(1, 2), image_size=48, seed=1)
    assert _snapshot(root) == before
    # with the seed and size right, another shard count is refused too
    with pytest.raises(SettingsMismatch, match=r"written with shards=2 \(now 3\)"):
        _run(root, backends, shard=(1, 3), image_size=48, seed=2)
    assert _snapshot(root) == before


def test_merge_refuses_other_settings(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends)
    with pytest.raises(SettingsMismatch, match=r"cameras=2 \(now 3\)"):
        gen.merge(root, 1, _cfg(cameras=3))


def test_shard_parts_are_checked_by_the_shared_helper(tmp_path):
    """A shard part stores ``stored_settings`` of the config; a part of those settings is done
    (also one written before parts had a fingerprint), another is redone by its shard and
    refused by the merge, naming the part, the setting and both fingerprints."""
    from handflow.fingerprint import settings_fingerprint, stored_settings

    cfg, other = _cfg().to_json(), _cfg(seed=5).to_json()
    empty = {"images": [], "annotations": [], "camera": {}, "joint_3d": {}, "mano": {}, "visibility": {}, "stats": {}}
    part = {**gen._empty_part(_cfg(), (0, 1)), **empty}
    assert list(part)[:3] == ["config", "fingerprint", "shard"] and part["config"] == cfg  # the bytes of before
    assert {k: part[k] for k in ("config", "fingerprint")} == stored_settings(cfg)
    W.write_shard(tmp_path, "train", 0, 1, part)
    assert W.shard_done(tmp_path, ["train"], 0, 1, cfg) and not W.shard_done(tmp_path, ["train"], 0, 1, other)
    assert W.merge_shards(tmp_path, "train", 1, cfg) == {}
    with pytest.raises(SettingsMismatch) as e:
        W.merge_shards(tmp_path, "train", 1, other)
    assert str(e.value) == (f"{W.shard_path(tmp_path, 'train', 0, 1)} was written with seed=1, fingerprint="
                            f"{settings_fingerprint(cfg)} (now 5, {settings_fingerprint(other)}): delete it and rerun its shard")
    old = {k: v for k, v in part.items() if k != "fingerprint"}  # a part written before parts had a fingerprint
    W.write_shard(tmp_path, "train", 0, 1, old)
    assert W.shard_done(tmp_path, ["train"], 0, 1, cfg) and W.merge_shards(tmp_path, "train", 1, cfg) == {}
    with pytest.raises(SettingsMismatch, match=r"written with seed=1, fingerprint=unset \(now 5, "):
        W.merge_shards(tmp_path, "train", 1, other)


# ----------------------------------------------------------------------------- (c), (g): overwrite
def test_finished_dataset_other_frames_refused_then_overwrite_leaves_only_new_files(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends, frames=6)
    old_images = _jpgs(root)
    with pytest.raises(SettingsMismatch, match=r"written with frames=6 \(now 3\)"):
        _run(root, backends)
    assert _jpgs(root) == old_images
    # an interrupted atomic write of an old image is synth's too
    some = root / sorted(old_images)[-1]
    (some.parent / f".{some.name}.tmp-12345").write_bytes(b"half")
    res = _run(root, backends, overwrite=True)
    assert res["cleared"] >= len(old_images) and res["summary"]["frames"] == 3
    assert _jpgs(root) == _referenced(root) and old_images - _jpgs(root)  # old ones existed and are gone
    assert not list(root.rglob("*.tmp-*"))
    assert sorted(p.name for p in root.glob("annotations/*/.shards/*")) == ["shard_0_of_1.json"] * 3
    fresh = tmp_path / "fresh"
    _run(fresh, backends)
    assert _visible(root) == _visible(fresh)
    assert not [d for d in root.rglob("*") if d.is_dir() and not any(d.iterdir())]  # no empty folder left


def test_overwrite_keeps_the_users_files(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends, seed=2)
    mine = {root / "notes.txt": b"my notes", root / "images" / "README.md": b"readme",
            root / "images" / "train" / "mine.jpg": b"not synth's", root / "annotations" / "train" / "my.json": b"{}"}
    for p, b in mine.items():
        p.write_bytes(b)
    _run(root, backends, overwrite=True)
    assert {p: p.read_bytes() for p in mine} == mine
    assert _jpgs(root) - {"images/train/mine.jpg"} == _referenced(root)
    assert json.loads((root / "synth_summary.json").read_text())["seed"] == 1


def test_files_without_a_settings_record_are_refused_even_with_overwrite(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends)
    (root / ".synth_settings.json").unlink()  # as an older handflow (or something else) left it
    before = _snapshot(root)
    for overwrite in (False, True):
        with pytest.raises(SettingsMismatch, match="no settings record"):
            _run(root, backends, overwrite=overwrite)
    assert _snapshot(root) == before
    # foreign files alone (no synth output) do not stop a new dataset
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run(other, backends)["summary"] is not None and (other / "notes.txt").read_text() == "mine"


def test_overwrite_is_refused_with_shards(tmp_path, backends):
    root = tmp_path / "synth"
    _run(root, backends, shard=(0, 2))
    before = _snapshot(root)
    with pytest.raises(InputError, match="--overwrite cannot be combined with --shard"):
        _run(root, backends, shard=(1, 2), overwrite=True)
    assert _snapshot(root) == before


# ----------------------------------------------------------------------------- (d), (e): resume
def test_same_settings_resume_byte_identical_and_record_settings(tmp_path, backends, monkeypatch):
    from handflow.fingerprint import settings_fingerprint

    ref = tmp_path / "ref"
    _run(ref, backends)
    rec = json.loads((ref / ".synth_settings.json").read_text())
    assert rec == {"settings": _cfg().to_json(), "fingerprint": settings_fingerprint(_cfg().to_json())}
    part = json.loads(W.shard_path(ref, "train", 0, 1).read_text())
    assert part["config"] == rec["settings"] and part["fingerprint"] == rec["fingerprint"] and part["shard"] == [0, 1]
    root = tmp_path / "synth"
    _kill_after_first_sequence(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(root, backends)
    monkeypatch.undo()
    assert (root / ".synth_settings.json").read_bytes() == (ref / ".synth_settings.json").read_bytes()
    assert not _run(root, backends)["skipped"]
    assert _visible(root) == _visible(ref)
    done = _snapshot(root, mtimes=False)
    assert _run(root, backends)["skipped"] and _snapshot(root, mtimes=False) == done


def test_other_workers_and_progress_resume(tmp_path, backends):
    ref = tmp_path / "ref"
    _run(ref, backends)
    root = tmp_path / "synth"
    _run(root, backends, shard=(0, 2), workers=1)
    res = gen.generate(root, _cfg(), shard=(1, 2), workers=2, backends=backends, progress=True)
    assert res["summary"] is not None and not res["cleared"]
    assert _visible(root) == _visible(ref)


# ----------------------------------------------------------------------------- (f): CLI
def test_cli_refuses_other_settings_and_overwrite_replaces(tmp_path):
    from typer.testing import CliRunner

    from handflow.cli import app

    root = tmp_path / "synth"
    args = ["synth", "--out", str(root), "--frames", "3", "--cameras", "2", "--seed", "1", "--no-progress"]
    r = CliRunner().invoke(app, args + ["--image-size", "48"])
    assert r.exit_code == 0, r.output
    before = _snapshot(root)
    r = CliRunner().invoke(app, args + ["--image-size", "32"])
    assert r.exit_code != 0 and "image_size=48 (now 32)" in r.output + str(r.exception) and _snapshot(root) == before
    r = CliRunner().invoke(app, args + ["--image-size", "32", "--overwrite", "--shard", "0/2"])
    assert r.exit_code != 0 and _snapshot(root) == before
    r = CliRunner().invoke(app, args + ["--image-size", "32", "--overwrite", "--merge"])
    assert r.exit_code != 0 and _snapshot(root) == before
    r = CliRunner().invoke(app, args + ["--image-size", "32", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "deleted" in r.output
    data = json.loads(W.split_files(root, "train")["data"].read_text())
    assert {im["width"] for im in data["images"]} == {32} and _jpgs(root) == _referenced(root)
    r = CliRunner().invoke(app, args + ["--image-size", "32", "--workers", "2"])
    assert r.exit_code == 0 and "already finished" in r.output


# ----------------------------------------------------------------------------- the shared helper
def test_fingerprint_helper(tmp_path):
    from handflow.fingerprint import check_or_record, record_settings, remove_outputs, settings_fingerprint

    rec = tmp_path / "out" / ".settings.json"
    assert settings_fingerprint({"a": 1, "b": [2]}) == settings_fingerprint({"b": [2], "a": 1})
    assert check_or_record(rec, {"a": 1, "s": ["x", "y"]}, what="out", fix="fix it") is False
    assert check_or_record(rec, {"a": 1, "s": ["x", "y"]}, what="out", fix="fix it") is True
    with pytest.raises(SettingsMismatch) as e:
        check_or_record(rec, {"a": 1, "s": ["x"], "t": None}, what="out", fix="fix it")
    assert str(e.value) == "out was written with s=x,y, t=unset (now x, none): fix it"
    assert record_settings(rec, {"a": 2}) == {"a": 1, "s": ["x", "y"]}  # the first record stays
    rec.write_text("{not json")
    with pytest.raises(CorruptFileError):
        check_or_record(rec, {"a": 1}, what="out", fix="fix it")
    d = tmp_path / "d"
    (d / "x" / "y").mkdir(parents=True)
    for name in ("x/y/a.bin", "x/y/.a.bin.tmp-7", "x/keep.txt", "x/y/b.bin"):
        (d / name).write_text("1")
    assert remove_outputs(d, [d / "x/y/a.bin", d / "x/y/b.bin", d / "x/y/missing.bin"]) == 3
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == ["x", "x/keep.txt"]
    with pytest.raises(ValueError, match="outside"):
        remove_outputs(d, [tmp_path / "elsewhere.txt"])
