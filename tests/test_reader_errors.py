"""InterHand2.6M reader: inputs that used to be accepted silently or failed with a bare
numpy/Python error now raise an ``AnnotationError`` naming the file and the entry (issue #15
s. 4). Each case starts from the real-format fixture of ``ih_fixtures.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ih_fixtures import write_fixture
from PIL import Image

from handflow.data import InterHandDataset
from handflow.data.ih_json import AnnotationError
from handflow.errors import HandflowError

DATA = "InterHand2.6M_test_data.json"
CAMERA = "InterHand2.6M_test_camera.json"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_fixture(tmp_path)
    return tmp_path


def _edit(root: Path, name: str, fn: Callable[[Any], None]) -> Path:
    """Apply ``fn`` to the parsed annotation file ``name`` and write it back."""
    path = root / "annotations" / "test" / name
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))
    return path


def _open_all(root: Path, **kw: Any) -> InterHandDataset:
    """Build the dataset and decode every item (errors of the index or of the items)."""
    ds = InterHandDataset(root, "test", 64, visibility="none", **kw)
    for i in range(len(ds)):
        ds[i]
    return ds


def _one_line(e: pytest.ExceptionInfo) -> None:
    assert isinstance(e.value, HandflowError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_duplicate_image_ids_are_refused(root: Path) -> None:
    def dup(d: dict) -> None:
        d["images"][2]["id"] = d["images"][0]["id"]

    _edit(root, DATA, dup)
    with pytest.raises(AnnotationError, match=rf"{DATA}: image id 1000 is shared by images\[0\], images\[2\]") as e:
        InterHandDataset(root, "test", 64, visibility="none")
    _one_line(e)


@pytest.mark.parametrize("focal", [[0.0, 1262.0], [-1261.5, 1262.0], [1261.5, -1262.0], ["f", 1262.0]])
def test_bad_focal_lengths_are_refused(root: Path, focal: list) -> None:
    def bad(d: dict) -> None:
        d["3"]["focal"]["400041"] = focal

    _edit(root, CAMERA, bad)
    with pytest.raises(AnnotationError, match=rf"{CAMERA}: capture 3 camera 400041 focal must be") as e:
        _open_all(root)
    _one_line(e)


def test_image_whose_size_differs_from_its_entry_is_refused(root: Path) -> None:
    ds = InterHandDataset(root, "test", 64, visibility="none")
    i = 1
    path = ds.image_dir / ds.index.file_name(i)
    iid = ds.annotation(i)["meta"]["image_id"]
    with Image.open(path) as im:
        w, h = im.size
        im.resize((w // 2, h // 2)).save(path)  # same file, other resolution
    with pytest.raises(AnnotationError, match=rf"image{ds.annotation(i)['meta']['frame']}\.jpg: image is {w // 2}x{h // 2} px "
                       rf"but .*{DATA} gives {w}x{h} for image id {iid}") as e:
        ds[i]
    _one_line(e)
    # the annotations need no image; an index reused from the cache checks it the same way
    assert ds.annotation(i)["joint_valid"].any()
    again = InterHandDataset(root, "test", 64, visibility="none")
    assert not again.index.rebuilt
    with pytest.raises(AnnotationError, match=f"image id {iid}"):
        again[i]
    skipping = InterHandDataset(root, "test", 64, visibility="none", on_error="skip")
    assert skipping[i]["meta"]["image_id"] != iid


def test_data_json_without_images_is_refused(root: Path) -> None:
    _edit(root, DATA, lambda d: d.pop("images"))
    with pytest.raises(AnnotationError, match=rf"{DATA}: missing key 'images'") as e:
        InterHandDataset(root, "test", 64, visibility="none")
    _one_line(e)


@pytest.mark.parametrize(("entry", "key", "value", "where"), [
    ("images", "id", "abc", r"images\[1\] 'id' must be an integer, got str 'abc'"),
    ("images", "id", "1001", r"images\[1\] 'id' must be an integer, got str '1001'"),
    ("images", "width", "512", r"images\[1\] \(image 1001\) 'width' must be a positive integer, got str '512'"),
    ("images", "height", 0, r"images\[1\] \(image 1001\) 'height' must be a positive integer, got int 0"),
    ("annotations", "image_id", "x", r"annotations\[1\] 'image_id' must be an integer, got str 'x'"),
])
def test_ids_and_sizes_must_be_integers(root: Path, entry: str, key: str, value: Any, where: str) -> None:
    def bad(d: dict) -> None:
        d[entry][1][key] = value

    _edit(root, DATA, bad)
    with pytest.raises(AnnotationError, match=rf"{DATA}: {where}") as e:
        InterHandDataset(root, "test", 64, visibility="none")
    _one_line(e)


def test_non_integer_frame_key_is_refused(root: Path) -> None:
    def bad(d: dict) -> None:
        d["3"]["frame_x"] = d["3"]["69148"]

    _edit(root, "InterHand2.6M_test_joint_3d.json", bad)
    with pytest.raises(AnnotationError, match=r"joint_3d.json: capture 3 frame frame_x: key 'frame_x' must be an integer"):
        InterHandDataset(root, "test", 64, visibility="none")


def test_an_index_built_before_these_checks_is_rebuilt(root: Path) -> None:
    """A cache written by an older reader (index version 3), which accepted a zero focal
    length, must not hide the error: its version differs, so it is rebuilt and re-checked."""
    from handflow.data import index as index_mod

    ds = InterHandDataset(root, "test", 64, visibility="none")
    assert ds.index.rebuilt
    _edit(root, CAMERA, lambda d: d["3"]["focal"].__setitem__("400026", [0.0, 1262.0]))
    manifest = ds.index.folder / "manifest.json"
    m = json.loads(manifest.read_text())
    m["version"], m["sources"] = 3, index_mod._sources(ds.index.paths)  # as if built from these files by v3
    manifest.write_text(json.dumps(m))
    with pytest.raises(AnnotationError, match=r"camera 400026 focal must be positive"):
        InterHandDataset(root, "test", 64, visibility="none")
