"""Settings of the temporal alignment (``AlignmentConfig``) and their validation."""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from endo_depth_ros.errors import ConfigError

#: Values of ``AlignmentConfig.mode``.
MODES = ('none', 'stream', 'window')
#: Values of ``AlignmentConfig.scale_source``.
SCALE_SOURCES = ('fixed', 'model', 'none')
#: When the poses given to ``push`` reproject the references of a fit (see ``reproject``).
REPROJECT_POLICIES = ('auto', 'always', 'never')
#: Values of ``AlignmentConfig.robust``.
ROBUST_METHODS = ('trimmed', 'huber', 'none')
#: Values of ``AlignmentConfig.estimator``.
ESTIMATORS = ('symmetric', 'ols')


@dataclass(frozen=True)
class AlignmentConfig:
    """Temporal alignment settings (see ``endo_depth_ros.temporal`` for the procedure).

    Attributes:
        mode: 'none' (passthrough), 'stream' (online, zero latency) or 'window'
            (offline overlapping windows, latency = window stride).
        capacity: frames kept in the ring buffer; 0 picks the smallest the mode needs
            (stream: reference_frames + 2, window: window).
        reference_frames: stream mode: how many of the last aligned frames each new
            frame is fitted against.
        keyframes: stream mode: how many keyframes anchor the scale (0: none).
        keyframe_overlap: a keyframe whose overlap with the current view (pixels of
            the current frame it explains, relative to those the last frame explains)
            drops below this is left out of the fits; when the newest one drops below
            it, the current frame becomes a keyframe.
        keyframe_weight: weight of a keyframe's pixels relative to a previous frame's.
        reproject: when the poses given to ``push`` reproject the references of a fit
            into the new view: 'auto' (unless the parameter prior has seen the model
            flicker, see ``policy.py``), 'always' or 'never'. The output fusion
            (``blend``) uses the poses unless 'never'. Warping is right only when the
            aligned depth is an affine-free function of the truth (a metric model, or a
            relative one without shift); use 'never' for models with a large shift.
        window: window mode: frames per window (W).
        overlap: window mode: overlapped frames blended between windows (L).
        window_keyframes: window mode: keyframes carried from the previous window (T).
        min_valid_pixels: a fit needs at least this many valid pixels of the fitting
            subsample, else the frame falls back to the last good scale and shift.
        max_fit_pixels: size of the fixed strided pixel subsample used for fitting.
        estimator: 'symmetric' (geometric mean of both regression slopes, unbiased when
            both sides are noisy) or 'ols' (ordinary least squares).
        robust: outlier rejection: 'trimmed' (trimmed least squares), 'huber' (IRLS)
            or 'none'.
        trim_fraction: trimmed: fraction of the largest residuals dropped per pass.
        huber_k: huber: threshold in robust standard deviations of the residuals.
        robust_iterations: most passes of the outlier-rejecting loop (it stops earlier
            once converged).
        blend: weight of the pose-warped previous output mixed into each new one
            (0: off; output only, only for frames with a pose, see ``fusion.py``).
        blend_tolerance: relative disparity difference above which a pixel keeps its new
            value (occlusions, instruments, misregistration).
        hold_shift: stable models with a gain: keep the first frame's shift and follow
            the scale only.
        stable_gain: stable models: fraction of a fit's change of the aligned median
            and spread that is applied (0, the default: none, the model keeps its own
            scale; 1: follow every fit; see ``policy.py`` for the measurements).
        unposed_gain: the same when the references were not reprojected with poses
            (direct fits mistake the camera's motion for a change of scale).
        anchor_pull: stable models with a gain: per-frame pull of the parameters back
            towards the first frame's (0: none; bounds the drift of chained fits).
        flicker_threshold: change per frame of the fitted parameters (relative, root
            mean square over the aligned median and spread; median of the last fits)
            above which the model counts as flickering and every fit is followed exactly.
        step_sigmas: stable models: a change of the aligned median against the most
            recent frame beyond this many robust standard deviations of the last fits'
            changes is adopted as a change of scale (an exposure step the photometric
            prior reads as distance; 0: never; never with scale_source 'model'; see
            ``policy.py``).
        max_fallbacks: consecutive fallbacks after which the buffer re-anchors on the
            next usable frame.
        scale_source: metric conversion: 'fixed' (first frame's median depth is
            reference_depth_m), 'model' (trust a metric model, fit scale only) or
            'none' (relative units).
        reference_depth_m: fixed: median depth (metres) given to the first frame.
    """

    mode: str = 'stream'
    capacity: int = 0
    reference_frames: int = 1
    keyframes: int = 2
    keyframe_overlap: float = 0.5
    keyframe_weight: float = 1.0
    reproject: str = 'auto'
    window: int = 32
    overlap: int = 8
    window_keyframes: int = 2
    min_valid_pixels: int = 100
    max_fit_pixels: int = 4096
    estimator: str = 'symmetric'
    robust: str = 'trimmed'
    trim_fraction: float = 0.25
    huber_k: float = 1.345
    robust_iterations: int = 6
    blend: float = 0.7
    blend_tolerance: float = 0.2
    hold_shift: bool = True
    stable_gain: float = 0.0
    unposed_gain: float = 0.0
    anchor_pull: float = 0.02
    flicker_threshold: float = 0.1
    step_sigmas: float = 0.0
    max_fallbacks: int = 15
    scale_source: str = 'fixed'
    reference_depth_m: float = 0.05

    def __post_init__(self) -> None:
        check_choice('mode', self.mode, MODES)
        check_choice('estimator', self.estimator, ESTIMATORS)
        check_choice('robust', self.robust, ROBUST_METHODS)
        check_choice('scale_source', self.scale_source, SCALE_SOURCES)
        check_choice('reproject', self.reproject, REPROJECT_POLICIES)
        check_integer('capacity', self.capacity, 0)
        check_integer('reference_frames', self.reference_frames, 1)
        check_integer('keyframes', self.keyframes, 0)
        check_integer('window', self.window, 2)
        check_integer('overlap', self.overlap, 1)
        check_integer('window_keyframes', self.window_keyframes, 0)
        check_integer('min_valid_pixels', self.min_valid_pixels, 3)
        check_integer('max_fit_pixels', self.max_fit_pixels, self.min_valid_pixels)
        check_integer('robust_iterations', self.robust_iterations, 0)
        check_integer('max_fallbacks', self.max_fallbacks, 1)
        check_number('keyframe_overlap', self.keyframe_overlap, 0.0, 1.0, low_open=True)
        check_number('keyframe_weight', self.keyframe_weight, 0.0, math.inf, high_open=True)
        check_number('trim_fraction', self.trim_fraction, 0.0, 0.9)
        check_number('huber_k', self.huber_k, 0.0, math.inf, low_open=True, high_open=True)
        check_number('blend', self.blend, 0.0, 1.0, high_open=True)
        check_number('blend_tolerance', self.blend_tolerance, 0.0, math.inf, low_open=True,
                high_open=True)
        check_number('stable_gain', self.stable_gain, 0.0, 1.0)
        check_number('unposed_gain', self.unposed_gain, 0.0, 1.0)
        check_number('anchor_pull', self.anchor_pull, 0.0, 1.0, high_open=True)
        check_number('flicker_threshold', self.flicker_threshold, 0.0, math.inf,
                high_open=True)
        check_number('step_sigmas', self.step_sigmas, 0.0, math.inf, high_open=True)
        check_number('reference_depth_m', self.reference_depth_m, 0.0, math.inf,
                low_open=True, high_open=True)
        stride = self.window - self.window_keyframes - self.overlap
        if stride < self.overlap:
            raise ConfigError(
                f'window ({self.window}) must be at least window_keyframes '
                f'({self.window_keyframes}) + 2 * overlap ({self.overlap}) so that the '
                f'stride (window - window_keyframes - overlap = {stride}) covers the overlap.')
        if self.capacity and self.capacity < self.min_capacity:
            raise ConfigError(
                f'capacity {self.capacity} is too small for mode {self.mode!r}: '
                f'it needs at least {self.min_capacity} frames (0 picks that).')

    @property
    def min_capacity(self) -> int:
        """Fewest ring-buffer frames the mode works with."""
        if self.mode == 'window':
            return self.window
        return self.reference_frames

    @property
    def buffer_capacity(self) -> int:
        """Frames actually kept in the ring buffer (``capacity`` or the mode's default)."""
        if self.capacity:
            return self.capacity
        if self.mode == 'window':
            return self.window
        return self.reference_frames + 2

    @property
    def stride(self) -> int:
        """Window mode: new frames per window (``window - window_keyframes - overlap``)."""
        return self.window - self.window_keyframes - self.overlap


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f'{name} must be one of {allowed}, got {value!r}.')


def check_integer(name: str, value: object, low: int) -> None:
    """Raise ConfigError unless ``value`` is an integer >= ``low`` (bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f'{name} must be an integer >= {low}, got {value!r}.')


def check_number(name: str, value: object, low: float, high: float, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number in the interval."""
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (
            v < high if high_open else v <= high)
    if not ok:
        interval = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
        raise ConfigError(f'{name} must be a number in {interval}, got {value!r}.')
