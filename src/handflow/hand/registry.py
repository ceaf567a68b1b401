"""Hand-model registry: ``load_hand_model("openhand")`` or ``load_hand_model("mano", path=...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handflow.hand.base import HandModel
from handflow.hand.mano import ManoModel
from handflow.hand.openhand import OpenHand

__all__ = ["load_hand_model", "hand_model_named", "available_hand_models", "MANO_DOWNLOAD_HINT"]

_KNOWN = ("openhand", "mano")
MANO_DOWNLOAD_HINT = (
    "The MANO model files are not shipped with handflow (their licence forbids "
    "redistribution). Register and download 'Models & Code' from https://mano.is.tue.mpg.de, "
    "then pass the folder holding MANO_RIGHT.pkl / MANO_LEFT.pkl (or one .pkl / .npz file): "
    "load_hand_model('mano', path='/path/to/mano/models')."
)


def available_hand_models() -> tuple[str, ...]:
    """Names accepted by :func:`load_hand_model`."""
    return _KNOWN


def hand_model_named(name: str, mano_path: str | Path | None = None) -> HandModel:
    """The hand model ``name`` as configs and datasets name it: ``mano_path`` (``data.mano_path``)
    goes to ``mano`` only, so a config that keeps a MANO folder still builds ``openhand``."""
    return load_hand_model(name, path=mano_path) if name == "mano" else load_hand_model(name)


def load_hand_model(name: str = "openhand", path: str | Path | None = None, **kwargs: Any) -> HandModel:
    """Build a hand model by name.

    Args:
        name: ``"openhand"`` (embedded, needs nothing) or ``"mano"`` (official files).
        path: for ``"mano"``: folder with ``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` or a file.
        **kwargs: passed to the backend (``mano``: ``fix_left_shapedirs``).

    Raises:
        ValueError: unknown name, a path given to ``openhand``, or ``mano`` without a path.
    """
    key = str(name).strip().lower()
    if key == "openhand":
        if path is not None or kwargs:
            raise ValueError("load_hand_model('openhand') takes no path or options: it is embedded")
        return OpenHand()
    if key == "mano":
        if path is None:
            raise ValueError(f"load_hand_model('mano') needs path=. {MANO_DOWNLOAD_HINT}")
        return ManoModel(path, **kwargs)
    raise ValueError(f"unknown hand model {name!r}: known models are {', '.join(_KNOWN)}")
