"""ARCHITECTURE.md is the map of the code: every module in its tree exists and every module is in
it; the layering it describes (pyproject's import-linter contracts) holds, no import circle included."""
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGES = ("harness", "methods", "baselines")


def tree_modules() -> set[str]:
    """The .py paths of ARCHITECTURE.md's tree (two spaces of indent per folder level)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"## The tree\n\n```\n(.*?)\n```", text, flags=re.S).group(1)
    paths, folders = set(), []
    for line in block.splitlines():
        name = line.strip().split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def source_modules() -> set[str]:
    return {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "__pycache__" not in p.parts}


def test_every_module_is_in_the_architecture_tree_and_every_entry_exists():
    tree, code = tree_modules(), source_modules()
    assert not code - tree, f"modules missing from ARCHITECTURE.md's tree: {sorted(code - tree)}"
    assert not tree - code, f"ARCHITECTURE.md names modules that do not exist: {sorted(tree - code)}"


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is a test dependency (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                        "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"Contracts: \d+ kept, 0 broken", r.stdout), r.stdout[-4000:]
