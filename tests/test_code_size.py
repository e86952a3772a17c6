"""Sizes the code keeps (issue 19): no module of the package over 500 lines, no function over
80 lines except numba kernels (their loops stay whole so numba compiles them as one)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lthash"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _is_numba_kernel(node: ast.FunctionDef) -> bool:
    return any("njit" in ast.unparse(decorator) or "numba" in ast.unparse(decorator) for decorator in node.decorator_list)


def test_no_module_of_the_package_is_over_500_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_no_function_is_over_80_lines_except_numba_kernels():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_numba_kernel(node):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long
