"""Options that are settings: each command maps them onto its settings schema in one table.

A command that writes a step's output (``synth``, ``multihands``, ``train``) declares
``SETTINGS_OPTIONS`` (option name -> dotted key of its schema) and ``RUN_OPTIONS`` (the options
that are not settings: folders, workers, progress, the shard). :func:`option_overrides` turns
the options given on the command line into ``key=value`` overrides, applied like ``--set``
ones (:mod:`handflow.config.settings`), so a default left alone never hides a ``--config``
file's value. ``tests/test_settings.py`` checks every option of these commands is in exactly
one table, maps to a schema field, and has the schema's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

__all__ = ["option_overrides", "override_text", "shard_option", "SET_HELP", "CONFIG_HELP"]

SET_HELP = "Override one setting, KEY=VALUE (repeatable; dotted keys for nested ones), e.g. --set seed=3."
CONFIG_HELP = "YAML file of settings (the keys of --set); the options given, then --set, apply on top."


def override_text(key: str, value: Any) -> str:
    """``key=value`` as a user would type it (lists comma-separated, ``None`` as ``null``)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return f"{key}={text}"


def option_overrides(ctx: typer.Context, options: Mapping[str, str]) -> list[str]:
    """``key=value`` overrides of the settings options (``options``: option name -> schema key)
    given on the command line (or in the environment); options left at their default add none."""
    out = []
    for name, key in options.items():
        source = ctx.get_parameter_source(name)  # typer's own click or click: compare by name
        if getattr(source, "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
            out.append(override_text(key, ctx.params[name]))
    return out


def shard_option(text: str) -> tuple[int, int]:
    """``--shard i/n`` -> ``(i, n)``; a usage error otherwise (:func:`handflow.config.parse_shard`)."""
    # lazy: keeps `handflow --help` fast (handflow.config loads omegaconf)
    from handflow.config import ConfigError, parse_shard

    try:
        return parse_shard(text)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
