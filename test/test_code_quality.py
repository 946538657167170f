"""Lint, type checks and the ROS-free core rule run as part of the test suite."""

from __future__ import annotations

import ast
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE = REPO_ROOT / 'endo_depth_ros'
# The only modules allowed to talk to ROS: the node and its message conversions.
ROS_LAYER = CORE / 'ros'
ROS_MODULE_PREFIXES = ('rclpy', 'launch', 'launch_ros', 'tf2_ros', 'cv_bridge', 'rosidl',
                       'builtin_interfaces', 'rosgraph_msgs')


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f'{name} is not installed next to {sys.executable}; run ./dev setup')
    return path


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [_tool('ruff'), 'check', 'endo_depth_ros', 'test', 'launch', 'setup.py'],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([_tool('mypy')], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_ros(module: str) -> bool:
    top = module.split('.')[0]
    return top.endswith('_msgs') or top in ROS_MODULE_PREFIXES


def test_core_modules_import_neither_rclpy_nor_message_packages() -> None:
    core_files = [p for p in CORE.rglob('*.py') if ROS_LAYER not in p.parents]
    assert len(core_files) > 3
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(m for m in _imported_modules(p) if _is_ros(m))
        for p in core_files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
