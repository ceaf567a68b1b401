"""Command-line interface: ``handflow <command> --help``.

Each subcommand lives in its own module and imports heavy dependencies inside the
command body, so ``handflow --help`` stays fast. The command needs ``handflow[cli]`` (typer,
rich): without it ``handflow`` prints one line naming the extra and exits 1.
"""

import sys

try:
    from handflow.cli.app import app
except ImportError as _missing:  # typer / click / rich not installed: the library works, the command does not
    if (_missing.name or "").split(".")[0] not in ("typer", "click", "rich"):
        raise
    app = None
    _MISSING = _missing.name
else:
    _MISSING = None
    # one import per command module (registration side effect; this order is the order of `handflow --help`)
    from handflow.cli import demo as _demo  # noqa: F401, I001 - help order, not alphabetical
    from handflow.cli import hand as _hand  # noqa: F401
    from handflow.cli import train as _train  # noqa: F401
    from handflow.cli import predict as _predict  # noqa: F401
    from handflow.cli import show as _show  # noqa: F401
    from handflow.cli import multihands as _multihands  # noqa: F401
    from handflow.cli import synth as _synth  # noqa: F401
    from handflow.cli import report as _report  # noqa: F401
    from handflow.cli import evaluate as _evaluate  # noqa: F401
    from handflow.cli import view_select as _view_select  # noqa: F401
    from handflow.cli import features as _features  # noqa: F401
    from handflow.cli import export as _export  # noqa: F401
    from handflow.cli import select as _select  # noqa: F401
    from handflow.cli import pack as _pack  # noqa: F401


def main() -> None:
    """Console-script entry point."""
    if app is None:
        print(f"error: the handflow command needs {_MISSING}: install handflow[cli] (pip install 'handflow[cli]')",
              file=sys.stderr)
        raise SystemExit(1)
    app()


__all__ = ["app", "main"]
