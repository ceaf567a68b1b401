"""The ``handflow`` Typer application; subcommands register themselves in sibling modules."""

import typer

app = typer.Typer(
    name="handflow",
    help="Two interacting hands in 3D from one RGB image, as a distribution of plausible poses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """handflow: two interacting hands in 3D from one RGB image, as a distribution of poses."""
