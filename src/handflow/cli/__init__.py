"""Command-line interface: ``handflow <command> --help``.

Each subcommand lives in its own module and imports heavy dependencies inside the
command body, so ``handflow --help`` stays fast.
"""

from handflow.cli.app import app

# one import per command module (registration side effect)
from handflow.cli import demo as _demo  # noqa: E402,F401
from handflow.cli import hand as _hand  # noqa: E402,F401
from handflow.cli import train as _train  # noqa: E402,F401
from handflow.cli import predict as _predict  # noqa: E402,F401
from handflow.cli import show as _show  # noqa: E402,F401
from handflow.cli import multihands as _multihands  # noqa: E402,F401
from handflow.cli import synth as _synth  # noqa: E402,F401
from handflow.cli import report as _report  # noqa: E402,F401
from handflow.cli import evaluate as _evaluate  # noqa: E402,F401
from handflow.cli import view_select as _view_select  # noqa: E402,F401
from handflow.cli import features as _features  # noqa: E402,F401
from handflow.cli import select as _select  # noqa: E402,F401
from handflow.cli import pack as _pack  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
