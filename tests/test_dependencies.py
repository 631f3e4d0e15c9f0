"""Every third-party module the project or its tests import comes from a declared dependency.

CI installs `.[test]` on a clean machine; a package installed here by hand would pass locally
and fail there. This walks the requirement closure of `biomedica[test]` in the installed
metadata and checks each import against it.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OWN = {"pipelines", "transforms", "server", "tests", "conftest", "bench"}
# Loaded by a benchmark from a folder its user names, to compare against; never installed.
COMPARED_AGAINST = {"pubmed_parser"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(name: str, extras: set[str]) -> set[str]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    stack = [(name, extras)]
    while stack:
        dist, wanted = stack.pop()
        key = (_norm(dist), tuple(sorted(wanted)))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.distribution(dist).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            stack.append((req.name, set(req.extras)))
    return {dist for dist, _ in seen}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_every_import_is_a_declared_dependency():
    declared = _closure("biomedica", {"test"})
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    providers = md.packages_distributions()
    undeclared = set()
    for folder in ("pipelines", "transforms", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for module in _imports(path):
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in OWN | COMPARED_AGAINST or top in local:
                    continue
                dists = providers.get(top, [])
                if not any(_norm(d) in declared for d in dists):
                    undeclared.add(f"{top} ({path.relative_to(ROOT)})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + ", ".join(
        sorted(undeclared)
    )
