"""population/ may import only numpy, cma and the standard library."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "population"
ALLOWED_THIRD_PARTY = {"numpy", "cma", "population"}


def test_import_statements_use_only_numpy_cma_and_stdlib():
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in ALLOWED_THIRD_PARTY or root in sys.stdlib_module_names \
                    or root == "__future__", f"{source.name} imports {root}"


def test_importing_population_loads_no_torch_or_essa():
    code = ("import sys, population; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'essa', 'vllm', 'transformers', 'scipy', 'mpi4py')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "[]"
