"""Parameter prior: whether a frame follows its fit or keeps the model's own scale.

Each frame is also fitted against the most recent frame alone, and that fit is read as a
change of the aligned median and spread (log scale) from the recent frame's parameters;
the size of those changes tells a **flickering** model (a per-frame network: changes of
tens of percent) from a **stable** one (the photometric prior, metric and video models),
from the first fit on: the median change of the last ``CHANGE_WINDOW`` fits against
``flicker_threshold``. Not the fit pooled with older references: in window mode its
unposed references (the window's first frames) mistook motion for scale, a stable model
passed for flickering for a few frames and kept their parameters (drift 1.08 on a
60-frame flight). Measured against the last frame, on 7 flights of 120 frames, a stable
model's changes are <= 2 % rms (90th percentile), a flickering model's 5 % or more (10th).

- Flickering: every fit is followed exactly, so each frame's affine map is undone.
- Stable: the parameters stay the first frame's (``stable_gain`` 0, the default). For
  such a model the fits only measure their own errors (occlusions, warps with poses
  tracked on the aligned depth itself, a model not exactly affine in the truth), and
  chained fits integrate them into a drift of the scale that ``none`` does not have.
- Steps (``step_sigmas``, off by default; relative models only): a stable model adopts a
  change of the median beyond that many robust standard deviations of the last
  ``STEP_HISTORY`` changes, as a pure scale. The photometric prior's changes against
  the last frame follow its exposure-driven scale changes against the truth
  (correlation 0.5-0.97 on 7 flights);
  replaying them offline, adopting 6-sigma steps cut its worst drift around the median
  on 6 of 7 flights (1.18-1.59 -> 1.16-1.30; the slow flight 1.53 -> 1.55) and adopted
  none for the stable stand-in; in the pipeline (``--variants adopt-steps``) likewise.
  A metric model took misregistered fits for steps and drifted from the truth on 2 of
  7 flights, so a trusted metric scale (``scale_source`` 'model') is never re-scaled.
  Off by default: on a shorter, smaller flight (seed 7, 60 frames at 128x96) the
  photometric prior's drift fell (1.46 -> 1.12) but its ratio error rose to 1.09x
  ``none``'s.

Measured against the truth (``endo-depth-bench consistency --variants``, 120-frame
flights, mean depth-ratio error over gaps 1-20 relative to ``none``; see the README):
following every fit of a stable model (``flicker_threshold`` 0) gave 0.5-2.7x for the
photometric prior and 370-2200x for a metric model; the previous damped stack (gain 0.3,
0.05 without poses, pull-back 0.02 per frame, held shift, decided after 10 fits) still
drifted a metric model's scale to 1.19 and a stable relative model's to 1.06 (1.14 in
window mode) where ``none`` stays at 1.00. Holding the parameters leaves those models
as ``none`` does, plus the pose-warped output fusion. ``stable_gain``,
``unposed_gain``, ``anchor_pull`` and ``hold_shift`` only act when a gain is set.
"""

from __future__ import annotations

import math

import numpy as np

from endo_depth_ros.temporal.config import AlignmentConfig
from endo_depth_ros.temporal.robust_fit import MAD_TO_SIGMA, Fit

#: Recent fits whose median change decides flickering or stable. A median, so that a
#: few outlier fits (frames without a pose mistake the camera's motion for a change of
#: scale) never flip a stable model: a running mean square did, on a 120-frame flight in
#: window mode, and the flip held itself (flickering stops the pose warps).
CHANGE_WINDOW = 9

#: Recent fits whose changes of the aligned median give the noise a step must stand out
#: of (``step_sigmas``): the median absolute deviation of 9 values is too noisy itself
#: (a still camera's 0.1 % changes passed for steps).
STEP_HISTORY = 30


class ParameterPrior:
    """Temporal prior on the fitted (scale, shift) of a stream (state of one stream)."""

    def __init__(self, config: AlignmentConfig) -> None:
        self.config = config
        #: The first good frame's (scale, shift), the anchor of the pull-back.
        self.anchor: tuple[float, float] | None = None
        self._recent = np.zeros(CHANGE_WINDOW)  # squared changes of the recent fits
        self._centre_changes = np.zeros(STEP_HISTORY)  # log changes of the median
        self._changes = 0  # changes measured so far

    def set_anchor_once(self, scale: float, shift: float) -> None:
        """Record the first good parameters of the stream (later calls do nothing)."""
        if self.anchor is None:
            self.anchor = (scale, shift)

    @property
    def flickering(self) -> bool:
        """Whether the fits measured so far change more than ``flicker_threshold``."""
        if self._changes == 0:
            return False
        recent = self._recent[:min(self._changes, CHANGE_WINDOW)]
        return float(np.median(recent)) > self.config.flicker_threshold ** 2

    @property
    def holds_parameters(self) -> bool:
        """Whether the model counts as stable and keeps its own scale (both gains 0)."""
        cfg = self.config
        return (self._changes > 0 and not self.flickering
                and cfg.stable_gain == 0 and cfg.unposed_gain == 0)

    def _is_step(self, centre_change: float) -> bool:
        """Whether a change of the log median stands out of the last fits' own noise
        (``step_sigmas`` robust standard deviations of their changes, at least
        ``CHANGE_WINDOW`` fits)."""
        n = min(self._changes, STEP_HISTORY)
        # A trusted metric scale (scale_source 'model') is never re-scaled: its "steps"
        # are misregistered fits (a metric model drifted from the truth on 2 of 7 flights).
        if self.config.step_sigmas <= 0 or n < CHANGE_WINDOW or self.config.scale_source == 'model':
            return False
        past = self._centre_changes[:n]
        centre = float(np.median(past))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(past - centre)))
        return sigma > 0 and abs(centre_change - centre) > self.config.step_sigmas * sigma

    def apply(self, fitted: tuple[float, float], previous: tuple[float, float] | None,
              sub: np.ndarray, posed: bool, recent: Fit | None = None,
              ) -> tuple[float, float]:
        """The parameters a frame uses given its fit.

        Args:
            fitted: the fit of this frame against its references.
            previous: the parameters of the frame it was chained from.
            sub: (h, w) raw disparity fitting image of this frame.
            posed: the references were reprojected with poses.
            recent: the fit against ``previous``'s frame alone, which measures the
                change (default: ``fitted``).

        Returns:
            The parameters to use: ``fitted`` while the model flickers, else a step of
            ``stable_gain`` (none by default) from ``previous``, pulled towards the
            first frame's parameters.
        """
        cfg = self.config
        values = sub[np.isfinite(sub)]
        if previous is None or values.size < 2:
            return fitted
        median = float(np.median(values))
        spread = float(np.median(np.abs(values - median)))
        with_shift = cfg.scale_source != 'model'
        if not (median > 0 and (spread > 0 or not with_shift)):
            return fitted

        def summary(params: tuple[float, float]) -> np.ndarray:
            # Log of the aligned median and spread: scale-free, and both move together
            # under a scale change, so the change of a shift shows as a spread change.
            centre = params[0] * median + params[1]
            if not with_shift:
                return np.array([math.log(max(centre, 1e-300))])
            return np.array([math.log(max(centre, 1e-300)),
                             math.log(max(params[0] * spread, 1e-300))])

        measured = fitted if recent is None or not recent.ok else (recent.scale, recent.shift)
        delta = summary(measured) - summary(previous)
        change = float(np.mean(delta ** 2))
        if not math.isfinite(change):
            return fitted
        is_step = self._is_step(float(delta[0]))
        self._recent[self._changes % CHANGE_WINDOW] = change
        self._centre_changes[self._changes % STEP_HISTORY] = float(delta[0])
        self._changes += 1
        if self.flickering:
            return fitted  # a flickering model: follow every fit exactly
        if is_step:
            # A step of the model's own scale: adopted as a pure depth scale (scale and
            # shift of the disparity multiplied alike), as an exposure change does to
            # the photometric prior.
            # The anchor moves with it (the pull-back and the held shift aim at it).
            factor = math.exp(float(delta[0]))
            self.anchor = (previous[0] * factor, previous[1] * factor)
            return self.anchor
        if cfg.stable_gain == 0 and cfg.unposed_gain == 0:
            return previous  # held: no step, no pull-back, no shift conversion
        new, old = summary(fitted), summary(previous)
        step = old + (cfg.stable_gain if posed else cfg.unposed_gain) * (new - old)
        if self.anchor is not None and cfg.anchor_pull > 0:
            step += cfg.anchor_pull * (summary(self.anchor) - step)
        centre = math.exp(float(step[0]))
        if not with_shift:
            return centre / median, 0.0
        held = previous[1] if self.anchor is None else self.anchor[1]
        if cfg.hold_shift and centre - held > 0:
            # Only the scale follows, the shift stays the first frame's: a stable model's
            # shift is its own, and refitting it every frame bends the depth's shape with
            # every fit's error.
            return (centre - held) / median, held
        scale = math.exp(float(step[1])) / spread
        return scale, centre - scale * median
