"""endo-depth-bench models: the table prints (timings themselves are not asserted)."""

from __future__ import annotations

import pytest

from endo_depth_ros.bench.models import parse_sizes
from endo_depth_ros.cli.bench import main
from endo_depth_ros.errors import ConfigError


def test_models_benchmark_prints_the_photometric_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(['models', '--skip-networks', '--accuracy-frames', '0', '--sizes', '48x64'])
    out = capsys.readouterr().out
    assert code == 0
    assert '| photometric | opencv' in out and '48x64' in out


def test_sizes_are_height_by_width() -> None:
    assert parse_sizes('266x350, 518x518') == [(266, 350), (518, 518)]


def test_bad_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Bad size '266'"):
        parse_sizes('266')
