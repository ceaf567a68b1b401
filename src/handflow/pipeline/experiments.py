"""The report's table of runs, read from YAML package data (``handflow/configs/experiments/``).

An experiment names its runs (model kind, label, config overrides, MultiHands targets or not),
which of them form Table 2 (``methods``) and Table 3 (``ablations``), the two runs some findings
are about (``single_annotation``, ``detmag``) and the default seeds. A new ablation is one YAML
entry (``configs/experiments/paper.yaml``):

>>> exp = load_experiment("paper")
>>> exp.runs["flow_no_2d"].overrides, exp.methods[0], exp.seeds
(('loss.w_2d=0',), 'flow', (0, 1))

The file is read with OmegaConf when it is installed (the settings system of issue #19), else
with PyYAML; both give the same plain data, which is validated here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from handflow.errors import InputError

__all__ = ["RunSpec", "Experiment", "load_experiment", "DEFAULT_EXPERIMENT"]

DEFAULT_EXPERIMENT = "paper"
_RUN_KEYS = {"kind", "label", "overrides", "multihands"}
_KEYS = {"runs", "methods", "ablations", "single_annotation", "detmag", "seeds"}


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


def _read_yaml(text: str) -> Any:
    try:
        from omegaconf import OmegaConf
    except ImportError:
        import yaml

        return yaml.safe_load(text)
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def experiment_from_dict(name: str, d: Any, source: str = "") -> Experiment:
    """Validate plain data (as in the YAML files) into an :class:`Experiment`."""
    where = source or name
    if not isinstance(d, dict) or not isinstance(d.get("runs"), dict) or not d["runs"]:
        raise InputError(f"experiment {where}: needs a 'runs' mapping of run name -> {{kind, label, ...}}")
    unknown = set(d) - _KEYS
    if unknown:
        raise InputError(f"experiment {where}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    runs = {}
    for n, r in d["runs"].items():
        if not isinstance(r, dict) or "kind" not in r:
            raise InputError(f"experiment {where}: run {n!r} needs at least 'kind'")
        bad = set(r) - _RUN_KEYS
        if bad:
            raise InputError(f"experiment {where}: run {n!r} has unknown key(s) {sorted(bad)}; known: {sorted(_RUN_KEYS)}")
        runs[str(n)] = RunSpec(str(r["kind"]), str(r.get("label", n)), tuple(map(str, r.get("overrides") or ())),
                               bool(r.get("multihands", True)))
    names = {k: tuple(map(str, d.get(k) or ())) for k in ("methods", "ablations")}
    roles = {k: d.get(k) for k in ("single_annotation", "detmag")}
    for k, v in [*((k, n) for k, ns in names.items() for n in ns), *roles.items()]:
        if v is not None and v not in runs:
            raise InputError(f"experiment {where}: {k} names {v!r}, which is not one of its runs {list(runs)}")
    seeds = tuple(int(s) for s in d.get("seeds") or (0, 1))
    return Experiment(name, runs, names["methods"], names["ablations"], roles["single_annotation"], roles["detmag"],
                      seeds, source)


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
    return experiment_from_dict(name, _read_yaml(text), source)
