"""What users run is written against tlcore's public API only.

The command line (cli.py), the service (api/), the notebooks' code cells, the benchmarks and
the examples are tlcore's own users: none imports ``tlcore._core`` or reads a private
(``_name``) attribute of a tlcore object. Read with the ast module, not by running anything.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Iterable, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "python" / "tlcore" / "cli.py"
SELF_NAMES = {"self", "cls"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.AST) -> Optional[ast.AST]:
    """The expression an attribute chain starts from: ``a`` in ``a.b().c[0]._d``."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


class _Checker(ast.NodeVisitor):
    """Collects ``(line, what)`` for each use of tlcore's private parts.

    ``foreign`` holds names bound to modules other than tlcore (``os``, ``torch``...): their
    own private attributes (``sys._getframe``) are not tlcore's business. Every other
    ``x._name`` is reported, unless ``x`` is ``self``/``cls`` (a class using its own state).
    ``relative_is_tlcore``: a relative import reaches into tlcore (true for cli.py, false
    for api/, whose relative imports are its own modules).
    """

    def __init__(self, foreign: Set[str], relative_is_tlcore: bool,
                 exempt_functions: Iterable[str] = ()) -> None:
        self.foreign = foreign
        self.relative_is_tlcore = relative_is_tlcore
        self.exempt = set(exempt_functions)
        self.problems: List[Tuple[int, str]] = []

    def _report(self, node: ast.AST, what: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), what))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name not in self.exempt:
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "tlcore":
                if any(_is_private(p) for p in parts):
                    self._report(node, f"import {alias.name}")
            else:
                self.foreign.add(alias.asname or parts[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        parts = [p for p in module.split(".") if p]
        tlcore_module = (node.level == 0 and parts[:1] == ["tlcore"]) or (node.level > 0 and self.relative_is_tlcore)
        if tlcore_module:
            names = [a.name for a in node.names]
            if any(_is_private(p) for p in parts) or any(_is_private(n) for n in names):
                self._report(node, f"from {'.' * node.level}{module} import {', '.join(names)}")
        elif node.level == 0:
            self.foreign.update(a.asname or a.name for a in node.names)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "_core" or _is_private(node.attr):
            root = _root(node.value)
            name = root.id if isinstance(root, ast.Name) else None
            if node.attr == "_core" or not (name in SELF_NAMES or name in self.foreign):
                self._report(node, f"{ast.unparse(node)}")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "_core":
            self._report(node, "_core")

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(obj, "_private") is the same access spelt differently.
        func = node.func
        if (isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)):
            root = _root(node.args[0])
            if not (isinstance(root, ast.Name) and (root.id in SELF_NAMES or root.id in self.foreign)):
                self._report(node, ast.unparse(node))
        self.generic_visit(node)


def check_source(source: str, relative_is_tlcore: bool = False, exempt_functions: Iterable[str] = (),
                 foreign: Optional[Set[str]] = None) -> List[Tuple[int, str]]:
    checker = _Checker(set() if foreign is None else foreign, relative_is_tlcore, exempt_functions)
    checker.visit(ast.parse(source))
    return checker.problems


def notebook_cells(path: Path) -> List[str]:
    """The code cells' sources, IPython magics and shell escapes (``%``, ``!``) blanked."""
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    sources = []
    for cell in cells:
        lines = "".join(cell["source"]).splitlines()
        sources.append("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines))
    return sources


def scanned_python_files() -> List[Path]:
    files = [CLI]
    for folder in ("api", "benchmarks", "examples"):
        files += sorted((REPO / folder).rglob("*.py"))
    return files


def _problems_of(path: Path) -> List[str]:
    rel = path.relative_to(REPO)
    if path.suffix == ".ipynb":
        out, foreign = [], set()  # one kernel: imports carry over from cell to cell
        for k, source in enumerate(notebook_cells(path)):
            out += [f"{rel} cell {k} line {line}: {what}" for line, what in check_source(source, foreign=foreign)]
        return out
    is_cli = path == CLI
    found = check_source(path.read_text(encoding="utf-8"), relative_is_tlcore=is_cli,
                         exempt_functions=())
    return [f"{rel}:{line}: {what}" for line, what in found]


USERS = scanned_python_files() + sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", USERS, ids=[str(p.relative_to(REPO)) for p in USERS])
def test_uses_only_the_public_api(path: Path):
    problems = _problems_of(path)
    assert not problems, "private parts of tlcore used:\n" + "\n".join(problems)


def test_the_scan_covers_every_kind_of_user():
    names = {str(p.relative_to(REPO)) for p in USERS}
    assert "python/tlcore/cli.py" in names and "api/app.py" in names
    assert "benchmarks/models.py" in names and "notebooks/flowers.ipynb" in names


@pytest.mark.parametrize("source,expected", [
    ("from tlcore import _core\n_core.Subset", ["from tlcore import _core", "_core"]),
    ("import tlcore._core as c", ["import tlcore._core"]),
    ("from tlcore._core import Subset", ["from tlcore._core import Subset"]),
    ("from tlcore.learner import _payload", ["from tlcore.learner import _payload"]),
    ("import tlcore\ntlcore._core.Subset(d, [0])", ["tlcore._core"]),
    ("import tlcore\nloader = tlcore.DataLoader(d)\nloader._loader", ["loader._loader"]),
    ("import tlcore\ntlcore.load(p)._payload['x']", ["tlcore.load(p)._payload"]),
    ("import tlcore\ngetattr(tlcore.load(p), '_payload')", ["getattr(tlcore.load(p), '_payload')"]),
    ("import tlcore\ntlcore.distributed._free_port()", ["tlcore.distributed._free_port"]),
    ("import sys, os\nsys._getframe(0)\nos._exit(0)", []),
    ("from torch import nn\nnn._reduction", []),
    ("class A:\n    def f(self):\n        return self._x, cls._y", []),
    ("import tlcore\ntlcore.__version__\nx.__class__", []),
])
def test_the_checker_finds_private_uses(source, expected):
    assert [what for _, what in check_source(source)] == expected


def test_the_checker_reads_relative_imports_of_cli_as_tlcore_and_skips_exempt_functions():
    source = "from . import _core\nfrom .files import atomic_write_bytes\n" \
             "def _evaluate(a):\n    return a._loader\n"
    assert [w for _, w in check_source(source, relative_is_tlcore=True, exempt_functions={"_evaluate"})] == [
        "from . import _core"]
    assert check_source("from .registry import ModelRegistry") == []


def test_notebook_magics_do_not_break_the_parse(tmp_path: Path):
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "!ls\n", "import tlcore\n"]},
                    {"cell_type": "markdown", "source": ["tlcore._core is private"]}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_cells(path) == ["\n\nimport tlcore"]


def test_every_name_in_all_exists_and_is_public():
    import tlcore

    missing = [name for name in tlcore.__all__ if not hasattr(tlcore, name)]
    assert not missing, f"tlcore.__all__ names what tlcore lacks: {missing}"
    assert len(set(tlcore.__all__)) == len(tlcore.__all__)
    assert not [n for n in tlcore.__all__ if _is_private(n)]
    assert "_core" not in tlcore.__all__


def test_transforms_offer_every_augmentation_op():
    from tlcore import transforms

    missing = [name for name in transforms.__all__ if not hasattr(transforms, name)]
    assert not missing
    ops = {name for name in transforms.__all__
           if isinstance(getattr(transforms, name), type) and issubclass(getattr(transforms, name), transforms.Op)}
    assert {"Resize", "CenterCrop", "RandomResizedCrop", "PadRandomCrop", "RandomHorizontalFlip",
            "RandomRotation", "RandomZoom", "ColorJitter", "Grayscale3", "RandomGrayscale"} <= ops
    # Every op the extension binds is public through tlcore.transforms.
    from tlcore import _core

    bound = {name for name, value in vars(_core).items()
             if isinstance(value, type) and issubclass(value, _core.Op) and value is not _core.Op}
    assert bound <= ops, f"ops bound in _core but not in tlcore.transforms: {sorted(bound - ops)}"


def test_public_names_are_what_the_callers_need():
    import tlcore

    ds = tlcore.fashion_mnist(train=False)
    subset = tlcore.Subset(ds, tlcore.per_class_subset(ds.labels(), 2, 0))
    assert len(subset) == 20 and isinstance(subset, tlcore.Dataset)
    model = tlcore.create_model("simple_cnn", 10, in_channels=1, input_size=28)
    assert model.parameter_count > 0 and "mobilenet_v2" in tlcore.model_names()
    image = tlcore.transforms.Pipeline.preset("cifar-eval", 28, 1)(ds.image(0, channels=1))
    assert image.shape == (28, 28, 1)
