"""Robust closed-form fit of one scale and shift between two sets of disparities.

- Closed form in float64: the 2x2 normal equations of ``ref ~ scale * pred + shift``
  solved on centred sums. ``estimator='symmetric'`` (default) takes the geometric mean of
  the two regression slopes (reduced major axis): both sides of the fit are noisy
  predictions, and ordinary least squares (``'ols'``) would shrink the scale by
  var(signal) / (var(signal) + var(noise)) at every fit, which chained fits compound
  into a collapsing depth range.
- Inside an outlier-rejecting loop: ``robust='trimmed'`` refits on the
  ``1 - trim_fraction`` smallest residuals, ``'huber'`` reweights (IRLS, threshold
  ``huber_k`` robust standard deviations), ``'none'`` fits once.
- Degenerate data (too few pairs, constant prediction, non-finite result, scale <= 0)
  give ``Fit.ok`` False with a reason, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from endo_depth_ros.errors import BadInputError
from endo_depth_ros.temporal.config import ESTIMATORS, ROBUST_METHODS, check_choice

#: A prediction whose spread is below this fraction of its magnitude is constant: it
#: carries no information on the scale.
CONSTANT_SPREAD = 1e-6
#: Robust standard deviation of a normal distribution from its median absolute deviation.
MAD_TO_SIGMA = 1.4826

# Reasons of a fallback / rejected fit (``AlignedFrame.fallback_reason``).
TOO_FEW_PIXELS = 'too_few_pixels'
CONSTANT = 'constant'
NON_FINITE = 'non_finite'
NON_POSITIVE_SCALE = 'non_positive_scale'
NO_REFERENCE = 'no_reference'


@dataclass(frozen=True, eq=False)
class Fit:
    """Result of ``fit_scale_shift``.

    Attributes:
        scale, shift: ``ref ~ scale * pred + shift`` (NaN when nothing could be fitted).
        ok: the fit is usable (enough pixels, finite, scale > 0).
        reason: why not (``''`` when ok).
        pixels: pairs used by the final fit.
        residual_scale: robust standard deviation (1.4826 MAD) of the final fit's
            residuals over all usable pairs.
        keep: (N,) bool per input pair, True when it took part in the final fit.
    """

    scale: float
    shift: float
    ok: bool
    reason: str
    pixels: int
    residual_scale: float
    keep: np.ndarray


def fit_scale_shift(
    pred: np.ndarray,
    ref: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    estimator: str = 'symmetric',
    robust: str = 'trimmed',
    iterations: int = 6,
    trim_fraction: float = 0.25,
    huber_k: float = 1.345,
    with_shift: bool = True,
    min_pixels: int = 3,
) -> Fit:
    """Robust closed-form fit of ``ref ~ scale * pred + shift`` (disparity space).

    Args:
        pred: (N,) predictions to be mapped (any float dtype); non-finite pairs are skipped.
        ref: (N,) reference values.
        weights: (N,) non-negative weights (default 1); zero-weight pairs are skipped.
        estimator: 'symmetric' (reduced-major-axis slope) or 'ols'.
        robust: 'trimmed', 'huber' or 'none'.
        iterations: most passes of the outlier-rejecting loop (it stops once converged).
        trim_fraction: trimmed: fraction of the largest residuals dropped per pass.
        huber_k: huber: threshold in robust standard deviations (IRLS started from one
            trimmed pass; with the symmetric estimator the weights are squared).
        with_shift: False fits a scale only (shift 0).
        min_pixels: fewer usable pairs reject the fit.

    Returns:
        The ``Fit``; ``ok`` False (with a reason) instead of raising on degenerate data.

    Raises:
        ConfigError: unknown estimator or robust method.
        BadInputError: arrays of different lengths (reason ``'size_mismatch'``).
    """
    check_choice('estimator', estimator, ESTIMATORS)
    check_choice('robust', robust, ROBUST_METHODS)
    x_all = np.asarray(pred, dtype=np.float64).ravel()
    y_all = np.asarray(ref, dtype=np.float64).ravel()
    w_all = (np.ones_like(x_all) if weights is None
             else np.asarray(weights, dtype=np.float64).ravel())
    if not x_all.size == y_all.size == w_all.size:
        raise BadInputError(
            f'pred, ref and weights must have equal sizes, got {x_all.size}, {y_all.size} '
            f'and {w_all.size}.', 'size_mismatch')
    with np.errstate(invalid='ignore'):
        usable = np.isfinite(x_all) & np.isfinite(y_all) & (w_all > 0)
    index = np.flatnonzero(usable)
    n = int(index.size)
    keep_all = np.zeros(x_all.size, dtype=bool)
    if n < min_pixels:
        return Fit(math.nan, math.nan, False, TOO_FEW_PIXELS, n, math.nan, keep_all)
    x, y, w = x_all[index], y_all[index], w_all[index]

    active = np.ones(n, dtype=bool)
    w_eff = w
    passes = iterations if robust != 'none' else 0
    if passes:
        # A robust start (median and median absolute deviation matching): a plain fit
        # can be arbitrarily wrong, even of the wrong sign, with gross outliers.
        scale, shift, reason = _median_fit(x, y, with_shift)
        if reason:
            scale, shift, reason = _closed_form(x, y, w, estimator, with_shift)
    else:
        scale, shift, reason = _closed_form(x, y, w, estimator, with_shift)
    for i in range(passes):
        if reason:
            break
        residual = np.abs(scale * x + shift - y)
        if robust == 'trimmed' or i == 0:
            # Keep the (1 - trim) smallest residuals (np.partition: O(n), no full sort).
            # Huber's IRLS starts from one such pass: from the plain fit it converges
            # slowly when outliers are gross.
            k = min(n, max(min_pixels, math.ceil((1.0 - trim_fraction) * n)))
            threshold = np.partition(residual, k - 1)[k - 1]
            kept = residual <= threshold
            if i > 0 and np.array_equal(kept, active):
                break  # converged: the same pairs again
            active = kept
        else:
            active = np.ones(n, dtype=bool)
            sigma = MAD_TO_SIGMA * float(np.median(residual))
            if sigma <= 0:
                break  # an exact fit: nothing to reweight
            huber = np.minimum(1.0, huber_k * sigma / np.maximum(residual, 1e-300))
            # The symmetric slope uses the spread of y, where an outlier weighted w adds
            # w * r^2: squaring the weight keeps its influence bounded, as in Huber's LS.
            w_eff = w * (huber * huber if estimator == 'symmetric' else huber)
        previous = (scale, shift)
        scale, shift, reason = _closed_form(x[active], y[active], w_eff[active], estimator,
                                            with_shift)
        if (scale, shift) == previous:
            break  # converged
    if reason:
        return Fit(math.nan, math.nan, False, reason, int(active.sum()), math.nan, keep_all)
    # Robust sigma over every usable pair: the MAD of the kept pairs alone would be
    # shrunk by the trimming itself.
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(scale * x + shift - y)))
    keep_all[index[active]] = True
    return Fit(scale, shift, True, '', int(active.sum()), sigma, keep_all)


def _median_fit(x: np.ndarray, y: np.ndarray, with_shift: bool) -> tuple[float, float, str]:
    """(scale, shift, reason) matching the medians and median absolute deviations."""
    if with_shift:
        mx, my = float(np.median(x)), float(np.median(y))
        spread_x = float(np.median(np.abs(x - mx)))
        spread_y = float(np.median(np.abs(y - my)))
    else:
        mx = my = 0.0
        spread_x, spread_y = float(np.median(np.abs(x))), float(np.median(np.abs(y)))
    if not (spread_x > 0 and spread_y > 0):
        return math.nan, math.nan, CONSTANT
    scale = spread_y / spread_x
    return scale, my - scale * mx, ''


def _closed_form(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, estimator: str, with_shift: bool,
) -> tuple[float, float, str]:
    """Weighted closed-form (scale, shift, reject reason) of ``y ~ scale * x + shift``.

    The 2x2 normal equations [[Sxx, Sx], [Sx, S1]] (s, t) = (Sxy, Sy) are solved on
    centred sums, which is the same solution without the cancellation of the raw form.
    """
    sw = float(w.sum())
    if x.size < 2 or sw <= 0:
        return math.nan, math.nan, TOO_FEW_PIXELS
    if with_shift:
        mx = float(np.dot(w, x)) / sw
        my = float(np.dot(w, y)) / sw
        dx = x - mx
        dy = y - my
    else:
        mx = my = 0.0
        dx, dy = x, y
    with np.errstate(over='ignore', invalid='ignore'):  # non-finite sums are rejected below
        wdx = w * dx
        sxx = float(np.dot(wdx, dx))
        sxy = float(np.dot(wdx, dy))
        syy = float(np.dot(w * dy, dy))
    magnitude = max(abs(mx), float(np.max(np.abs(x))))
    if not sxx > sw * (CONSTANT_SPREAD * magnitude) ** 2:
        return math.nan, math.nan, CONSTANT
    if estimator == 'ols':
        scale = sxy / sxx
    else:
        # Geometric mean of the slopes of y on x (sxy/sxx) and of x on y (syy/sxy).
        scale = math.copysign(math.sqrt(max(syy, 0.0) / sxx), sxy)
    shift = my - scale * mx if math.isfinite(scale) else math.nan
    if not (math.isfinite(scale) and math.isfinite(shift)):
        return math.nan, math.nan, NON_FINITE
    if scale <= 0:
        return math.nan, math.nan, NON_POSITIVE_SCALE
    return scale, shift, ''


def is_constant(values: np.ndarray) -> bool:
    """True when a 1-D array of finite values has no usable spread."""
    if values.size < 2:
        return True
    low, high = float(values.min()), float(values.max())
    return high - low <= CONSTANT_SPREAD * max(abs(low), abs(high))

