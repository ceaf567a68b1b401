"""handflow.atomic: the one atomic-write core (temp file beside the target, os.replace)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import handflow.atomic as A


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_temp_name_is_hidden_beside_the_target(tmp_path):
    t = A.temp_path(tmp_path / "sub" / "x.json")
    assert t.parent == tmp_path / "sub" and t.name == f".x.json.tmp-{os.getpid()}"


def test_write_json_text_bytes(tmp_path):
    A.write_json(tmp_path / "a" / "b.json", {"k": [1, 2]})  # creates the folder
    assert (tmp_path / "a" / "b.json").read_text() == json.dumps({"k": [1, 2]}, indent=1)
    A.write_text(tmp_path / "t.txt", "héllo\n", fsync=True)
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    A.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    A.write_bytes(tmp_path / "b.bin", b"\x02")  # replaces
    assert (tmp_path / "b.bin").read_bytes() == b"\x02"
    assert _names(tmp_path) == ["a", "b.bin", "t.txt"]


def test_npz_round_trip_at_the_exact_name(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([7], np.int64)}
    for compressed in (False, True):
        p = tmp_path / f"store{int(compressed)}.bin"  # no .npz suffix is appended
        A.save_npz(p, arrays, compressed=compressed, fsync=True)
        back = A.read_npz(p)
        assert set(back) == {"x", "i"}
        for k in arrays:
            assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    assert _names(tmp_path) == ["store0.bin", "store1.bin"]


def test_a_write_that_raises_midway_keeps_the_old_file(tmp_path):
    p = tmp_path / "x.json"
    A.write_json(p, {"v": 1})
    with pytest.raises(RuntimeError, match="midway"), A.atomic_path(p) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("midway")
    assert json.loads(p.read_text()) == {"v": 1}
    assert _names(tmp_path) == ["x.json"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    p = tmp_path / "x.npz"

    class Boom:
        def __array__(self, *a, **k):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        A.save_npz(p, {"a": np.zeros(3), "b": Boom()})
    assert _names(tmp_path) == []


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "x.txt"
    A.write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(A.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        A.write_text(p, "new", fsync=True)
    assert p.read_text() == "old" and _names(tmp_path) == ["x.txt"]


def test_old_names_still_importable():
    from handflow.data.synth.ih_writer import atomic_write_bytes, atomic_write_json  # noqa: F401
    from handflow.evaluation.summary import atomic_text
    from handflow.multihands.io import write_json_atomic  # noqa: F401

    assert atomic_text is A.write_text


def test_a_hard_link_to_the_current_file_leaves_no_temp(tmp_path):
    p, src = tmp_path / "best.ckpt", tmp_path / "step1.ckpt"
    src.write_bytes(b"weights")
    for _ in range(2):  # the second time, best.ckpt already is a link to step1.ckpt
        with A.atomic_path(p) as tmp:
            os.link(src, tmp)
    assert p.read_bytes() == b"weights" and _names(tmp_path) == ["best.ckpt", "step1.ckpt"]


def test_atomic_create_never_replaces(tmp_path):
    p = tmp_path / "vis.npy"
    with A.atomic_create(p) as tmp:
        tmp.write_bytes(b"first")
    with A.atomic_create(p) as tmp:  # another process was first: its file stays
        tmp.write_bytes(b"second")
    assert p.read_bytes() == b"first" and _names(tmp_path) == ["vis.npy"]
    with pytest.raises(RuntimeError), A.atomic_create(tmp_path / "x") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert _names(tmp_path) == ["vis.npy"]


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    out = tmp_path / "part_0000"
    with A.atomic_dir(out, fsync=True) as tmp:
        (tmp / "a.npy").write_bytes(b"1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_bytes(b"2")
    assert sorted(p.name for p in out.rglob("*")) == ["a.npy", "b", "sub"]
    with A.atomic_dir(out) as tmp:
        (tmp / "c.npy").write_bytes(b"3")
    assert _names(out) == ["c.npy"]  # the old folder's files are gone with it
    with pytest.raises(KeyboardInterrupt), A.atomic_dir(out) as tmp:
        (tmp / "d.npy").write_bytes(b"half")
        raise KeyboardInterrupt
    assert _names(out) == ["c.npy"] and _names(tmp_path) == ["part_0000"]
