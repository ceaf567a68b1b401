"""The package's exceptions: one base, :class:`HandflowError`, for every error that a user's
input or a user's file causes (a bad option, a missing or foreign file, a checkpoint from
another config, a corrupt annotation). The CLI prints such an error as one line
(``error: ...``) and exits 1; ``--verbose`` or ``HANDFLOW_DEBUG=1`` shows the traceback.

Domain errors derive from it and keep their older built-in base (``ValueError``,
``OSError``), so ``except ValueError`` in existing user code still catches them:

Examples:
    >>> from handflow.errors import HandflowError, InputError
    >>> issubclass(InputError, HandflowError) and issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["HandflowError", "InputError", "UnsafeFileError", "CorruptFileError"]


class HandflowError(Exception):
    """Base of every error caused by the user's input or files; its message names the
    problem and the fix in one line."""


class InputError(HandflowError, ValueError):
    """An argument or option value is invalid (shape, range, NaN, unknown name)."""


class UnsafeFileError(HandflowError, ValueError):
    """A file would need unrestricted unpickling (it may run code): refused, never loaded."""


class CorruptFileError(HandflowError, ValueError):
    """A file exists but cannot be read as what it claims to be (empty, truncated, random
    bytes, another format)."""


class SettingsMismatch(HandflowError, ValueError):
    """An output folder was written with other settings than the run's (resuming would mix
    the two); the message names the differing settings and the fix (same settings,
    ``--overwrite``, or another output folder)."""


__all__ += ["SettingsMismatch"]


class ModelOutputError(HandflowError, FloatingPointError):
    """A model gave a non-finite output (NaN or inf) for a finite input: nothing is written for
    that input; the checkpoint has probably diverged (retrain, or use an earlier checkpoint)."""


__all__ += ["ModelOutputError"]


class MissingFileError(HandflowError, FileNotFoundError):
    """A file the user named does not exist (still caught by ``except FileNotFoundError``)."""


__all__ += ["MissingFileError"]


class MissingExtraError(HandflowError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it
    (``install handflow[viz]``), see :mod:`handflow.extras`."""


__all__ += ["MissingExtraError"]
