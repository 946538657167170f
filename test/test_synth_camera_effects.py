"""Camera nuisances of the synthetic endoscope: exposure, white balance, blur, flashes, JPEG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from endo_depth_ros import bags
from endo_depth_ros.cli.synth import main
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.synth import CameraEffects, SynthConfig, render_sequence

BASE = SynthConfig(width=64, height=48, frames=6, seed=4)


def _frames(**effects: float) -> list:
    return list(render_sequence(BASE.with_(camera=CameraEffects(**effects))))


@pytest.fixture(scope='module')
def plain() -> list:
    return list(render_sequence(BASE))


def test_effects_are_off_by_default_and_change_only_the_image(plain) -> None:
    assert not CameraEffects().active
    default = _frames()
    for a, b in zip(plain, default, strict=True):
        assert np.array_equal(a.rgb, b.rgb)
    effects = _frames(gain_ramp=0.5, gain_ramp_period=4, motion_blur=0.03, jpeg_quality=70,
                      white_balance_drift=0.2, white_balance_period=5)
    for a, b in zip(plain, effects, strict=True):
        assert not np.array_equal(a.rgb, b.rgb)
        assert np.array_equal(a.depth, b.depth, equal_nan=True)
        assert np.array_equal(a.pose, b.pose) and np.array_equal(a.seg, b.seg)
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(
        effects, _frames(gain_ramp=0.5, gain_ramp_period=4, motion_blur=0.03,
                         jpeg_quality=70, white_balance_drift=0.2, white_balance_period=5),
        strict=True)), 'deterministic per seed and frame'


def test_gain_steps_are_piecewise_constant_within_their_bounds() -> None:
    effects = CameraEffects(gain_step=0.3, gain_step_every=10)
    gains = np.array([effects.channel_gains(i, seed=1)[0] for i in range(300)])
    assert gains[0] == pytest.approx(1.0)
    changes = np.flatnonzero(np.abs(np.diff(gains)) > 1e-6)
    assert 15 <= changes.size <= 50  # ~30 steps expected
    assert np.all(gains <= 1.3 + 1e-6) and np.all(gains >= 1 / 1.3 - 1e-6)
    runs = np.diff(np.concatenate([[0], changes + 1, [300]]))
    assert runs.max() > 1  # levels hold for several frames


def test_gain_ramp_and_white_balance_drift_are_slow_and_bounded() -> None:
    effects = CameraEffects(gain_ramp=0.4, gain_ramp_period=100, white_balance_drift=0.1)
    gains = np.array([effects.channel_gains(i, seed=2) for i in range(400)])
    log_gain = np.log(gains)
    assert np.abs(np.diff(log_gain, axis=0)).max() < 0.04  # slow: < 4 % per frame
    assert log_gain.max() > np.log(1.3) and log_gain.min() < -np.log(1.3)
    assert np.all(np.abs(log_gain) <= np.log(1.4) + np.log(1.1) + 1e-6)
    # The channels drift apart (white balance), not only together.
    assert np.ptp(log_gain[:, 0] - log_gain[:, 2]) > 0.05


def test_a_gain_step_changes_the_brightness_but_not_the_truth(plain) -> None:
    brighter = _frames(gain_ramp=0.5, gain_ramp_period=1e9)  # constant phase: one gain
    gain = CameraEffects(gain_ramp=0.5, gain_ramp_period=1e9).channel_gains(0, BASE.seed)[0]
    ratio = brighter[0].rgb.mean() / plain[0].rgb.mean()
    assert (ratio - 1) * (gain - 1) > 0  # brighter with gain > 1, darker below
    assert abs(ratio - 1) > 0.02


def test_specular_flashes_saturate_large_areas(plain) -> None:
    flashes = _frames(specular_flash_rate=1.0)
    for a, b in zip(plain, flashes, strict=True):
        assert (b.rgb.min(axis=2) > 245).mean() > (a.rgb.min(axis=2) > 245).mean() + 0.01


def test_jpeg_and_motion_blur_keep_the_image_close(plain) -> None:
    for effects in ({'jpeg_quality': 80}, {'motion_blur': 0.02}):
        changed = _frames(**effects)
        diff = np.abs(changed[2].rgb.astype(float) - plain[2].rgb.astype(float))
        assert 0.2 < diff.mean() < 12, effects


@pytest.mark.parametrize('bad', [{'gain_step': -0.1}, {'jpeg_quality': 101},
                                 {'jpeg_quality': 50.5}, {'specular_flash_rate': 2.0},
                                 {'gain_ramp': 1.0}, {'gain_step_every': 0.5},
                                 {'motion_blur': float('nan')}])
def test_invalid_effects_are_rejected(bad) -> None:
    with pytest.raises(ConfigError):
        CameraEffects(**bad)


def test_cli_nuisance_flags_reach_the_renderer(tmp_path: Path, capsys) -> None:
    out = tmp_path / 'slow'
    assert main([str(out), '--frames', '3', '--width', '48', '--height', '40', '--nuisances',
                 '--jpeg-quality', '60', '--speed-mm', '0.3', '--roll-deg', '10',
                 '--tilt-deg', '3', '--quiet']) == 0
    frames = list(bags.read_frames(out, bags.detect_topics(out)))
    expected = list(render_sequence(SynthConfig(
        width=48, height=40, frames=3, speed_mm=0.3, roll_deg=10, tilt_deg=3,
        camera=replace(CameraEffects.endoscope(), jpeg_quality=60))))
    for got, want in zip(frames, expected, strict=True):
        assert np.array_equal(got.rgb, want.rgb)
    assert main([str(tmp_path / 'bad'), '--jpeg-quality', '101', '--quiet']) == 2
    assert 'jpeg_quality' in capsys.readouterr().err
