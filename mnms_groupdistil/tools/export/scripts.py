"""The package modules an exported ``inference.json`` uses, copied verbatim into the bundle's ``scripts/``, and
the config rewritten to import them from there."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.run_settings import package_versions

__all__ = ["PACKAGE", "SCRIPTS", "copy_scripts", "script_modules", "standalone_config"]

PACKAGE = "mnms_groupdistil"
PACKAGE_DIR = Path(__file__).resolve().parents[2]
SCRIPTS = "scripts"


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"module {module} not found")
    return Path(spec.origin)


def _imported_package_modules(module: str) -> list[str]:
    """Package modules that ``module`` imports; they must be relative imports (the copy is not the package)."""
    path = _module_file(module)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.append(target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            absolute = [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
            if absolute:
                raise ValueError(
                    f"{path} imports {absolute[0]} absolutely; a module used by inference.json is copied into "
                    "exported bundles, so it must import the package's modules relatively (from .x import y)."
                )
    return found


def script_modules(roots: Sequence[str]) -> list[str]:
    """``roots`` and every package module they import (relatively), transitively; sorted.

    Raises:
        ValueError: a module imports a package module absolutely.
    """
    todo, seen = list(roots), set()
    while todo:
        module = todo.pop()
        if module in seen or module == PACKAGE:
            continue
        seen.add(module)
        todo += _imported_package_modules(module)
    return sorted(seen)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package
        return False


def _config_modules(config: Any) -> set[str]:
    """Package modules named in a config's strings (``_target_`` names and ``$`` expressions)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            for dotted in re.findall(rf"\b{PACKAGE}(?:\.\w+)+", node):
                parts = dotted.split(".")
                for end in range(len(parts), 1, -1):  # longest prefix that is a module
                    if _is_module(".".join(parts[:end])):
                        names.add(".".join(parts[:end]))
                        break

    walk({k: v for k, v in config.items() if k != "imports"})
    return names


def _rename_package(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _rename_package(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_package(v) for v in node]
    if isinstance(node, str):
        return re.sub(rf"\b{PACKAGE}\b", SCRIPTS, node)
    return node


def standalone_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(config, modules)``: ``config`` importing the package modules it names (and theirs) from ``scripts``.

    Raises:
        ValueError: a module it needs imports a package module absolutely.
    """
    modules = script_modules(sorted(_config_modules(config)))
    imports = [i for i in config.get("imports", []) if not re.search(rf"\b{PACKAGE}\b", i)]
    config = {
        **config,
        "imports": imports + [f"$import {m}" for m in [PACKAGE, *modules]],
    }  # `$import a.b` binds no `a`
    return _rename_package(config), modules


def copy_scripts(modules: Sequence[str], scripts_dir: Path) -> list[Path]:
    """Copy each package module verbatim to ``scripts_dir`` (same relative path) with ``__init__.py`` files."""
    written = []
    version = package_versions((PACKAGE,))[PACKAGE]
    for module in modules:
        relative = _module_file(module).relative_to(PACKAGE_DIR)
        target = scripts_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_module_file(module), target)
        written.append(target)
        for folder in [scripts_dir, *(scripts_dir / p for p in relative.parents if str(p) != ".")]:
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text(f'"""Modules of {PACKAGE} {version}, copied verbatim."""\n')
    return written
