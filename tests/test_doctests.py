"""The examples of the docstrings and of the docs (issue #18 s.3).

* Every ``>>>`` example in ``src/handflow`` runs as a doctest (one test per module). An example
  that needs data a test cannot have (MANO's files, a trained checkpoint) carries
  ``# doctest: +SKIP`` with its reason written beside it.
* The ```python blocks of ``README.md`` and ``docs/*.md`` run, each in a fresh namespace with
  the working directory a sandbox holding what they name (a tiny synthetic dataset at ``data``,
  ``data_synth`` and ``DATA``, a tiny trained ``runs/flow/checkpoints/last.ckpt``, MultiHands
  annotations at ``MH``, photos, the per-image file and the lifting example), within a time
  budget per block. A ``<!-- doctest: ... -->`` comment above a fence prepares its block (the
  names a reader has, a smaller size) or skips it with a reason (the MANO files); see
  ``_DIRECTIVE`` below.
* The same blocks, skipped ones included, are also checked without running: each compiles, its
  imports import, every ``module.name`` it uses exists, and every call of a handflow function or
  class (or of a method of an object the block built from a handflow class) binds to the
  callable's signature, so a renamed function or keyword in the API fails here with its line.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import inspect
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: modules whose doctests another test runs (tests/test_api.py: the top level and the
#: predictor, whose examples train and predict) and modules other work has open (issue #18);
#: the rest of src/handflow runs here
ELSEWHERE = {
    "handflow": "tests/test_api.py",
    "handflow.api": "tests/test_api.py",
    "handflow.predictor": "tests/test_api.py",
    "handflow.extras": "tests/test_api.py",
}


def _modules_with_examples() -> list[str]:
    out = []
    for path in sorted((SRC / "handflow").rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", [m for m in MODULES if m not in ELSEWHERE])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    found = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert found > 0, f"{name}: no example found"
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed (printed above)"


def test_example_modules_found() -> None:
    assert len(MODULES) >= 15 and "handflow.atomic" in MODULES


# ----------------------------------------------------------------------------- docs
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for f in DOC_FILES:
        text = f.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            out.append((f.relative_to(ROOT).as_posix(), text[: m.start()].count("\n") + 2, m.group(1)))
    return out


BLOCKS = _blocks()
_UNKNOWN = object()


class _Checker(ast.NodeVisitor):
    """Resolves what a block names through its imports, without running the block."""

    def __init__(self, where: str) -> None:
        self.where, self.names, self.errors = where, {}, []

    def resolve(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return self.names.get(node.id, _UNKNOWN)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is _UNKNOWN:
                return _UNKNOWN
            if isinstance(base, _Instance):
                if not hasattr(base.cls, node.attr) and not _is_field(base.cls, node.attr):
                    self.errors.append(f"{self.where}:{node.lineno}: {base.cls.__name__} has no attribute {node.attr!r}")
                if inspect.isfunction(inspect.getattr_static(base.cls, node.attr, None)):
                    return _Method(getattr(base.cls, node.attr))  # a plain method: its call is checked
                return _UNKNOWN
            if not hasattr(base, node.attr):
                self.errors.append(f"{self.where}:{node.lineno}: {getattr(base, '__name__', base)!r} has no attribute "
                                   f"{node.attr!r}")
                return _UNKNOWN
            return getattr(base, node.attr)
        return _UNKNOWN

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            mod = importlib.import_module(a.name)
            self.names[a.asname or a.name.split(".")[0]] = mod if a.asname else importlib.import_module(a.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = importlib.import_module(node.module or "")
        for a in node.names:
            if not hasattr(mod, a.name):
                try:
                    importlib.import_module(f"{node.module}.{a.name}")
                except ImportError:
                    self.errors.append(f"{self.where}:{node.lineno}: cannot import {a.name!r} from {node.module}")
                    continue
            self.names[a.asname or a.name] = getattr(mod, a.name)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        value = node.value
        if isinstance(value, ast.Call) and inspect.isclass(cls := self.resolve(value.func)) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and cls.__module__.startswith("handflow"):
                self.names[target.id] = _Instance(cls)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = self.resolve(node.func)
        if isinstance(func, _Method):
            func = func.unbound_self()
        if func is _UNKNOWN or not callable(func) or any(isinstance(a, ast.Starred) for a in node.args):
            return
        if not (getattr(func, "__module__", "") or "").startswith("handflow"):
            return
        if any(k.arg is None for k in node.keywords):  # **kwargs
            return
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return
        try:
            sig.bind_partial(*node.args, **{k.arg: k.value for k in node.keywords})
        except TypeError as e:
            name = getattr(func, "__qualname__", func)
            self.errors.append(f"{self.where}:{node.lineno}: {name}(...) does not match its signature {sig}: {e}")


class _Instance:
    def __init__(self, cls: type) -> None:
        self.cls = cls


class _Method:
    """A method of a handflow class, called on an instance: checked without its ``self``."""

    def __init__(self, func: Any) -> None:
        self.func = func

    def unbound_self(self) -> Any:
        def call(*args: Any, **kwargs: Any) -> None: ...

        sig = inspect.signature(self.func)
        call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
        call.__module__, call.__qualname__ = self.func.__module__, self.func.__qualname__
        return call


def _is_field(cls: type, name: str) -> bool:
    return name in getattr(cls, "__dataclass_fields__", {}) or name in getattr(cls, "__annotations__", {})


@pytest.mark.parametrize("where,line,code", BLOCKS, ids=[f"{f}:{n}" for f, n, _ in BLOCKS])
def test_docs_python_blocks_match_the_api(where: str, line: int, code: str) -> None:
    tree = compile(code, f"{where}:{line}", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    ast.increment_lineno(tree, line - 1)
    checker = _Checker(where)
    checker.visit(tree)
    assert not checker.errors, "\n".join(checker.errors)


def test_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 10


# ----------------------------------------------------------------------------- docs: run them
# A block runs in a fresh namespace, with the working directory a fresh sandbox folder that holds
# what its names refer to (doc_template below): the paths of the docs are the sandbox's paths, so a
# block runs as written. A ``<!-- doctest: ... -->`` comment on the lines just above a fence
# prepares its block (an HTML comment: the rendered page does not show it):
#   skip (REASON)                 the block does not run here (the static check above still applies)
#   setup                         what the reader has but the block does not make (``rotmats``,
#     CODE...                     ``keypoints``), run first in the block's namespace, lines up to ``-->``
#   replace `OLD` -> `NEW` (WHY)  run the block with OLD (which must occur) replaced, to shrink a size
#   drop `TEXT` (REASON)          run the block without its lines containing TEXT (which must occur)
_DIRECTIVE = re.compile(r"<!--\s*doctest:\s*(.*?)-->", re.S)

#: the same, for the blocks of docs another session edits (docs/training.md, docs/evaluation.md),
#: keyed by (file, the block's first line); move them into the docs when those are free
EXTERNAL_DIRECTIVES = {
    ("docs/training.md", "from handflow.config import load_config"): [
        'replace `"loss.w_det=0"]` -> `"loss.w_det=0", *TINY_TRAIN]`',
        "setup\nimport torch\nfrom handflow.data import InterHandDataset\n"
        'items = [InterHandDataset("data_synth", "test", 64)[i] for i in range(2)]\n'
        'images = torch.stack([it["image"] for it in items])\n'
        'K = torch.stack([torch.as_tensor(it["K"]) for it in items]).float()\nsize = 64\n',
    ],
    ("docs/evaluation.md", "from handflow.evaluation import evaluate"): [
        'replace `device="cuda"` -> `device=DEVICE`',
    ],
}

#: the training overrides that make the sandbox's checkpoint (a run that finished: resuming it
#: trains nothing), for blocks that train: ``replace `config="cpu"` -> `config="cpu", overrides=TINY_TRAIN```
TINY_TRAIN = ["train.max_steps=2", "data.image_size=64", "data.batch_size=2", "data.augment=false", "data.num_workers=0",
              "model.flow_hidden=64", "train.ckpt_every=1000", "train.val_every=1000", "train.threads=1",
              "train.accelerator=cpu", "train.max_minutes=null", "loss.num_samples=2"]
#: seconds one block may take on a 2-core machine (the set of them: well under a minute)
BLOCK_BUDGET_S = 20.0


def _directives(where: str, text: str, start: int, code: str) -> list[str]:
    """The ``doctest:`` comments right above the fence that starts at ``start``."""
    before = text[:start].rstrip()
    out: list[str] = []
    while before.endswith("-->"):
        i = before.rfind("<!--")
        m = _DIRECTIVE.fullmatch(before[i:])
        if m is None:
            break
        out.insert(0, m.group(1).strip())
        before = before[:i].rstrip()
    return out + EXTERNAL_DIRECTIVES.get((where, code.splitlines()[0]), [])


def _run_blocks() -> list[tuple[str, int, str, list[str]]]:
    out = []
    for f in DOC_FILES:
        text = f.read_text(encoding="utf-8")
        where = f.relative_to(ROOT).as_posix()
        for m in _BLOCK.finditer(text):
            out.append((where, text[: m.start()].count("\n") + 2, m.group(1), _directives(where, text, m.start(), m.group(1))))
    return out


RUN_BLOCKS = _run_blocks()
_REPLACE = re.compile(r"replace\s+`(.+?)`\s*->\s*`(.*?)`\s*(\(.+\))?\s*$", re.S)
_DROP = re.compile(r"drop\s+`(.+?)`\s*\((.+)\)\s*$", re.S)
_SKIP = re.compile(r"skip\s*\((.+)\)\s*$", re.S)


def _prepare(code: str, directives: list[str]) -> tuple[str | None, str, str]:
    """(skip reason or None, setup code, the block's code to run) from its directives."""
    setup = []
    for d in directives:
        if m := _SKIP.match(d):
            return m.group(1), "", code
        if d.startswith("setup"):
            setup.append(d[len("setup"):].strip("\n"))
        elif m := _REPLACE.match(d):
            assert m.group(1) in code, f"doctest directive {d!r}: {m.group(1)!r} is not in the block"
            code = code.replace(m.group(1), m.group(2))
        elif m := _DROP.match(d):
            lines = code.splitlines(keepends=True)
            kept = [s for s in lines if m.group(1) not in s]
            assert len(kept) < len(lines), f"doctest directive {d!r}: no line of the block contains {m.group(1)!r}"
            code = "".join(kept)
        else:
            raise AssertionError(f"unknown doctest directive {d!r} (skip, setup, replace, drop)")
    return None, "\n".join(setup), code


def _photo(path: Path, source: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).convert("RGB").resize(size).save(path)


@pytest.fixture(scope="session")
def doc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the docs' blocks name, made once: a tiny synthetic dataset (``data``, ``data_synth``,
    ``DATA``), a tiny trained run (``runs/flow/checkpoints/last.ckpt``), MultiHands annotations of
    its train and test splits (``MH``), photos (``photo.jpg``, ``photos/``, ``my_photos/``) with the
    per-image file of docs/predict.md, and ``docs/lifting_example.json``."""
    import shutil

    from conftest import tiny_train

    from handflow.data.synth.generate import SynthConfig, generate
    from handflow.multihands.generate import GenerateConfig, dataset_targets
    from handflow.multihands.generate import generate as generate_multihands

    root = tmp_path_factory.mktemp("doc_sandbox")
    data = root / "data_synth"
    generate(data, SynthConfig(frames=10, cameras=2, image_size=64, seed=0), progress=False)
    for alias in ("data", "DATA"):
        (root / alias).symlink_to(data.name)
    tiny_train(data, root / "runs" / "flow", 2)
    mh = GenerateConfig(num=4, rounds=1, proposals_per_image=8, image_size=64, batch_images=8)
    for split in ("train", "test"):
        generate_multihands(root / "MH", split, mh, dataset_targets(data, split, 64), progress=False)
    jpg = next((data / "images" / "test").rglob("*.jpg"))
    _photo(root / "photo.jpg", jpg, (256, 256))
    for name in ("a/photo.jpg", "b/photo.jpg", "IMG_0042.png"):
        _photo(root / "photos" / name, jpg, (1920, 1080))
    _photo(root / "my_photos" / "hands.jpg", jpg, (256, 256))
    per_image = re.search(r"```json\n(\{\n  \"a/photo.jpg\".*?)```", (ROOT / "docs" / "predict.md").read_text(), re.S)
    assert per_image, "docs/predict.md: the per-image JSON example moved"
    (root / "per_image.json").write_text(per_image.group(1), encoding="utf-8")
    (root / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "lifting_example.json", root / "docs")
    return root


def _sandbox(template: Path, dest: Path) -> Path:
    """A fresh copy of the template for one block: the datasets are linked (read only), the run is
    copied with hard links (checkpoints are replaced atomically, never written in place)."""
    import os
    import shutil

    for entry in template.iterdir():
        target = dest / entry.name
        if entry.is_symlink():
            target.symlink_to(os.readlink(entry))
        elif entry.name in ("data_synth", "MH"):
            target.symlink_to(entry)
        elif entry.is_dir():
            shutil.copytree(entry, target, copy_function=os.link)
        else:
            os.link(entry, target)
    return dest


@contextlib.contextmanager
def _alarm(seconds: float, what: str) -> Iterator[None]:
    """Raise in the main thread after ``seconds`` (SIGALRM; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} still running after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("where,line,code,directives", RUN_BLOCKS, ids=[f"{f}:{n}" for f, n, _, _ in RUN_BLOCKS])
def test_docs_python_blocks_run(where: str, line: int, code: str, directives: list[str], doc_template: Path,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import torch

    skip, setup, run = _prepare(code, directives)
    if skip is not None:
        pytest.skip(f"{where}:{line}: {skip}")
    monkeypatch.chdir(_sandbox(doc_template, tmp_path))
    # fresh per block; a directive may name TINY_TRAIN (the sandbox run's overrides) and DEVICE
    namespace: dict[str, Any] = {"__name__": "__doc_example__", "TINY_TRAIN": list(TINY_TRAIN),
                                 "DEVICE": "cuda" if torch.cuda.is_available() else "cpu"}
    if setup:
        exec(compile(setup, f"{where}:{line} (setup)", "exec", dont_inherit=True), namespace)
    tree = compile(run, f"{where}:{line}", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    ast.increment_lineno(tree, line - 1)
    t0 = time.perf_counter()
    with _alarm(3 * BLOCK_BUDGET_S, f"{where}:{line}"):  # a block that hangs fails instead of stalling the suite
        exec(compile(tree, where, "exec", dont_inherit=True), namespace)
    took = time.perf_counter() - t0
    assert took < BLOCK_BUDGET_S, f"{where}:{line} took {took:.1f} s (budget {BLOCK_BUDGET_S} s): shrink it with a directive"


def test_external_directives_name_blocks() -> None:
    firsts = {(f, c.splitlines()[0]) for f, _, c, _ in RUN_BLOCKS}
    assert not set(EXTERNAL_DIRECTIVES) - firsts, "EXTERNAL_DIRECTIVES names a block the docs no longer have"


def test_every_directive_is_above_a_block() -> None:
    """A ``doctest:`` comment that is not right above a fence (moved, or a blank paragraph
    between) would be ignored silently."""
    used = sum(len(d) for _, _, _, d in RUN_BLOCKS) - sum(len(v) for v in EXTERNAL_DIRECTIVES.values())
    written = sum(len(_DIRECTIVE.findall(f.read_text(encoding="utf-8"))) for f in DOC_FILES)
    assert used == written, f"{written - used} doctest comment(s) in the docs are not right above a ```python fence"


def test_docs_skips_are_few() -> None:
    skipped = [(f, n) for f, n, c, d in RUN_BLOCKS if _prepare(c, d)[0] is not None]
    assert len(skipped) <= 3, skipped
