"""Settings of every step, on OmegaConf structured configs: defaults, YAML, dotted overrides.

A step's settings are a dataclass (its *schema*: field names, types, defaults). :func:`build`
starts from the schema's defaults (``OmegaConf.structured``), applies YAML layers (a preset
or a file, a checkpoint's stored dict) and then ``key=value`` overrides, one leaf at a time,
and returns the dataclass (``OmegaConf.to_object``, so its ``__post_init__`` checks run):

>>> from handflow.config import Config
>>> cfg = build(Config, [({"model": {"backbone": "resnet34"}}, "my.yaml")], ["loss.w_det=0", "loss.enabled=nll,3d"])
>>> cfg.model.backbone, cfg.loss.w_det, cfg.loss.enabled
('resnet34', 0.0, ['nll', '3d'])
>>> build(Config, overrides=["train.w_det=0"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
handflow.config.settings.ConfigError: config: unknown key 'train.w_det' (did you mean 'loss.w_det'?); known in train: [...]

Override values are YAML scalars checked against the field's type (``null``, ``1e-3``,
``[a,b]`` or ``a,b`` for lists); a field typed ``str`` keeps the text as typed (``yes``,
``~/data``). Unknown keys name the key and the close ones; a wrong type names key, value and
type; both raise :class:`ConfigError` (a ``ValueError``), one line. :func:`to_yaml` and
:func:`to_dict` serialise; :func:`fingerprint` hashes a settings object for resume checks
(:mod:`handflow.fingerprint`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from handflow.errors import HandflowError
from handflow.fingerprint import settings_fingerprint

__all__ = [
    "ConfigError", "build", "from_dict", "to_dict", "to_yaml", "from_yaml", "read_yaml", "parse_yaml", "parse_override",
    "settings_of", "fingerprint", "parse_shard", "schema_fields", "PRESET_PACKAGE",
]

T = TypeVar("T")
#: the package holding the YAML presets (package data)
PRESET_PACKAGE = "handflow.configs"


class ConfigError(HandflowError, ValueError):
    """A settings key is unknown, or a value has the wrong type or range."""


# --------------------------------------------------------------------------- the schema
@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _non_null(typ: Any) -> tuple[Any, ...]:
    """The types a field accepts besides ``None`` (``int | None`` -> ``(int,)``)."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(typ) if a is not type(None))
    return (typ,)


def _nullable(typ: Any) -> bool:
    return typ is Any or (typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in typing.get_args(typ))


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) if not typing.get_args(typ) else str(typ).replace("typing.", "")


def schema_fields(cls: type, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: annotation}`` of every leaf of the schema ``cls`` (sections flattened)."""
    out: dict[str, Any] = {}
    for name in _field_names(cls):
        typ, key = _hints(cls)[name], f"{prefix}{name}"
        out.update(schema_fields(typ, f"{key}.") if dataclasses.is_dataclass(typ) else {key: typ})
    return out


def _closest(word: str, names: list[str]) -> list[str]:
    """The names closest to ``word`` (a typo of one of them): the best matches of
    :func:`difflib.get_close_matches`, those within 0.1 of the best ratio."""
    ratio = {n: difflib.SequenceMatcher(None, word, n).ratio() for n in difflib.get_close_matches(word, names, n=3)}
    return [n for n, r in ratio.items() if r >= max(ratio.values()) - 0.1]


def _unknown(root: type, parts: list[str], i: int, names: list[str]) -> ConfigError:
    """The error for ``parts[i]``, not a field of its section: names it and the close keys."""
    section, key = ".".join(parts[:i]), ".".join(parts[: i + 1])
    close = [f"{section}.{n}" if section else n for n in _closest(parts[i], names)]
    if i == len(parts) - 1:  # the same key in another section (train.w_det -> loss.w_det)
        close += [k for k in schema_fields(root) if k.rsplit(".", 1)[-1] == parts[i] and k not in close]
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    what = "key" if i == len(parts) - 1 else "section"
    return ConfigError(f"config: unknown {what} {key!r}{hint}; known in {section or 'the top level'}: {names}")


def _leaf_type(root: type, key: str) -> Any:
    """The annotation of the leaf ``key`` (dotted) of the schema ``root``.

    Raises:
        ConfigError: unknown key or section (with the close keys), or ``key`` is a section.
    """
    parts, cls = key.split("."), root
    for i, p in enumerate(parts):
        if typing.get_origin(cls) is dict:  # a mapping field: any key, its value type
            cls = typing.get_args(cls)[1] if typing.get_args(cls) else Any
            continue
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"config: {'.'.join(parts[:i])!r} is a value, not a section, in {key!r}")
        if p not in _field_names(cls):
            raise _unknown(root, parts, i, _field_names(cls))
        cls = _hints(cls)[p]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"config: {key!r} is a section; override one of its keys ({key}.<key>=...)")
    return cls


def _leaves(root: type, cls: type, data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of the leaves of a nested mapping, checked against the section
    ``cls`` (at ``prefix``) of the schema ``root``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: {prefix or cls.__name__} must be a mapping, got {type(data).__name__}")
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if str(k) not in _field_names(cls):
            parts = key.split(".")
            raise _unknown(root, parts, len(parts) - 1, _field_names(cls))
        typ = _hints(cls)[str(k)]
        if dataclasses.is_dataclass(typ):
            yield from _leaves(root, typ, v or {}, key)  # an empty section keeps its defaults
        else:
            yield key, v


# --------------------------------------------------------------------------- values
def _normalize(value: Any, typ: Any, key: str) -> Any:
    """Today's conversions OmegaConf does not make: ``None`` where not allowed, whole floats and
    number strings for ``int`` fields, comma-separated text for lists and tuples."""
    if value is None:
        if _nullable(typ):
            return None
        raise ConfigError(f"config: {key} may not be null (expected {_type_name(typ)})")
    options = _non_null(typ)
    if isinstance(value, str) and any(typing.get_origin(o) in (list, tuple) for o in options):
        return [v.strip() for v in value.split(",") if v.strip()]
    if int in options and float not in options and not isinstance(value, (bool, int)):
        try:
            f = float(value)
        except (TypeError, ValueError):
            f = None
        if f is not None and f.is_integer():
            return int(f)
        if f is not None and str not in options:
            raise ConfigError(f"config: {key}={value!r} is not a valid int (not a whole number)")
    return value


def parse_override(root: type, text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> ``(key, value)``, the value parsed for the field's type.

    The value is a YAML scalar (``null``, numbers, ``true``, ``[a, b]``); where the field takes
    text and the value reads as text (or a bool), the text is kept as typed (``data.root=yes``,
    ``data.mano_path=~/mano``).
    """
    if "=" not in text:
        form = "section.key=value" if any("." in k for k in schema_fields(root)) else "key=value"
        raise ConfigError(f"config override {text!r} must look like {form}")
    key, raw = (s.strip() for s in text.split("=", 1))
    typ = _leaf_type(root, key)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    if (str in _non_null(typ) and isinstance(value, (str, bool))) or (typ is str and value is not None):
        value = raw  # paths and names verbatim ("yes", "1e-3", "~/data")
    return key, value


def _assign(node: Any, root: type, key: str, value: Any) -> None:
    typ = _leaf_type(root, key)
    value = _normalize(value, typ, key)
    try:
        OmegaConf.update(node, key, value, merge=False)
    except OmegaConfBaseException:
        extra = " (true/false)" if bool in _non_null(typ) else ""
        raise ConfigError(f"config: {key}={value!r} is not a valid {_type_name(typ)}{extra}") from None


# --------------------------------------------------------------------------- building
def build(cls: type[T], layers: Iterable[tuple[Any, str]] = (), overrides: Sequence[str] = ()) -> T:
    """The settings ``cls`` from its defaults, then each ``(mapping, source)`` layer (YAML text
    already parsed, or a stored dict), then the ``key=value`` ``overrides``.

    Raises:
        ConfigError: unknown key (naming the close ones), wrong type, malformed override, or a
            value the schema's own checks (``__post_init__``) refuse.
    """
    node = copy.deepcopy(_schema_node(cls))  # 6x cheaper than building the node again
    OmegaConf.set_readonly(node, False)  # frozen dataclasses are read-only nodes
    OmegaConf.set_struct(node, True)
    for data, _source in layers:
        for key, value in _leaves(cls, cls, data):
            _assign(node, cls, key, value)
    for text in overrides:
        _assign(node, cls, *parse_override(cls, text))
    try:
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    except OmegaConfBaseException as e:  # an interpolation that does not resolve
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config: {e}") from None


@cache
def _schema_node(cls: type) -> Any:
    """The schema's defaults as an OmegaConf node (cached: copy it before changing it)."""
    return OmegaConf.structured(cls)


def from_dict(d: Mapping[str, Any], cls: type[T]) -> T:
    """Build ``cls`` from a (partial) nested dict: missing keys keep their defaults."""
    return build(cls, [(d, "dict")])


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict (for JSON, YAML and checkpoints); tuples become lists."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(obj: Any) -> str:
    """The settings as YAML text, every key written (what :func:`from_yaml` reads back)."""
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def from_yaml(text: str, cls: type[T], source: str = "YAML") -> T:
    """Inverse of :func:`to_yaml` (also any partial YAML of ``cls``)."""
    return build(cls, [(parse_yaml(text, source), source)])


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """YAML ``text`` (read from ``source``, named in errors) as plain data; ``{}`` if empty.

    Raises:
        ConfigError: the text does not parse (one line).
    """
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config: cannot parse {source}: {' '.join(str(e).split())}") from None


def read_yaml(source: str | Path, presets: Sequence[str] = (), package: str = PRESET_PACKAGE) -> tuple[dict[str, Any], str]:
    """``(data, name)`` of a preset (``<package>/<source>.yaml``, when ``source`` is one of
    ``presets``) or of a YAML file.

    Raises:
        FileNotFoundError: neither a preset nor an existing file.
        ConfigError: the YAML does not parse.
    """
    if str(source) in presets:
        text, name = resources.files(package).joinpath(f"{source}.yaml").read_text(), f"preset {str(source)!r}"
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"config {str(source)!r} is neither a preset {tuple(presets)} nor an existing YAML file")
        text, name = p.read_text(), str(p)
    return parse_yaml(text, name), name


# --------------------------------------------------------------------------- records
def settings_of(obj: Any) -> dict[str, Any]:
    """What is stored with a step's outputs and fingerprinted: the schema's own record
    (``obj.to_json()``, where it keeps older records' form) or :func:`to_dict`."""
    to_json = getattr(obj, "to_json", None)
    return to_json() if callable(to_json) else to_dict(obj)


def fingerprint(obj: Any) -> str:
    """16 hex digits identifying the settings ``obj`` (:func:`handflow.fingerprint.settings_fingerprint`
    of :func:`settings_of`): equal settings, equal fingerprint, in any process."""
    return settings_fingerprint(settings_of(obj))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (``--shard``) -> ``(i, n)`` with ``0 <= i < n``; :class:`ConfigError` otherwise."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n
