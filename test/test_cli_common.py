from __future__ import annotations

import argparse

import pytest

from endo_depth_ros.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, run_cli
from endo_depth_ros.errors import BagError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='tool')
    parser.add_argument('path')
    return parser


def test_success_returns_the_commands_code() -> None:
    assert run_cli('tool', _parser(), lambda args: None, ['x']) == 0
    assert run_cli('tool', _parser(), lambda args: 3, ['x']) == 3


def test_package_errors_become_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise BagError(f'Could not open bag {args.path}: not a bag.')

    assert run_cli('tool', _parser(), fail, ['missing.mcap']) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == 'tool: error: Could not open bag missing.mcap: not a bag.\n'


def test_os_errors_name_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args: argparse.Namespace) -> int:
        with open(args.path):
            return 0

    assert run_cli('tool', _parser(), fail, ['/nonexistent/file']) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith('tool: error: No such file or directory: /nonexistent/file')
    assert err.count('\n') == 1


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    assert run_cli('tool', _parser(), interrupted, ['x']) == EXIT_INTERRUPTED
    assert 'interrupted' in capsys.readouterr().err
