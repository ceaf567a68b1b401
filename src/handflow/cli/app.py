"""The ``handflow`` Typer application; subcommands register themselves in sibling modules.

Errors: a :class:`~handflow.errors.HandflowError` (bad input, a foreign or corrupt file) or an
``OSError`` naming a file is printed as one line, ``error: ...``, and the command exits 1. Any
other exception is a bug: one line too, naming its type and how to see the traceback.
``handflow --verbose COMMAND`` or ``HANDFLOW_DEBUG=1`` re-raises instead (full traceback).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from handflow.errors import HandflowError

__all__ = ["app", "debug_enabled", "configure_logging", "error_line"]

#: environment variable that shows tracebacks (same as ``--verbose``)
DEBUG_ENV = "HANDFLOW_DEBUG"
_state = {"verbose": False}


def debug_enabled() -> bool:
    """True under ``--verbose`` or ``HANDFLOW_DEBUG=1``: errors keep their traceback."""
    return _state["verbose"] or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc`` (no traceback)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (HandflowError, OSError)) or _is_lightning_config_error(exc):
        return f"error: {msg}"
    return (f"error: unexpected {type(exc).__name__}: {msg} (a bug: rerun with --verbose or {DEBUG_ENV}=1 for the "
            "traceback, and report it)")


def _is_lightning_config_error(exc: BaseException) -> bool:
    """Lightning's ``MisconfigurationException`` (accelerator/devices/strategy settings)."""
    return type(exc).__name__ == "MisconfigurationException"


#: Click's own control flow (usage errors, ``typer.Exit``, aborts): Click reports these itself
_CLICK_OWN: tuple[type[BaseException], ...] = (
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"), typer.Exit, typer.Abort)


class _OneLineErrors(TyperGroup):
    """Turns a subcommand's exception into one ``error: ...`` line and exit code 1, before Click
    would print "Aborted!" (its reading of an ``EOFError``) or Typer a rich traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (*_CLICK_OWN, KeyboardInterrupt):
            raise
        except Exception as e:
            if debug_enabled():
                raise
            typer.echo(error_line(e), err=True)
            raise typer.Exit(1) from e


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route handflow's ``logging`` to stderr once: INFO by default (resume and progress notes),
    DEBUG with ``--verbose``, WARNING with ``--quiet``."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("handflow")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test runner swaps it)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


app = typer.Typer(
    name="handflow",
    cls=_OneLineErrors,
    help="Two interacting hands in 3D from one RGB image, as a distribution of plausible poses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help=f"Debug logging, and tracebacks on errors (or {DEBUG_ENV}=1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    """handflow: two interacting hands in 3D from one RGB image, as a distribution of poses."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    _state["verbose"] = verbose
    configure_logging(verbose=verbose, quiet=quiet)
