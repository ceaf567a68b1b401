"""Optional dependencies and the extras that install them.

``pip install handflow`` installs the core (numpy, torch, torchvision, pillow, pyyaml, tqdm):
hand models, synthetic data without moderngl (PyTorch rasterizer), loading checkpoints and
prediction (:func:`handflow.load_model`, :func:`handflow.predict`). The rest is optional:

======== ========================================= =============================================
extra    packages                                  for
======== ========================================= =============================================
render   moderngl                                  the fast EGL renderer (else PyTorch's)
viz      matplotlib, plotly, trimesh               figures, HTML views, mesh files
train    lightning, tensorboard, rich              training, evaluation, reports
cli      typer, rich                               the ``handflow`` command
all      all of the above                          ``make demo``, ``make test``
======== ========================================= =============================================

Examples:
    >>> require("math", "viz", "figures").pi > 3
    True
"""

from __future__ import annotations

import importlib
from types import ModuleType

from handflow.errors import MissingExtraError

__all__ = ["require", "pyplot", "EXTRAS"]

#: extra -> the top-level modules it provides
EXTRAS = {"render": ("moderngl",), "viz": ("matplotlib", "plotly", "trimesh"), "train": ("lightning", "tensorboard", "rich"),
          "cli": ("typer", "rich")}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`~handflow.errors.MissingExtraError` (an
    ``ImportError``) in one line: ``"{purpose} needs {module}: install handflow[{extra}] ..."``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the module is there but one of its own imports failed: not a missing extra
        raise MissingExtraError(f"{purpose} needs {top}: install handflow[{extra}] (pip install 'handflow[{extra}]')",
                                name=top) from None


def pyplot(purpose: str = "figures") -> ModuleType:
    """``matplotlib.pyplot`` on the file-only ``Agg`` backend (no display needed), or
    :class:`~handflow.errors.MissingExtraError` naming ``handflow[viz]``."""
    require("matplotlib", "viz", purpose).use("Agg")
    return importlib.import_module("matplotlib.pyplot")
