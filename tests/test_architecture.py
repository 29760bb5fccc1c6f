"""The layers of README.md's "Architecture" table hold: every module of the package is in a row, imports go
down only (or stay in their row), and no tool imports another tool.

The imports are read with ``ast`` from every module's source (those inside functions too), not by importing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = "mnms_groupdistil"
#: The row of the command-line tools, which must not import one another.
TOOLS = "tools"


def architecture_rows(readme: str) -> list[tuple[str, list[str]]]:
    """``[(layer, [module, ...]), ...]`` of the README's Architecture table, top row (the highest layer) first."""
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], re.findall(r"`([\w.]+)`", cells[1])))
    return rows


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package by its dotted name below the package (``data.mnms``; ``data`` for
    ``data/__init__.py``; ``""`` for the package's own ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The package modules that module ``name`` (at ``path``) imports, absolutely or relatively."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()

    def add(dotted: str, names: Sequence[str] = ()) -> None:
        """``dotted`` (below the package) and those of ``names`` that are modules in it."""
        submodules = [f"{dotted}.{n}".lstrip(".") for n in names if f"{dotted}.{n}".lstrip(".") in modules]
        found.update(submodules or [dotted])

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name[len(PACKAGE) + 1 :])
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                add(".".join([*base, *([node.module] if node.module else [])]), names)
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                add(node.module[len(PACKAGE) + 1 :], names)
    return found - {name}


def entry_of(module: str, rows: Sequence[tuple[str, list[str]]]) -> tuple[str, str] | None:
    """``(layer, entry)`` of the longest table entry that is ``module`` or a package holding it."""
    matches = [
        (len(entry), layer, entry)
        for layer, entries in rows
        for entry in entries
        if module == entry or module.startswith(entry + ".")
    ]
    return max(matches)[1:] if matches else None


def layer_of(module: str, rows: Sequence[tuple[str, list[str]]]) -> str | None:
    """The row of the longest table entry that is ``module`` or a package holding it."""
    found = entry_of(module, rows)
    return found[0] if found else None


def layering_problems(rows: Sequence[tuple[str, list[str]]], imports: Mapping[str, set[str]]) -> list[str]:
    """One line per module in no row, per import from a higher row, and per tool importing another tool.

    A tool is an entry of the tools row; the modules of a tool that is a package may import one another.

    Args:
        rows: the table (:func:`architecture_rows`), highest layer first.
        imports: module -> the package modules it imports; the package's own ``__init__`` is ``""``.
    """
    rank = {layer: len(rows) - i for i, (layer, _) in enumerate(rows)}  # higher row, higher rank
    problems = []
    for module, targets in sorted(imports.items()):
        if module == "":
            problems += [f"the package's __init__ imports {t}: everything imports it" for t in sorted(targets)]
            continue
        layer = layer_of(module, rows)
        if layer is None:
            problems.append(f"{module} is in no row of README.md's Architecture table")
            continue
        for target in sorted(targets):
            target_layer = layer_of(target, rows)
            if target == "" or target_layer is None:
                continue  # the package itself; a module in no row is reported as such
            if rank[target_layer] > rank[layer]:
                problems.append(f"{module} ({layer}) imports {target} ({target_layer}), a higher layer")
            elif layer == target_layer == TOOLS and entry_of(module, rows) != entry_of(target, rows):
                problems.append(f"the tool {module} imports the tool {target}; move what they share down a layer")
    return problems


def test_every_module_imports_down_only_and_no_tool_imports_a_tool():
    rows = architecture_rows((REPO / "README.md").read_text(encoding="utf-8"))
    assert TOOLS in [layer for layer, _ in rows] and all(modules for _, modules in rows), rows
    modules = package_modules(REPO / PACKAGE)
    named = {entry for _, entries in rows for entry in entries}
    assert named <= set(modules), f"the table names modules that do not exist: {sorted(named - set(modules))}"
    imports = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert layering_problems(rows, imports) == []


ROWS = [
    ("tools", ["tools", "tools.report", "tools.export"]),
    ("shared", ["tools.runs"]),
    ("datasets", ["datasets"]),
    ("method", ["losses"]),
]


@pytest.mark.parametrize(
    "imports, problem",
    [
        ({"losses": {"datasets.mnms"}}, "losses (method) imports datasets.mnms (datasets), a higher layer"),
        ({"datasets.mnms": {"tools.runs"}}, "datasets.mnms (datasets) imports tools.runs (shared), a higher layer"),
        ({"tools.runs": {"tools.report"}}, "tools.runs (shared) imports tools.report (tools), a higher layer"),
        (
            {"tools.report": {"tools.export"}},
            "the tool tools.report imports the tool tools.export; move what they share down a layer",
        ),
        (
            {"tools.export.bundle": {"tools.report"}},
            "the tool tools.export.bundle imports the tool tools.report; move what they share down a layer",
        ),
        (
            {"tools.new": {"tools.export.bundle"}},
            "the tool tools.new imports the tool tools.export.bundle; move what they share down a layer",
        ),
        ({"plots": {"losses"}}, "plots is in no row of README.md's Architecture table"),
        ({"": {"losses"}}, "the package's __init__ imports losses: everything imports it"),
    ],
)
def test_the_check_reports_each_kind_of_problem(imports, problem):
    assert layering_problems(ROWS, imports) == [problem]
    fine = {
        "tools.report": {"tools.runs", "datasets.mnms", "losses"},
        "tools.export.bundle": {"tools.export.networks", "tools.runs"},
        "tools.runs": {"datasets"},
        "datasets.mnms.frames": {"datasets.mnms.release", "losses"},
    }
    assert layering_problems(ROWS, fine) == []


def test_imports_are_read_absolute_relative_and_inside_functions(tmp_path):
    package = tmp_path / PACKAGE
    (package / "data").mkdir(parents=True)
    for name in ("__init__.py", "losses.py", "registry.py", "data/__init__.py", "data/nifti.py"):
        (package / name).write_text("")
    (package / "data" / "mnms.py").write_text(
        "from ..losses import x\nfrom . import nifti\nimport mnms_groupdistil.registry\n"
        "def f():\n    from mnms_groupdistil import losses, data\n"
    )
    modules = package_modules(package)
    assert set(modules) == {"", "losses", "registry", "data", "data.nifti", "data.mnms"}
    assert imported_modules("data.mnms", modules["data.mnms"], modules) == {"losses", "data.nifti", "registry", "data"}
