"""Accuracy of the photometric prior on synthetic endoscope sequences with ground truth."""

from __future__ import annotations

from endo_depth_ros.bench.models import photometric_accuracy

#: The issue's target for the mean rank correlation with the true depth.
MIN_SPEARMAN = 0.7
#: Median-scaled AbsRel must stay below this fraction of a constant prediction's.
MAX_ABS_REL_VS_CONSTANT = 0.8


def test_photometric_prior_beats_a_constant_prediction_on_synthetic_video() -> None:
    rows = photometric_accuracy(frames=12, seeds=(0,), stride=3)
    mean = rows[-1]
    assert mean['sequence'] == 'mean' and mean['frames'] == 8
    assert mean['spearman'] >= MIN_SPEARMAN
    assert mean['abs_rel'] <= MAX_ABS_REL_VS_CONSTANT * mean['abs_rel constant']
    for row in rows[:-1]:
        assert row['abs_rel'] < row['abs_rel constant'], row
