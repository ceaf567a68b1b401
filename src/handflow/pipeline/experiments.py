"""The report's table of runs, read from YAML package data (``handflow/configs/experiments/``).

An experiment names its runs (model kind, label, config overrides, MultiHands targets or not),
which of them form Table 2 (``methods``) and Table 3 (``ablations``), the two runs some findings
are about (``single_annotation``, ``detmag``) and the default seeds. A new ablation is one YAML
entry (``configs/experiments/paper.yaml``):

>>> exp = load_experiment("paper")
>>> exp.runs["flow_no_2d"].overrides, exp.methods[0], exp.seeds
(('loss.w_2d=0',), 'flow', (0, 1))

The file is read and checked by the settings system (:mod:`handflow.config`, issue #19): its keys
and each run's against the schemas below, an unknown key named with the close ones, in one line:

>>> experiment_from_dict("x", {"runs": {"flow": {"kind": "flow", "lable": "F"}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
handflow.errors.InputError: experiment x: run 'flow': unknown key 'lable' (did you mean 'label'?); known in a run: [...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from handflow.config.settings import ConfigError, build, parse_yaml
from handflow.errors import InputError

__all__ = ["RunSpec", "Experiment", "RunSchema", "ExperimentSchema", "load_experiment", "experiment_from_dict",
           "DEFAULT_EXPERIMENT"]

DEFAULT_EXPERIMENT = "paper"


@dataclass
class RunSchema:
    """The keys of one run in an experiment file (:class:`RunSpec` once checked)."""

    kind: str | None = None  # required: a model of handflow.models
    label: str | None = None  # default: the run's name
    overrides: list[str] | None = None
    multihands: bool = True


@dataclass
class ExperimentSchema:
    """The keys of an experiment file (:class:`Experiment` once checked); ``runs`` maps a run
    name to its :class:`RunSchema` keys."""

    runs: dict[str, Any] | None = None
    methods: list[str] | None = None
    ablations: list[str] | None = None
    single_annotation: str | None = None
    detmag: str | None = None
    seeds: list[int] | None = None


@dataclass(frozen=True)
class RunSpec:
    """One trained configuration: model kind and config overrides on top of the preset."""

    kind: str
    label: str
    overrides: tuple[str, ...] = ()
    multihands: bool = True  # train with the MultiHands training annotations


@dataclass(frozen=True)
class Experiment:
    """The runs of a report and their roles (see the module docstring)."""

    name: str
    runs: dict[str, RunSpec]
    methods: tuple[str, ...]
    ablations: tuple[str, ...]
    single_annotation: str | None = None
    detmag: str | None = None
    seeds: tuple[int, ...] = (0, 1)
    source: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        """Plain data (stored with the results, so a page renders without the YAML)."""
        return {"name": self.name, "methods": list(self.methods), "ablations": list(self.ablations),
                "single_annotation": self.single_annotation, "detmag": self.detmag, "seeds": list(self.seeds),
                "runs": {n: {"kind": r.kind, "label": r.label, "overrides": list(r.overrides), "multihands": r.multihands}
                         for n, r in self.runs.items()}}


def _input_error(where: str, e: ConfigError, run: str | None = None) -> InputError:
    """A settings error of experiment ``where`` (of its run ``run``) as the one-line InputError."""
    msg = str(e).removeprefix("config: ")
    if run is not None:
        msg = f"run {run!r}: " + msg.replace("known in the top level", "known in a run")
    return InputError(f"experiment {where}: {msg}")


def experiment_from_dict(name: str, d: Any, source: str = "") -> Experiment:
    """Validate plain data (as in the YAML files) into an :class:`Experiment`: keys and types
    by the settings system (:func:`handflow.config.build` of :class:`ExperimentSchema` and of
    each run's :class:`RunSchema`), then the references between them."""
    where = source or name
    if not isinstance(d, dict):
        raise InputError(f"experiment {where}: needs a 'runs' mapping of run name -> {{kind, label, ...}}")
    try:
        e = build(ExperimentSchema, [(d, where)])
    except ConfigError as err:
        raise _input_error(where, err) from None
    if not isinstance(e.runs, dict) or not e.runs:
        raise InputError(f"experiment {where}: needs a 'runs' mapping of run name -> {{kind, label, ...}}")
    runs = {}
    for n, r in e.runs.items():
        try:
            spec = build(RunSchema, [(r if r is not None else {}, f"{where}: run {n}")])
        except ConfigError as err:
            raise _input_error(where, err, str(n)) from None
        if spec.kind is None:
            raise InputError(f"experiment {where}: run {n!r} needs at least 'kind'")
        runs[str(n)] = RunSpec(spec.kind, n if spec.label is None else spec.label, tuple(spec.overrides or ()),
                               spec.multihands)
    names = {"methods": tuple(e.methods or ()), "ablations": tuple(e.ablations or ())}
    roles = {"single_annotation": e.single_annotation, "detmag": e.detmag}
    for k, v in [*((k, n) for k, ns in names.items() for n in ns), *roles.items()]:
        if v is not None and v not in runs:
            raise InputError(f"experiment {where}: {k} names {v!r}, which is not one of its runs {list(runs)}")
    return Experiment(name, runs, names["methods"], names["ablations"], roles["single_annotation"], roles["detmag"],
                      tuple(e.seeds or (0, 1)), source)


def load_experiment(name_or_path: str | Path = DEFAULT_EXPERIMENT) -> Experiment:
    """The experiment ``handflow/configs/experiments/<name>.yaml``, or a YAML file of that form."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise InputError(f"experiment file {p} not found")
        return _parse(p.stem, p.read_text(), str(p))
    folder = resources.files("handflow.configs").joinpath("experiments")
    f = folder.joinpath(f"{name_or_path}.yaml")
    if not f.is_file():
        known = sorted(x.name[:-5] for x in folder.iterdir() if x.name.endswith(".yaml"))
        raise InputError(f"unknown experiment {str(name_or_path)!r}; packaged: {known} (or pass a .yaml file)")
    return _parse(str(name_or_path), f.read_text(), f"handflow/configs/experiments/{name_or_path}.yaml")


@lru_cache(maxsize=16)
def _parse(name: str, text: str, source: str) -> Experiment:
    """Parsed once per file content (a plan asks for its table once per stage command)."""
    try:
        data = parse_yaml(text, source)
    except ConfigError as err:
        raise _input_error(source, err) from None
    return experiment_from_dict(name, data, source)
