"""Hand-model registry: names, errors, lazy MANO import."""

from __future__ import annotations

import importlib.util

import pytest

from handflow.hand import HandModel, OpenHand, available_hand_models, load_hand_model


def test_openhand_default():
    model = load_hand_model()
    assert isinstance(model, OpenHand) and isinstance(model, HandModel)
    assert model.name == "openhand"
    assert isinstance(load_hand_model("OpenHand"), OpenHand)


def test_available():
    assert available_hand_models() == ("openhand", "mano")


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="known models are openhand, mano"):
        load_hand_model("smplx")


def test_mano_without_path_says_where_to_get_it():
    with pytest.raises(ValueError, match=r"mano\.is\.tue\.mpg\.de"):
        load_hand_model("mano")


def test_openhand_rejects_path():
    with pytest.raises(ValueError, match="embedded"):
        load_hand_model("openhand", path="/tmp/x")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(
    not (_has("handflow.testing.mano") and _has("handflow.hand.mano")),
    reason="MANO backend or its fixture writer not present yet",
)
def test_mano_from_fake_files(tmp_path):
    from handflow.testing.mano import write_fake_mano

    write_fake_mano(tmp_path)
    model = load_hand_model("mano", path=tmp_path)
    assert model.name == "mano"
