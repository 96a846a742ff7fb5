"""population/ may import only numpy, cma and the standard library, and starts no threads."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "population"
ALLOWED_THIRD_PARTY = {"numpy", "cma", "population"}


def imported_modules():
    """(file name, full module name) of every absolute import statement in population/."""
    for source in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                yield from ((source.name, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield source.name, node.module


def test_import_statements_use_only_numpy_cma_and_stdlib():
    for name, module in imported_modules():
        root = module.split(".")[0]
        assert root in ALLOWED_THIRD_PARTY or root in sys.stdlib_module_names \
            or root == "__future__", f"{name} imports {root}"


def test_population_imports_no_threading_or_concurrent_futures():
    """The strategies are synchronous: background work belongs to the caller (essa/runtime)."""
    for name, module in imported_modules():
        assert module.split(".")[0] != "threading" and not module.startswith(
            "concurrent.futures") and module != "concurrent", f"{name} imports {module}"


def test_importing_population_loads_no_torch_or_essa():
    code = ("import sys, population; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'essa', 'vllm', 'transformers', 'scipy', 'mpi4py')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "[]"
