"""Temporal alignment on the real pipeline: model -> odometry -> alignment, feedback included.

The unit tests of ``test_temporal.py`` feed the aligner exact poses; here the poses come
from visual odometry tracked on the aligner's own output (the loop of the live node).
"""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_ros import metrics, models
from endo_depth_ros.models.base import DepthModel
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence
from endo_depth_ros.temporal import AlignmentConfig


class FlickeringModel(DepthModel):
    """A per-frame network's failure mode: true disparity with 5 % noise under a random
    scale and shift per frame (the issue's robustness scenario)."""

    name = 'flicker'
    output_kind = 'relative_disparity'
    device = 'cpu'
    precision = 'fp32'
    backend = 'test'

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._next = np.zeros((0, 0), np.float32)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._next.shape[0], self._next.shape[1]

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def set_next(self, depth: np.ndarray) -> None:
        """The true depth (H, W) metres behind the next image."""
        self._next = depth

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        truth = 1.0 / self._next.astype(np.float64)
        noisy = truth * (1 + 0.05 * self._rng.standard_normal(truth.shape))
        scale = self._rng.uniform(0.5, 2.0)
        shift = self._rng.uniform(-0.5, 1.0) * scale * float(np.nanmin(truth))
        return np.repeat((scale * noisy + shift).astype(np.float32)[None], len(batch), 0)


@pytest.fixture(scope='module')
def flight() -> list[SynthFrame]:
    return list(render_sequence(SynthConfig(width=160, height=128, frames=70, seed=2)))


def _run(frames: list[SynthFrame], model: DepthModel, mode: str) -> tuple[float, np.ndarray]:
    """TAE (×100, one sequence-level median scale, true poses) and per-frame scale ratio."""
    config = PipelineConfig(alignment=AlignmentConfig(mode=mode))
    pipeline = Pipeline(config, model=model)
    out = {}
    for frame in frames:
        if isinstance(model, FlickeringModel):
            model.set_next(frame.depth)
        for result in pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns,
                                       compute_points=False):
            out[result.index] = result.depth
    for result in pipeline.flush():
        out[result.index] = result.depth
    depth = [out[i] for i in range(len(frames))]
    truth = [f.depth for f in frames]
    fit = metrics.fit_alignment(depth, truth, 'sequence-median')[0]
    assert fit is not None
    tae = metrics.temporal_alignment_error([fit.apply(d) for d in depth],
                                           [f.pose for f in frames], frames[0].intrinsics)
    assert tae is not None
    ratio = np.array([np.nanmedian(d / t) for d, t in zip(depth, truth, strict=True)])
    return tae, ratio / ratio[0]


def test_stream_lowers_the_tae_of_the_photometric_model_without_scale_drift(
        flight: list[SynthFrame]) -> None:
    model = models.load('photometric')
    raw_tae, _ = _run(flight, model, 'none')
    tae, ratio = _run(flight, model, 'stream')
    assert tae < raw_tae
    # The fixed reference scale is kept: no collapse or runaway through odometry.
    assert ratio.min() > 0.8 and ratio.max() < 1.25


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_alignment_cuts_the_tae_of_a_flickering_model_three_times(
        flight: list[SynthFrame], mode: str) -> None:
    raw_tae, _ = _run(flight, FlickeringModel(seed=4), 'none')
    tae, ratio = _run(flight, FlickeringModel(seed=4), mode)
    assert tae * 3 < raw_tae
    assert ratio.min() > 0.7 and ratio.max() < 1.4
