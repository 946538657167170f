"""``endo-depth-bench consistency`` prints its tables and refuses bad options."""

from __future__ import annotations

import pytest

from endo_depth_ros.cli.bench import main


def test_consistency_prints_truth_referenced_metrics_per_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['consistency', '--size', '48x40', '--frames', '25', '--sequences', 'slow-s3',
                 '--models', 'gt,flicker', '--modes', 'none,stream']) in (0, None)
    out = capsys.readouterr().out
    assert '| slow-s3' in out and 'ratio gap 20' in out and 'RPE rot identity' in out
    assert out.count('| slow-s3 ') >= 6  # 2 models x 2 modes + 2 summary rows
    assert 'Over all sequences' in out and '| no harm' in out  # the verdict table


def test_consistency_runs_none_once_and_labels_each_variant(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['consistency', '--size', '48x40', '--frames', '25', '--sequences', 'slow-s3',
                 '--models', 'stable', '--modes', 'none,stream',
                 '--variants', 'default,gain-0.3,no-fusion']) in (0, None)
    out = capsys.readouterr().out
    first = out.split('### Mean')[0]
    assert first.count('| none ') == 1
    assert '| stream [gain-0.3] ' in first and '| stream [no-fusion] ' in first
    assert 'ratio err stream [no-fusion]/none' in out


def test_consistency_rejects_unknown_names_and_short_sequences(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['consistency', '--frames', '10']) == 2
    assert main(['consistency', '--models', 'nope']) == 2
    assert main(['consistency', '--variants', 'louder']) == 2
    err = capsys.readouterr().err
    assert 'nope' in err and 'louder' in err
