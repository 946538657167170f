"""endo-depth-bench models: the table prints (timings themselves are not asserted)."""

from __future__ import annotations

import pytest

from endo_depth_ros.bench import parse_sizes
from endo_depth_ros.cli.bench import main
from endo_depth_ros.errors import ConfigError


def test_models_benchmark_prints_the_photometric_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(['models', '--skip-networks', '--accuracy-frames', '0', '--sizes', '48x64'])
    out = capsys.readouterr().out
    assert code == 0
    assert '| photometric | opencv' in out and '48x64' in out


def test_sizes_are_width_by_height() -> None:
    assert parse_sizes('350x266, 518x518') == [(350, 266), (518, 518)]


def test_bad_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Bad size '266'"):
        parse_sizes('266')


def test_side_below_minimum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"Bad size '13x518'; width and height must be >= 14"):
        parse_sizes('350x266,13x518', min_side=14)
