"""Temporal alignment of per-frame depth in a bounded ring buffer.

Per-frame depth networks predict affine-invariant disparity: every frame has its own
unknown scale and shift, so the depth flickers and a SLAM stack sees the world breathe.
``TemporalAligner`` maps each raw prediction ``d`` to ``scale * d + shift`` so that
consecutive frames agree, and converts the result to depth in metres::

    aligner = TemporalAligner(AlignmentConfig(mode='stream'))
    for rgb, pose in video:
        raw = model.infer(rgb)                                # relative disparity
        for out in aligner.push(raw, pose=pose, intrinsics=camera):
            use(out.depth)                                    # (H, W) float32 metres
    for out in aligner.flush():                               # 'window' mode only
        use(out.depth)

Modes (``AlignmentConfig.mode``):

``none``
    Passthrough for comparisons: every frame uses the scale and shift of the first frame
    (so only the metric conversion below is applied, per-frame flicker is kept).
``stream``
    Zero added latency: each frame comes out of ``push`` at once. Its scale and shift are
    a robust fit of its raw disparity against references: the ``reference_frames`` last
    aligned frames and up to ``keyframes`` keyframes that anchor the scale over long
    sequences (frame 0 first, as Video Depth Anything keeps it as a global anchor). When
    the new frame and a reference both have a pose, the reference is first reprojected
    into the new view (``metrics.reproject_depth``; see ``reproject``); without poses
    the fit is direct (endoscope motion between frames is small). A reference
    *explains* a pixel when it agrees with the new frame about as well as the most
    recent frame does (within
    ``AGREEMENT_SIGMAS`` robust standard deviations of that frame's residuals); a
    keyframe's *overlap* is the fraction of pixels it explains relative to the most
    recent frame. When the newest keyframe's overlap drops below ``keyframe_overlap``
    the current frame becomes a keyframe, replacing the one that overlaps least;
    keyframes below the threshold are left out of the fits until the view returns to
    them. Pixels that no reference explains (outliers) are not used as references later.
    The output is fused with the previous output (``blend``, 0 disables): the previous
    fused output is warped into the new view with the poses (in place without them) and
    mixed in with weight ``blend`` where it agrees within ``blend_tolerance`` (relative),
    which averages per-frame noise out without ghosting; the buffer keeps the unfused
    frames as references. The same output fusion applies to ``window`` mode's output;
    not with ``scale_source='model'`` (a trusted metric model keeps its depth).
``window``
    The offline procedure of Video Depth Anything / EndoDAV, for bags and video models.
    Windows of ``W = window`` frames: ``T = window_keyframes`` keyframes (already aligned,
    taken from the previous window), ``L = overlap`` overlapped frames (the last ``L``
    frames of the previous window, aligned there but not yet returned) and
    ``S = W - T - L`` new frames. Each frame of the window is first brought into the
    window's common scale by a robust fit against the previous frame of the window and
    the window's first ``T`` frames (a per-frame model has a different scale and shift
    in every frame; for a video model these fits are close to the identity). Then one
    scale and shift for the whole window is fitted on the overlapped frames against
    their already aligned values; the overlapped frames are blended linearly with the
    previous window's result (weight of the new window ``(j + 1) / (L + 1)`` for the j-th
    overlapped frame, ramping from 0 to 1), the new frames are appended. The first
    window holds ``W`` frames and has no keyframes or overlap.
    **Latency**: ``push`` returns frames in bursts of ``S`` (the window stride), once
    per window (the first burst, ``W - L`` frames, after ``W`` pushes); a frame comes
    out ``L`` to ``S + L - 1`` pushes after its own (up to ``W - 1`` in the first
    window). ``flush()`` returns every frame still held (call it at the end of a
    stream); the stream may continue after it.

Fitting (``fit_scale_shift``), in every mode:

- In **disparity space** (what the networks output): raw relative disparity is clamped
  to ``>= 0``; metric depth (``output_kind='metric_depth'``) is inverted. Non-finite,
  non-positive-depth and masked (``mask`` False: instruments, specular highlights) pixels
  are left out of the fit.
- On a fixed strided **subsample** of at most ``max_fit_pixels`` pixels (the same pixels
  every frame: point samples, so an isolated outlier stays isolated), which keeps the
  cost independent of the image size; ``min_valid_pixels`` counts on that subsample.
  Reprojected references land on a 3x finer camera and pair with a neighbouring pixel
  drawn with bilinear weights (see ``TemporalAligner._reference``).
- **Closed form** in float64: the 2x2 normal equations of ``ref ~ scale * pred + shift``
  solved on centred sums. ``estimator='symmetric'`` (default) takes the geometric mean of
  the two regression slopes (y on x and x on y, the reduced-major-axis slope): both sides
  of the fit are noisy predictions, and ordinary least squares (``'ols'``) would shrink
  the scale by var(signal) / (var(signal) + var(noise)) at every fit, which chained
  fits compound into a collapsing depth range.
- Inside an **outlier-rejecting loop**: ``robust='trimmed'`` refits on the
  ``1 - trim_fraction`` smallest residuals, ``'huber'`` reweights (IRLS, threshold
  ``huber_k`` robust standard deviations), ``'none'`` fits once. All references' pixel
  pairs are pooled (keyframes weighted by ``keyframe_weight``).
- A fit is **rejected** (counted in ``stats.rejected_fits``) with fewer than
  ``min_valid_pixels`` pixels, a constant prediction, a non-finite result or a scale
  ``<= 0``; the frame then **falls back** to the last good scale and shift (counted in
  ``stats.fallbacks``, ``AlignedFrame.fallback`` True) and is not used as a reference.
  After ``max_fallbacks`` consecutive fallbacks (the references no longer match the
  scene) the next usable frame re-anchors the buffer with the last good scale and shift
  (``stats.reanchors``).

Parameter prior (``stream`` fits and ``window`` consolidation): a chain of fits to the
previous frame integrates every fit's error (occlusions, a model that is not exactly
affine in the truth, the camera's motion mistaken for a change of scale when there is
no pose) into a random walk of the scale, and odometry tracked on the aligned depth
feeds that drift back (measured on the 300-frame synthetic bag: median depth 0.05 m ->
0.0004 m). Each fit is therefore read as a change of the aligned median and spread
(log scale) from the frame it chains from; the running mean square of those changes
tells a **flickering** model (a per-frame network: changes of tens of percent; every
fit is followed exactly, so affine maps are still undone exactly) from a **stable**
one (above ``flicker_threshold`` or not, after ``STABLE_AFTER`` fits). For a stable
model only ``stable_gain`` of the change is applied (``unposed_gain`` when the
references were not reprojected with poses), and the parameters are pulled back
towards the first frame's by ``anchor_pull`` per frame, which bounds the drift.

Degenerate inputs never raise: an all-NaN frame comes out all-NaN, a constant frame or a
single valid pixel falls back, a change of frame size (or of ``output_kind``) resets the
buffer (``stats.resets``) and the next frame starts a new scale as the first one did.

Metric conversion (``scale_source``), one policy:

- ``fixed`` (default): the first usable frame of a stream gets shift 0 and the scale that
  puts its median depth at ``reference_depth_m`` (e.g. the median working distance of
  the endoscope); the alignment carries that scale through time. Depth is then in metres
  up to the error of that assumption.
- ``model``: the input is metric depth from a metric model (``output_kind`` must be
  ``'metric_depth'``) and is trusted: the first frame is kept as is and later frames are
  fitted with a **scale only** (shift 0), which removes scale flicker but keeps metres.
  To trust the model completely ("fit nothing"), use ``mode='none'``.
- ``none``: relative values are left relative: the first frame keeps scale 1, shift 0;
  ``AlignedFrame.depth`` is then ``1 / disparity`` in relative units, not metres, and
  poses are not used for reprojection (their translation has another unit).

Poses are ``T_world_camera`` (or ``T_odom_camera``) 4x4. Reprojection is only right if
the aligned depth has the right *shape*: its translation must be in the unit of the
aligned depth (metres; true of odometry tracked on this module's output) and the depth
must be an affine-free function of the truth. That holds for ``scale_source='model'``
and for ``'fixed'`` when the model's disparity has no shift (the policy assumes shift 0
for the first frame). A relative model with a large shift gives a distorted depth
(far tissue too far or too near) which no rigid motion reprojects consistently; over a
long forward flight the fits then drift. Set ``reproject='never'`` for such models.
With odometry tracked on the aligned depth every warped fit also carries a small bias;
a flickering model follows every fit, so the bias piles up into a runaway of the global
scale (300-frame synthetic bag: ratio to the first frame up to 2.8). ``reproject='auto'``
(default) therefore fits a model the parameter prior has seen flicker without warping
(ratio 0.60..1.22) and warps only for a stable one; the output fusion keeps the poses.
Without poses the alignment cannot tell a camera approaching the tissue from a change
of the prediction's scale: it keeps the depth distribution of consecutive frames alike.

Memory is bounded: every buffer is a preallocated array (``capacity`` frames of raw
disparity, aligned disparity, validity mask and pose, plus the keyframes and the window
scratch at the fitting resolution); nothing grows with the sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.metrics import reproject_depth

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
#: What a raw prediction holds (``DepthModel.output_kind``).
OUTPUT_KINDS = ('relative_disparity', 'metric_depth')

#: A reference pixel "explains" a new pixel when their aligned disparities differ by less
#: than this many robust standard deviations of the residuals against the most recent
#: frame.
AGREEMENT_SIGMAS = 3.0
#: ... or by less than this fraction of the disparity (so noise-free data still agree).
AGREEMENT_FLOOR = 1e-3
#: A prediction whose spread is below this fraction of its magnitude is constant: it
#: carries no information on the scale.
CONSTANT_SPREAD = 1e-6
#: Reprojected references land on a camera this many times finer than the fitting image
#: (see ``TemporalAligner._reference``).
WARP_RESOLUTION = 3
#: Robust standard deviation of a normal distribution from its median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Parameter prior: weight of each new change in the running mean square of the changes.
CHANGE_MEMORY = 0.1
#: Parameter prior: changes measured before a model may count as stable.
STABLE_AFTER = 10

# Reasons of a fallback / rejected fit (``AlignedFrame.fallback_reason``).
TOO_FEW_PIXELS = 'too_few_pixels'
CONSTANT = 'constant'
NON_FINITE = 'non_finite'
NON_POSITIVE_SCALE = 'non_positive_scale'
NO_REFERENCE = 'no_reference'


@dataclass(frozen=True)
class AlignmentConfig:
    """Temporal alignment settings (see the module docstring for the procedure).

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
            flicker, see "Parameter prior"), 'always' or 'never'. The output fusion
            (``blend``) uses the poses unless 'never'. The depth must have the right
            shape (see the module docstring).
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
            (0: off; output only, see the module docstring).
        blend_tolerance: relative disparity difference above which a pixel keeps its new
            value (occlusions, instruments, misregistration).
        hold_shift: stable models: keep the first frame's shift and follow the scale only.
        stable_gain: stable models: fraction of a fit's change of the aligned median
            and spread that is applied (1: follow every fit; see "Parameter prior").
        unposed_gain: the same when the references were not reprojected with poses
            (direct fits mistake the camera's motion for a change of scale).
        anchor_pull: stable models: per-frame pull of the parameters back towards the
            first frame's (0: none; bounds the drift of chained fits).
        flicker_threshold: root mean square change per frame (relative, of the aligned
            median and spread) of the fitted parameters above which the model counts as
            flickering and every fit is followed exactly.
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
    stable_gain: float = 0.3
    unposed_gain: float = 0.05
    anchor_pull: float = 0.02
    flicker_threshold: float = 0.1
    max_fallbacks: int = 15
    scale_source: str = 'fixed'
    reference_depth_m: float = 0.05

    def __post_init__(self) -> None:
        _choice('mode', self.mode, MODES)
        _choice('estimator', self.estimator, ESTIMATORS)
        _choice('robust', self.robust, ROBUST_METHODS)
        _choice('scale_source', self.scale_source, SCALE_SOURCES)
        _choice('reproject', self.reproject, REPROJECT_POLICIES)
        _integer('capacity', self.capacity, 0)
        _integer('reference_frames', self.reference_frames, 1)
        _integer('keyframes', self.keyframes, 0)
        _integer('window', self.window, 2)
        _integer('overlap', self.overlap, 1)
        _integer('window_keyframes', self.window_keyframes, 0)
        _integer('min_valid_pixels', self.min_valid_pixels, 3)
        _integer('max_fit_pixels', self.max_fit_pixels, self.min_valid_pixels)
        _integer('robust_iterations', self.robust_iterations, 0)
        _integer('max_fallbacks', self.max_fallbacks, 1)
        _number('keyframe_overlap', self.keyframe_overlap, 0.0, 1.0, low_open=True)
        _number('keyframe_weight', self.keyframe_weight, 0.0, math.inf, high_open=True)
        _number('trim_fraction', self.trim_fraction, 0.0, 0.9)
        _number('huber_k', self.huber_k, 0.0, math.inf, low_open=True, high_open=True)
        _number('blend', self.blend, 0.0, 1.0, high_open=True)
        _number('blend_tolerance', self.blend_tolerance, 0.0, math.inf, low_open=True,
                high_open=True)
        _number('stable_gain', self.stable_gain, 0.0, 1.0, low_open=True)
        _number('unposed_gain', self.unposed_gain, 0.0, 1.0, low_open=True)
        _number('anchor_pull', self.anchor_pull, 0.0, 1.0, high_open=True)
        _number('flicker_threshold', self.flicker_threshold, 0.0, math.inf,
                high_open=True)
        _number('reference_depth_m', self.reference_depth_m, 0.0, math.inf,
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


@dataclass(frozen=True, eq=False)
class AlignedFrame:
    """One temporally aligned frame.

    Attributes:
        index: position of the frame among the frames pushed since construction or the
            last ``reset()`` (0-based).
        stamp_ns: the stamp given to ``push`` (int nanoseconds).
        depth: (H, W) float32 depth in metres (relative units when
            ``scale_source='none'``), NaN invalid.
        disparity: (H, W) float32 aligned disparity ``1 / depth`` (1/m), NaN invalid,
            0 where the aligned disparity was clamped (depth NaN there).
        scale: scale applied to the raw disparity (NaN before any scale was known).
        shift: shift applied to the raw disparity (1/m).
        fallback: the frame's own fit was not usable and the last good scale and shift
            (or, at the start of a stream, a scale from this frame alone) were used.
        fallback_reason: why (``''`` when ``fallback`` is False): 'too_few_pixels',
            'constant', 'non_finite', 'non_positive_scale' or 'no_reference'.
    """

    index: int
    stamp_ns: int
    depth: np.ndarray
    disparity: np.ndarray
    scale: float
    shift: float
    fallback: bool = False
    fallback_reason: str = ''


@dataclass
class AlignmentStats:
    """Counters of a ``TemporalAligner`` (``aligner.stats`` returns a copy).

    Attributes:
        frames: frames pushed.
        emitted: frames returned by ``push``/``flush``.
        fits: fits accepted.
        rejected_fits: fits rejected (too few pixels, constant, non-finite, scale <= 0).
        fallbacks: frames returned with a fallback scale and shift.
        resets: buffer resets (frame size or output kind changes, ``reset()`` calls).
        reanchors: re-anchorings after ``max_fallbacks`` consecutive fallbacks.
        keyframes_added: keyframes taken (stream mode).
        windows: windows processed (window mode).
        last_scale, last_shift: the last good scale and shift.
        last_fit_pixels: pixel pairs in the last accepted fit.
        last_residual: robust standard deviation of that fit's residuals (disparity).
    """

    frames: int = 0
    emitted: int = 0
    fits: int = 0
    rejected_fits: int = 0
    fallbacks: int = 0
    resets: int = 0
    reanchors: int = 0
    keyframes_added: int = 0
    windows: int = 0
    last_scale: float = math.nan
    last_shift: float = math.nan
    last_fit_pixels: int = 0
    last_residual: float = math.nan


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
    _choice('estimator', estimator, ESTIMATORS)
    _choice('robust', robust, ROBUST_METHODS)
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


def to_disparity(raw: np.ndarray, output_kind: str = 'relative_disparity') -> np.ndarray:
    """Raw model output -> disparity used for fitting.

    Args:
        raw: (H, W) relative disparity (any scale) or metric depth (metres).
        output_kind: 'relative_disparity' (clamped to >= 0) or 'metric_depth' (inverted;
            depth <= 0 is invalid).

    Returns:
        (H, W) float32 disparity, NaN invalid (non-finite input, depth <= 0).

    Raises:
        BadInputError: unknown ``output_kind`` (reason ``'output_kind'``).
    """
    if output_kind not in OUTPUT_KINDS:
        raise BadInputError(
            f'Unknown output_kind {output_kind!r}; expected one of {OUTPUT_KINDS}.',
            'output_kind')
    with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
        if output_kind == 'relative_disparity':
            disparity = np.array(raw, dtype=np.float32, copy=True)
            # np.maximum keeps NaN; +inf is not a disparity any network means.
            np.maximum(disparity, np.float32(0.0), out=disparity)
            disparity[np.isinf(disparity)] = np.nan
        else:
            depth = np.asarray(raw, dtype=np.float32)
            disparity = np.float32(1.0) / depth
            disparity[~((depth > 0) & np.isfinite(disparity))] = np.nan
    return disparity


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """(H, W) disparity -> float32 depth ``1 / disparity``, NaN where disparity <= 0 or NaN."""
    with np.errstate(divide='ignore', invalid='ignore'):
        depth = np.float32(1.0) / np.asarray(disparity, dtype=np.float32)
        depth[~(disparity > 0)] = np.nan
    return depth


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Grid:
    """The fitting image of a frame size: every ``step``-th pixel in both directions,
    starting at ``(row0, col0)``, at most ``max_pixels`` pixels.

    Point samples rather than block averages: averaging would smear isolated outliers
    into noise that no robust loop can reject.
    """

    step: int
    row0: int
    col0: int
    shape: tuple[int, int]

    @classmethod
    def for_size(cls, height: int, width: int, max_pixels: int) -> _Grid:
        step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
        row0 = min(step // 2, height - 1)
        col0 = min(step // 2, width - 1)
        shape = (len(range(row0, height, step)), len(range(col0, width, step)))
        return cls(step, row0, col0, shape)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def sample(self, image: np.ndarray) -> np.ndarray:
        """The (h, w) fitting image of an (H, W) image (a copy)."""
        return image[self.row0::self.step, self.col0::self.step].copy()

    def intrinsics(self, camera: Intrinsics) -> Intrinsics:
        """The camera of the fitting image: its pixel u is ``col0 + step * u`` of ``camera``."""
        s = self.step
        return Intrinsics(
            width=self.shape[1], height=self.shape[0], fx=camera.fx / s, fy=camera.fy / s,
            cx=(camera.cx - self.col0) / s, cy=(camera.cy - self.row0) / s,
            distortion_model=camera.distortion_model, distortion=camera.distortion)


@dataclass(frozen=True, eq=False)
class _Input:
    """A validated pushed frame."""

    disparity: np.ndarray  # (H, W) float32, NaN invalid
    usable: np.ndarray  # (H, W) bool: finite and not masked out
    grid: np.ndarray  # (h, w) float32 fitting image, NaN where not usable
    pose: np.ndarray | None
    stamp_ns: int


class _Ring:
    """Preallocated per-frame storage; frame at sequence position p lives in slot p % C."""

    def __init__(self, capacity: int, height: int, width: int, grid: tuple[int, int]) -> None:
        c = capacity
        self.capacity = c
        self.raw = np.full((c, height, width), np.nan, np.float32)
        self.aligned = np.full((c, height, width), np.nan, np.float32)
        self.usable = np.zeros((c, height, width), bool)
        self.grid_raw = np.full((c, *grid), np.nan, np.float32)
        # Aligned subsample, NaN where not usable or not trusted (outlier of its fit).
        self.grid_aligned = np.full((c, *grid), np.nan, np.float32)
        self.pose = np.zeros((c, 4, 4))
        self.has_pose = np.zeros(c, bool)
        self.index = np.full(c, -1, np.int64)
        self.stamp = np.zeros(c, np.int64)
        self.scale = np.full(c, np.nan)
        self.shift = np.full(c, np.nan)
        self.good = np.zeros(c, bool)  # usable as a reference
        self.fallback = np.zeros(c, bool)
        self.reason = np.full(c, '', dtype=object)

    @property
    def nbytes(self) -> int:
        arrays = (self.raw, self.aligned, self.usable, self.grid_raw, self.grid_aligned,
                  self.pose, self.has_pose, self.index, self.stamp, self.scale, self.shift,
                  self.good, self.fallback, self.reason)
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True, eq=False)
class _Ref:
    """One reference of a fit: pairs (new frame's raw disparity, reference's aligned one),
    both from fitting images.

    Attributes:
        x: (M,) raw disparity of the new frame at the paired points (NaN unusable).
        y: (M,) the reference's aligned disparity seen at the same points (NaN unknown).
        grid_pos: (M,) flat index of each point in the new frame's fitting image.
        weight: weight of the reference's pairs in the fit.
    """

    x: np.ndarray
    y: np.ndarray
    grid_pos: np.ndarray
    weight: float


class TemporalAligner:
    """Aligns a stream of per-frame depth predictions over time (see module docstring).

    Not thread-safe: one producer pushes frames in order.
    """

    _camera: Intrinsics | None

    def __init__(self, config: AlignmentConfig | None = None) -> None:
        """Create an aligner; buffers are allocated at the first frame (for its size)."""
        self.config = AlignmentConfig() if config is None else config
        self._stats = AlignmentStats()
        self._next_index = 0
        self._clear()

    # ------------------------------------------------------------------ public API

    @property
    def stats(self) -> AlignmentStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the preallocated buffers (constant for a given frame size)."""
        total = 0 if self._ring is None else self._ring.nbytes
        for array in (self._kf_grid, self._kf_pose, self._kf_has_pose, self._kf_pos,
                      self._kf_overlap, self._win_grid, self._win_scale, self._win_shift,
                      self._win_good, self._win_reason):
            total += array.nbytes
        return total

    def push(
        self,
        raw: np.ndarray,
        *,
        output_kind: str = 'relative_disparity',
        pose: np.ndarray | None = None,
        intrinsics: Intrinsics | None = None,
        mask: np.ndarray | None = None,
        stamp_ns: int = 0,
    ) -> list[AlignedFrame]:
        """Add one raw prediction; return the frames whose alignment is final.

        Args:
            raw: (H, W) relative disparity or metric depth (metres), NaN invalid.
            output_kind: 'relative_disparity' or 'metric_depth' (``DepthModel.output_kind``).
            pose: optional (4, 4) ``T_world_camera`` of this frame (metres); references
                with a pose are reprojected into this view before fitting.
            intrinsics: the camera (needed with ``pose``); its size must be W x H.
            mask: optional (H, W) bool, True where a pixel may be used for fitting
                (False on instruments, specular highlights). The output keeps those pixels.
            stamp_ns: the frame's stamp, carried to the output.

        Returns:
            'none'/'stream': exactly one frame (this one). 'window': 0..n frames in
            order, with a latency of about one window stride (see the module docstring).

        Raises:
            BadInputError: raw not a numeric 2-D array (reason 'shape'), unknown
                output_kind ('output_kind'), mask or intrinsics of another size
                ('size_mismatch'), mask not bool ('mask'), pose not a finite 4x4 or given
                without intrinsics ('pose').
            ConfigError: ``scale_source='model'`` with a relative (non-metric) model.
        """
        inp = self._validate(raw, output_kind, pose, intrinsics, mask, stamp_ns)
        out: list[AlignedFrame] = []
        key = (inp.disparity.shape, output_kind)
        if self._key is not None and key != self._key:
            # A new image size or model: the buffer no longer describes these frames.
            if self.config.mode == 'window':
                out.extend(self._window_flush())
            self._clear()
            self._stats.resets += 1
        if self._key is None:
            self._start(key, inp.disparity.shape)
        if intrinsics is not None:
            self._camera = intrinsics
        self._stats.frames += 1
        index = self._next_index
        self._next_index += 1
        if self.config.mode == 'none':
            out.append(self._passthrough(inp, index))
        elif self.config.mode == 'stream':
            out.append(self._stream(inp, index))
        else:
            out.extend(self._window_push(inp, index))
        return out

    def flush(self) -> list[AlignedFrame]:
        """Return every frame still held (window mode; [] otherwise), oldest first.

        The stream may continue afterwards: the next window fits on the flushed frames.
        """
        if self.config.mode != 'window' or self._ring is None:
            return []
        return self._window_flush()

    def preview(self, raw: np.ndarray, *,
                output_kind: str = 'relative_disparity') -> np.ndarray:
        """Depth (H, W) float32 of ``raw`` under the last good scale and shift (no fit).

        Nothing is stored. Before any scale is known, the first-frame policy of
        ``scale_source`` is applied to ``raw`` alone (all-NaN when it has no usable pixel).
        """
        disparity = to_disparity(np.asarray(raw), output_kind)
        if self._last_good is not None and self._key == (disparity.shape, output_kind):
            scale, shift = self._last_good
        else:
            height, width = disparity.shape[:2]
            grid = _Grid.for_size(height, width, self.config.max_fit_pixels)
            scale, shift, _ = self._initial_params(grid.sample(disparity))
        return disparity_to_depth(_apply(disparity, scale, shift))

    def reset(self) -> None:
        """Forget the stream (buffers, keyframes, scale); frame indices restart at 0."""
        self._clear()
        self._next_index = 0
        self._stats.resets += 1

    # ------------------------------------------------------------------ set-up

    def _clear(self) -> None:
        """Drop every buffer; the next frame allocates them for its size."""
        self._key: tuple[tuple[int, ...], str] | None = None
        self._ring: _Ring | None = None
        self._grid = _Grid(1, 0, 0, (0, 0))
        self._grid_positions = np.zeros(0, np.intp)
        self._camera = None
        # Last camera -> (it, fitting-image camera, fine warp camera).
        self._warp_cameras: tuple[Intrinsics, Intrinsics, Intrinsics] | None = None
        # Seeded per stream: the same input always gives the same output.
        self._rng = np.random.default_rng(0)
        self._length = 0  # frames stored since the buffer was (re)started
        self._last_good: tuple[float, float] | None = None
        self._consecutive_fallbacks = 0
        self._anchor_params: tuple[float, float] | None = None  # the first frame's
        self._change_ms = math.inf  # running mean square of the fits' changes
        self._changes = 0  # changes measured so far
        self._fusion = _Fusion(self.config.blend, self.config.blend_tolerance)
        self._kf_grid = np.zeros(0, np.float32)
        self._kf_pose = np.zeros(0)
        self._kf_has_pose = np.zeros(0, bool)
        self._kf_pos = np.zeros(0, np.int64)
        self._kf_overlap = np.zeros(0)
        self._win_grid = np.zeros((0, 0, 0), np.float32)
        self._win_scale = np.zeros(0)
        self._win_shift = np.zeros(0)
        self._win_good = np.zeros(0, bool)
        self._win_reason = np.zeros(0, dtype=object)  # fallback reason per window frame
        self._win_start = 0  # window mode: position of the current window's first frame
        self._aligned_end = 0  # positions before this were aligned by a window
        self._emit_next = 0  # next position to return

    def _start(self, key: tuple[tuple[int, ...], str], shape: tuple[int, ...]) -> None:
        """Allocate the buffers for frames of ``shape``."""
        cfg = self.config
        height, width = shape
        self._key = key
        self._grid = _Grid.for_size(height, width, cfg.max_fit_pixels)
        self._grid_positions = np.arange(self._grid.size)
        if cfg.mode == 'none':
            return
        grid = self._grid.shape
        self._ring = _Ring(cfg.buffer_capacity, height, width, grid)
        if cfg.mode == 'stream':
            k = cfg.keyframes
            self._kf_grid = np.full((k, *grid), np.nan, np.float32)
            self._kf_pose = np.zeros((k, 4, 4))
            self._kf_has_pose = np.zeros(k, bool)
            self._kf_pos = np.full(k, -1, np.int64)
            self._kf_overlap = np.zeros(k)
        else:
            w = cfg.window
            self._win_grid = np.full((w, *grid), np.nan, np.float32)
            self._win_scale = np.full(w, np.nan)
            self._win_shift = np.full(w, np.nan)
            self._win_good = np.zeros(w, bool)
            self._win_reason = np.full(w, '', dtype=object)

    def _buffer(self) -> _Ring:
        if self._ring is None:
            raise RuntimeError('TemporalAligner: buffer used before the first frame')
        return self._ring

    def _validate(
        self,
        raw: np.ndarray,
        output_kind: str,
        pose: np.ndarray | None,
        intrinsics: Intrinsics | None,
        mask: np.ndarray | None,
        stamp_ns: int,
    ) -> _Input:
        array = np.asarray(raw)
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
            raise BadInputError(
                f'Expected an (H, W) depth prediction, got shape {array.shape}.', 'shape')
        if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating)
                                       or np.issubdtype(array.dtype, np.integer)):
            raise BadInputError(
                f'Expected a numeric depth prediction, got dtype {array.dtype}.', 'shape')
        if self.config.scale_source == 'model' and output_kind == 'relative_disparity':
            raise ConfigError(
                "scale_source='model' trusts a metric model, but the model outputs "
                "'relative_disparity'; use scale_source 'fixed' or 'none'.")
        disparity = to_disparity(array, output_kind)
        shape = disparity.shape
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                raise BadInputError(
                    f'mask must be a bool array (True = usable), got dtype {mask.dtype}.',
                    'mask')
            if mask.shape != shape:
                raise BadInputError(
                    f'mask shape {mask.shape} differs from the prediction {shape}.',
                    'size_mismatch')
        if intrinsics is not None and (intrinsics.height, intrinsics.width) != shape:
            raise BadInputError(
                f'Intrinsics are {intrinsics.width}x{intrinsics.height} but the prediction '
                f'is {shape[1]}x{shape[0]}.', 'size_mismatch')
        pose_array = None
        if pose is not None:
            try:
                pose_array = np.asarray(pose, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise BadInputError(f'pose must be a 4x4 matrix, got {pose!r}.', 'pose') from err
            if pose_array.shape != (4, 4):
                raise BadInputError(
                    f'pose must be a 4x4 matrix, got shape {pose_array.shape}.', 'pose')
            if not np.isfinite(pose_array).all():
                raise BadInputError(f'pose has non-finite entries: {pose_array.tolist()}.',
                                    'pose')
            if intrinsics is None:
                raise BadInputError('A pose was given without intrinsics.', 'pose')
        return _frame(disparity, mask, pose_array, int(stamp_ns), self._grid_for(shape))

    def _grid_for(self, shape: tuple[int, ...]) -> _Grid:
        if self._key is not None and self._key[0] == shape:
            return self._grid
        return _Grid.for_size(shape[0], shape[1], self.config.max_fit_pixels)

    def _ring_frame(self, slot: int) -> _Input:
        """The frame stored in ring ``slot`` as a fitting target."""
        ring = self._buffer()
        pose = ring.pose[slot] if ring.has_pose[slot] else None
        return _Input(ring.raw[slot], ring.usable[slot], ring.grid_raw[slot], pose,
                      int(ring.stamp[slot]))

    # ------------------------------------------------------------------ shared steps

    def _initial_params(self, sub: np.ndarray) -> tuple[float, float, str]:
        """Scale and shift of the first frame of a stream (the metric policy).

        Returns:
            (scale, shift, reason): reason is '' when the frame can anchor the stream;
            otherwise the params are a best effort from this frame alone (NaN if none).
        """
        cfg = self.config
        values = sub[np.isfinite(sub)]
        reason = ''
        if values.size < cfg.min_valid_pixels:
            reason = TOO_FEW_PIXELS
        elif cfg.scale_source != 'model' and _is_constant(values):
            reason = CONSTANT
        if cfg.scale_source != 'fixed':
            return 1.0, 0.0, reason
        median = float(np.median(values)) if values.size else math.nan
        if not median > 0:
            return math.nan, math.nan, reason or NON_POSITIVE_SCALE
        return 1.0 / (cfg.reference_depth_m * median), 0.0, reason

    def _can_anchor(self, sub: np.ndarray) -> bool:
        """Whether a frame has enough spread-out pixels to restart a buffer from."""
        values = sub[np.isfinite(sub)]
        return values.size >= self.config.min_valid_pixels and (
            self.config.scale_source == 'model' or not _is_constant(values))

    def _reference(
        self, values: np.ndarray, ref_pose: np.ndarray | None, target: _Input,
        weight: float = 1.0,
    ) -> _Ref:
        """Pair a reference's aligned fitting image with the new frame's fitting image.

        Without poses the pairs are the same pixels of both. With both poses (and metric
        units) the reference is reprojected (``metrics.reproject_depth``) into a camera
        ``WARP_RESOLUTION`` times finer than the fitting image, and each point pairs with
        a neighbouring pixel of the new frame drawn with the bilinear weights of where it
        landed, so its expected position is exact. Rounding landing points to the nearest
        pixel instead shifts the whole warped image coherently by up to half a pixel,
        which biases every fit the same way (~0.3 % per frame at 48x40 pixels);
        interpolating the new frame would smooth its noise only, which biases the
        symmetric fit.
        """
        camera = self._fit_camera()
        if camera is None or target.pose is None or ref_pose is None:
            return _Ref(target.grid.ravel(), values.ravel(), self._grid_positions, weight)
        if self._warp_cameras is None or self._warp_cameras[0] != camera:
            coarse = self._grid.intrinsics(camera)
            fine = coarse.scaled(coarse.width * WARP_RESOLUTION, coarse.height * WARP_RESOLUTION)
            self._warp_cameras = (camera, coarse, fine)
        _, coarse, fine = self._warp_cameras
        T_new_ref = np.linalg.inv(target.pose) @ ref_pose
        warped = reproject_depth(disparity_to_depth(values), coarse, T_new_ref, fine).ravel()
        landed = np.flatnonzero(np.isfinite(warped))
        row, col = np.divmod(landed, fine.width)
        # Fine pixel centres in fitting-image pixel coordinates.
        f = WARP_RESOLUTION
        grid_pos = (self._stochastic_round((row + 0.5) / f - 0.5, coarse.height) * coarse.width
                    + self._stochastic_round((col + 0.5) / f - 0.5, coarse.width))
        return _Ref(target.grid.ravel()[grid_pos], np.float32(1.0) / warped[landed], grid_pos,
                    weight)

    def _reprojection_camera(self) -> Intrinsics | None:
        """The camera when poses are to be used (configured, units metric-like), else None."""
        if self.config.reproject != 'never' and self.config.scale_source != 'none':
            return self._camera
        return None

    def _fit_camera(self) -> Intrinsics | None:
        """The camera when the fits reproject their references with poses, else None.

        'auto' stops once the parameter prior has seen the model flicker: each warped fit
        then carries the small bias of poses tracked on the aligned depth itself, and
        following every fit exactly integrates it into a runaway of the global scale.
        """
        if self.config.reproject == 'auto' and self._flickering():
            return None
        return self._reprojection_camera()

    def _flickering(self) -> bool:
        """Whether the fits measured so far change more than ``flicker_threshold``."""
        return self._changes > 0 and self._change_ms > self.config.flicker_threshold ** 2

    def _stochastic_round(self, coord: np.ndarray, size: int) -> np.ndarray:
        """Round to floor or ceil with probabilities making the mean exact; clip to size."""
        low = np.floor(coord)
        up = self._rng.random(coord.size) < (coord - low)
        return np.clip(low.astype(np.intp) + up, 0, size - 1)

    def _fit(self, target: _Input, refs: list[_Ref]) -> tuple[Fit, np.ndarray, np.ndarray]:
        """Fit a new frame against references (their pixel pairs pooled).

        Returns:
            The fit; the (h, w) bool trust mask of the new frame's fitting image (False:
            the pixel disagrees with every reference covering it); (R,) overlap of each
            reference: the pixels it explains (within the agreement tolerance) relative to
            those the first reference explains, at most 1.
        """
        cfg = self.config
        sub = target.grid
        n = int(np.count_nonzero(np.isfinite(sub)))
        trusted = np.ones(sub.shape, bool)
        overlap = np.zeros(len(refs))
        if n < cfg.min_valid_pixels or not refs:
            reason = TOO_FEW_PIXELS if n < cfg.min_valid_pixels else NO_REFERENCE
            fit = Fit(math.nan, math.nan, False, reason, n, math.nan, np.zeros(0, bool))
            return fit, trusted, overlap
        x = np.concatenate([ref.x for ref in refs])
        y = np.concatenate([ref.y for ref in refs])
        sizes = [ref.x.size for ref in refs]
        weights = np.repeat([ref.weight for ref in refs], sizes)
        fit = fit_scale_shift(
            x, y, weights, estimator=cfg.estimator, robust=cfg.robust,
            iterations=cfg.robust_iterations, trim_fraction=cfg.trim_fraction,
            huber_k=cfg.huber_k, with_shift=cfg.scale_source != 'model',
            min_pixels=cfg.min_valid_pixels)
        if not fit.ok:
            return fit, trusted, overlap
        row = np.repeat(np.arange(len(refs)), sizes)
        with np.errstate(invalid='ignore'):
            predicted = fit.scale * x.astype(np.float64) + fit.shift
            residual = np.abs(y - predicted)
        # Agreement is judged against the noise level of the first reference (the most
        # recent frame in stream mode): a reference explains a pixel when it is as close
        # as that frame usually is. The tolerance thus follows the prediction noise, and
        # a keyframe that no longer shows the current view stands out even in noisy data.
        first = residual[:sizes[0]]
        first = first[np.isfinite(first)]
        sigma = MAD_TO_SIGMA * float(np.median(first)) if first.size else fit.residual_scale
        tolerance = max(AGREEMENT_SIGMAS * sigma,
                        AGREEMENT_FLOOR * float(np.nanmedian(np.abs(predicted))))
        with np.errstate(invalid='ignore'):
            agree = residual <= tolerance
        explained = np.bincount(row[agree], minlength=len(refs)) / n
        # Overlap relative to the first reference's: outliers of the new frame count for none.
        overlap = np.minimum(explained / max(float(explained[0]), 1e-12), 1.0)
        # Distrust only clear outliers (beyond the agreement tolerance of every reference
        # covering the pixel), not the trimmed noise tails: a reference with its noise
        # tails cut is less noisy than a new frame, which biases the symmetric fit.
        grid_pos = np.concatenate([ref.grid_pos for ref in refs])
        covered = (grid_pos >= 0) & np.isfinite(x) & np.isfinite(y) & (weights > 0)
        hit = np.bincount(grid_pos[covered], minlength=trusted.size) > 0
        kept = np.bincount(grid_pos[covered & agree], minlength=trusted.size) > 0
        return fit, (kept | ~hit).reshape(sub.shape), overlap

    def _accept(self, fit: Fit) -> None:
        self._stats.fits += 1
        self._stats.last_fit_pixels = fit.pixels
        self._stats.last_residual = fit.residual_scale

    def _set_last_good(self, scale: float, shift: float) -> None:
        if self._anchor_params is None:
            self._anchor_params = (scale, shift)
        self._last_good = (scale, shift)
        self._stats.last_scale = scale
        self._stats.last_shift = shift

    def _prior(self, fitted: tuple[float, float], previous: tuple[float, float] | None,
               sub: np.ndarray, posed: bool) -> tuple[float, float]:
        """Temporal prior on a frame's fitted (scale, shift) (see "Parameter prior").

        Args:
            fitted: the fit of this frame against its references.
            previous: the parameters of the frame it was chained from.
            sub: (h, w) raw disparity fitting image of this frame.
            posed: the references were reprojected with poses.

        Returns:
            The parameters to use: ``fitted`` while the model flickers, else a damped
            step from ``previous`` pulled towards the first frame's parameters.
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

        new, old = summary(fitted), summary(previous)
        change = float(np.mean((new - old) ** 2))
        if not math.isfinite(change):
            return fitted
        self._changes += 1
        self._change_ms = (change if self._changes == 1 else
                           (1 - CHANGE_MEMORY) * self._change_ms + CHANGE_MEMORY * change)
        if (self._changes < STABLE_AFTER
                or self._change_ms > cfg.flicker_threshold ** 2):
            return fitted  # a flickering model: follow every fit exactly
        step = old + (cfg.stable_gain if posed else cfg.unposed_gain) * (new - old)
        if self._anchor_params is not None and cfg.anchor_pull > 0:
            step += cfg.anchor_pull * (summary(self._anchor_params) - step)
        centre = math.exp(float(step[0]))
        if not with_shift:
            return centre / median, 0.0
        held = previous[1] if self._anchor_params is None else self._anchor_params[1]
        if cfg.hold_shift and centre - held > 0:
            # Only the scale follows, the shift stays the first frame's: a stable model's
            # shift is its own, and refitting it every frame bends the depth's shape with
            # every fit's error.
            return (centre - held) / median, held
        scale = math.exp(float(step[1])) / spread
        return scale, centre - scale * median

    def _store(self, slot: int, index: int, inp: _Input) -> None:
        """Write a new frame's raw data into ring ``slot`` (alignment not yet known)."""
        ring = self._buffer()
        ring.raw[slot] = inp.disparity
        ring.usable[slot] = inp.usable
        ring.grid_raw[slot] = inp.grid
        ring.has_pose[slot] = inp.pose is not None
        if inp.pose is not None:
            ring.pose[slot] = inp.pose
        ring.index[slot] = index
        ring.stamp[slot] = inp.stamp_ns

    def _set_result(self, slot: int, aligned: np.ndarray, trusted: np.ndarray, scale: float,
                    shift: float, good: bool, reason: str) -> None:
        """Write a frame's alignment into ring ``slot``."""
        ring = self._buffer()
        ring.aligned[slot] = aligned
        grid = ring.grid_aligned[slot]
        # The fitting image is linear in the disparity: map it like the frame.
        grid[...] = _apply(ring.grid_raw[slot], scale, shift)
        grid[~trusted] = np.nan  # outliers of the fit never serve as a reference
        ring.scale[slot] = scale
        ring.shift[slot] = shift
        ring.good[slot] = good
        ring.fallback[slot] = bool(reason)
        ring.reason[slot] = reason

    def _emit(self, index: int, stamp_ns: int, aligned: np.ndarray, scale: float, shift: float,
              reason: str, pose: np.ndarray | None = None, *, mix: bool = False,
              ) -> AlignedFrame:
        self._stats.emitted += 1
        # A trusted metric model (scale_source='model') keeps its per-pixel depth.
        if (self.config.blend > 0 and self.config.mode != 'none'
                and self.config.scale_source != 'model'):
            # Fusion keeps the poses even for a flickering model: it only mixes outputs,
            # so its warp's bias never feeds a fit (measured: lower TAE, same bounds).
            camera = self._reprojection_camera()
            aligned = self._fusion.apply(aligned, pose if camera is not None else None,
                                         camera, mix)
        if reason:
            self._stats.fallbacks += 1
        return AlignedFrame(index=index, stamp_ns=stamp_ns, depth=disparity_to_depth(aligned),
                            disparity=aligned, scale=scale, shift=shift,
                            fallback=bool(reason), fallback_reason=reason)

    # ------------------------------------------------------------------ mode none

    def _passthrough(self, inp: _Input, index: int) -> AlignedFrame:
        reason = ''
        if self._last_good is None:
            scale, shift, reason = self._initial_params(inp.grid)
            if not reason:
                self._set_last_good(scale, shift)
        else:
            scale, shift = self._last_good
        return self._emit(index, inp.stamp_ns, _apply(inp.disparity, scale, shift), scale,
                          shift, reason)

    # ------------------------------------------------------------------ mode stream

    def _stream(self, inp: _Input, index: int) -> AlignedFrame:
        cfg = self.config
        ring = self._buffer()
        pos = self._length
        slot = pos % ring.capacity
        trusted = np.ones(inp.grid.shape, bool)
        anchor = False  # this frame (re)starts the keyframes
        new_keyframe = False
        if self._last_good is None:
            scale, shift, reason = self._initial_params(inp.grid)
            anchor = not reason
        else:
            refs, kf_rows = self._stream_references(inp, pos)
            fit, trusted, overlap = self._fit(inp, refs)
            if fit.ok:
                posed = inp.pose is not None and self._fit_camera() is not None
                scale, shift = self._prior((fit.scale, fit.shift), self._last_good, inp.grid,
                                           posed)
                reason = ''
                self._accept(fit)
                new_keyframe = self._update_keyframes(kf_rows, overlap)
            else:
                self._stats.rejected_fits += int(fit.reason != NO_REFERENCE)
                scale, shift = self._last_good
                reason = fit.reason
                if (self._consecutive_fallbacks + 1 >= cfg.max_fallbacks
                        and self._can_anchor(inp.grid)):
                    # The buffer no longer matches the scene: restart it from this frame.
                    anchor = True
                    self._stats.reanchors += 1
        good = not reason or anchor
        self._consecutive_fallbacks = 0 if good else self._consecutive_fallbacks + 1
        if good:
            self._set_last_good(scale, shift)

        aligned = _apply(inp.disparity, scale, shift)
        self._store(slot, index, inp)
        self._set_result(slot, aligned, trusted, scale, shift, good, reason)
        self._length += 1
        if cfg.keyframes and (anchor or new_keyframe):
            if anchor:
                self._kf_pos[:] = -1
            self._add_keyframe(slot, pos)
        return self._emit(index, inp.stamp_ns, aligned, scale, shift, reason, inp.pose,
                          mix=good and pos > 0)

    def _stream_references(self, inp: _Input, pos: int) -> tuple[list[_Ref], list[int]]:
        """Previous good frames, then every keyframe (weight 0 while its overlap is low).

        Returns:
            The references and, per keyframe slot, its row in them (-1: empty slot).
        """
        cfg = self.config
        ring = self._buffer()
        refs: list[_Ref] = []
        row_of_pos: dict[int, int] = {}
        p = pos - 1
        while p >= max(0, pos - ring.capacity) and len(refs) < cfg.reference_frames:
            slot = p % ring.capacity
            if ring.good[slot]:
                row_of_pos[p] = len(refs)
                ref_pose = ring.pose[slot] if ring.has_pose[slot] else None
                refs.append(self._reference(ring.grid_aligned[slot], ref_pose, inp))
            p -= 1
        kf_rows = []
        for k in range(cfg.keyframes):
            kpos = int(self._kf_pos[k])
            if kpos < 0:
                kf_rows.append(-1)
            elif kpos in row_of_pos:
                kf_rows.append(row_of_pos[kpos])  # already a reference as a recent frame
            else:
                in_view = self._kf_overlap[k] >= cfg.keyframe_overlap
                kf_pose = self._kf_pose[k] if self._kf_has_pose[k] else None
                kf_rows.append(len(refs))
                refs.append(self._reference(self._kf_grid[k], kf_pose, inp,
                                            cfg.keyframe_weight if in_view else 0.0))
        return refs, kf_rows

    def _update_keyframes(self, kf_rows: list[int], overlap: np.ndarray) -> bool:
        """Record each keyframe's overlap; True when the current frame must become one."""
        for k, row in enumerate(kf_rows):
            if row >= 0:
                self._kf_overlap[k] = overlap[row]
        present = self._kf_pos >= 0
        if not present.any():
            return bool(self.config.keyframes)
        newest = int(np.argmax(np.where(present, self._kf_pos, -1)))
        return bool(self._kf_overlap[newest] < self.config.keyframe_overlap)

    def _add_keyframe(self, slot: int, pos: int) -> None:
        """Copy the frame of ring ``slot`` into a free keyframe or the one overlapping least."""
        empty = np.flatnonzero(self._kf_pos < 0)
        if empty.size:
            k = int(empty[0])
        else:
            k = int(np.lexsort((self._kf_pos, self._kf_overlap))[0])  # least overlap, oldest
        ring = self._buffer()
        self._kf_grid[k] = ring.grid_aligned[slot]
        self._kf_pose[k] = ring.pose[slot]
        self._kf_has_pose[k] = ring.has_pose[slot]
        self._kf_pos[k] = pos
        self._kf_overlap[k] = 1.0
        self._stats.keyframes_added += 1

    # ------------------------------------------------------------------ mode window

    def _window_push(self, inp: _Input, index: int) -> list[AlignedFrame]:
        ring = self._buffer()
        slot = self._length % ring.capacity
        self._store(slot, index, inp)
        ring.aligned[slot].fill(np.nan)  # aligned when its window completes
        ring.grid_aligned[slot].fill(np.nan)
        ring.good[slot] = ring.fallback[slot] = False
        ring.reason[slot] = ''
        self._length += 1
        if self._length == self._win_start + self.config.window:
            return self._run_window(final=False)
        return []

    def _window_flush(self) -> list[AlignedFrame]:
        if self._length > self._aligned_end:
            return self._run_window(final=True)
        return self._emit_range(self._emit_next, self._length)

    def _run_window(self, *, final: bool) -> list[AlignedFrame]:
        """Align the window [win_start, length) and return the frames that are final."""
        cfg = self.config
        ring = self._buffer()
        cap = ring.capacity
        start, end = self._win_start, self._length
        prior_end = self._aligned_end  # frames before this were aligned by earlier windows
        overlap_start = max(start, prior_end - cfg.overlap)
        anchors = range(start, min(start + cfg.window_keyframes, end))
        self._stats.windows += 1

        # 1. Bring every frame of the window into one scale, chained from the keyframes
        #    (or from the first usable frame), which keep their earlier alignment.
        last: int | None = None  # window offset of the last good consolidated frame
        last_params = self._last_good
        for p in range(start, end):
            j, slot = p - start, p % cap
            if p < overlap_start:  # a keyframe: already aligned, kept as it is
                self._win_grid[j] = ring.grid_aligned[slot]
                params = (float(ring.scale[slot]), float(ring.shift[slot]))
                good, reason = bool(ring.good[slot]), ''
            else:
                sources = ([] if last is None else [last]) + [
                    a - start for a in anchors
                    if a < p and a - start != last and self._win_good[a - start]]
                refs = [self._window_ref(start + i, slot) for i in sources]
                previous = (None if last is None else
                            (float(self._win_scale[last]), float(self._win_shift[last])))
                found, reason, good, trusted = self._consolidate(p, slot, refs, prior_end,
                                                                 previous)
                if not good and last_params is not None:
                    found = last_params  # fall back to the last good scale and shift
                params = (math.nan, math.nan) if found is None else found
                grid = self._win_grid[j]
                grid[...] = _apply(ring.grid_raw[slot], *params)
                grid[~trusted] = np.nan
            self._win_scale[j], self._win_shift[j] = params
            self._win_good[j] = good
            self._win_reason[j] = reason
            if good:
                last, last_params = j, params

        # 2. One scale and shift for the window: overlapped frames vs their earlier result.
        s_w, t_w = 1.0, 0.0
        pairs = [p for p in range(overlap_start, min(prior_end, end))
                 if self._win_good[p - start] and ring.good[p % cap]]
        if pairs:
            fit = fit_scale_shift(
                np.stack([self._win_grid[p - start] for p in pairs]),
                np.stack([ring.grid_aligned[p % cap] for p in pairs]),
                estimator=cfg.estimator, robust=cfg.robust, iterations=cfg.robust_iterations,
                trim_fraction=cfg.trim_fraction, huber_k=cfg.huber_k,
                with_shift=cfg.scale_source != 'model', min_pixels=cfg.min_valid_pixels)
            if fit.ok:
                self._accept(fit)
                s_w, t_w = fit.scale, fit.shift
            else:
                # The consolidation is already in the aligned scale: keep it unchanged.
                self._stats.rejected_fits += 1

        # 3. Blend the overlapped frames not yet returned, append the new ones.
        for p in range(max(overlap_start, self._emit_next), end):
            j, slot = p - start, p % cap
            scale = s_w * float(self._win_scale[j])
            shift = s_w * float(self._win_shift[j]) + t_w
            aligned = _apply(ring.raw[slot], scale, shift)
            good = bool(self._win_good[j])
            reason = str(self._win_reason[j])
            if p < prior_end:
                # Weight of the new window ramps over the overlap: 1/(L+1) ... L/(L+1).
                weight = (p - (prior_end - cfg.overlap) + 1) / (cfg.overlap + 1)
                aligned = _mix(ring.aligned[slot], aligned, weight)
                # Both are affine maps of the same raw frame, so is their blend.
                scale = (1.0 - weight) * float(ring.scale[slot]) + weight * scale
                shift = (1.0 - weight) * float(ring.shift[slot]) + weight * shift
                reason = reason or str(ring.reason[slot])
                good = good or bool(ring.good[slot])
            trusted = np.isfinite(self._win_grid[j]) if good else np.ones(self._grid.shape, bool)
            self._set_result(slot, aligned, trusted, scale, shift, good, reason)
            if good and not reason:
                self._set_last_good(scale, shift)

        self._aligned_end = end
        out = self._emit_range(self._emit_next, end if final else end - cfg.overlap)
        self._win_start = max(0, end - cfg.window_keyframes - cfg.overlap)
        return out

    def _consolidate(
        self, p: int, slot: int, refs: list[_Ref], prior_end: int,
        previous: tuple[float, float] | None,
    ) -> tuple[tuple[float, float] | None, str, bool, np.ndarray]:
        """Scale and shift of window frame ``p`` in the window's common scale.

        Returns:
            (params or None, fallback reason, usable as a reference, (h, w) trust mask).
        """
        ring = self._buffer()
        sub = ring.grid_raw[slot]
        trusted = np.ones(sub.shape, bool)
        if refs:
            fit, trusted, _ = self._fit(self._ring_frame(slot), refs)
            if fit.ok:
                self._accept(fit)
                posed = bool(ring.has_pose[slot]) and self._fit_camera() is not None
                params = self._prior((fit.scale, fit.shift), previous, sub, posed)
                return params, '', True, trusted
            self._stats.rejected_fits += 1
            return None, fit.reason, False, trusted
        if p < prior_end and ring.good[slot]:
            return (float(ring.scale[slot]), float(ring.shift[slot])), '', True, trusted
        if self._last_good is None:
            scale, shift, reason = self._initial_params(sub)
            return (scale, shift), reason, not reason, trusted
        if self._can_anchor(sub):
            # Nothing in the window to fit against: chain on from the last good scale.
            return self._last_good, NO_REFERENCE, True, trusted
        return None, TOO_FEW_PIXELS, False, trusted

    def _window_ref(self, ref_pos: int, slot: int) -> _Ref:
        """Consolidated window frame at position ``ref_pos`` as a reference for ``slot``."""
        ring = self._buffer()
        ref_slot = ref_pos % ring.capacity
        return self._reference(self._win_grid[ref_pos - self._win_start],
                               ring.pose[ref_slot] if ring.has_pose[ref_slot] else None,
                               self._ring_frame(slot))

    def _emit_range(self, begin: int, end: int) -> list[AlignedFrame]:
        ring = self._buffer()
        out = []
        for p in range(begin, end):
            slot = p % ring.capacity
            reason = str(ring.reason[slot]) if ring.fallback[slot] else ''
            out.append(self._emit(int(ring.index[slot]), int(ring.stamp[slot]),
                                  ring.aligned[slot].copy(), float(ring.scale[slot]),
                                  float(ring.shift[slot]), reason,
                                  ring.pose[slot].copy() if ring.has_pose[slot] else None,
                                  mix=not reason and p > 0))
        self._emit_next = max(self._emit_next, end)
        return out


#: Temporal fusion: the warp into the previous view is computed on a grid of about this
#: many pixels and interpolated (it is smooth; the per-pixel work is then a lookup).
FUSION_GRID_PIXELS = 4096


class _Fusion:
    """Pose-warped temporal fusion of the output (``AlignmentConfig.blend``).

    The previous fused output is looked up where each pixel of the new frame was seen
    in the previous view (backward warp with the poses: the new frame's depth gives the
    point, the previous view's pixel comes from projecting it), its depth moved into the
    new view, and mixed in with weight ``blend`` where both agree within ``tolerance``
    (relative disparity difference): a recursive filter that averages out per-frame noise
    without ghosting at occlusions, moving instruments or misregistered pixels, which keep
    the new value. Without poses the previous output is used in place (no motion).
    """

    def __init__(self, weight: float, tolerance: float) -> None:
        self.weight = weight
        self.tolerance = tolerance
        self._previous = np.zeros((0, 0), np.float32)
        self._pose: np.ndarray | None = None
        self._grid_key: tuple[Intrinsics, tuple[int, int]] | None = None
        self._grid_rows = np.zeros(0, np.intp)
        self._grid_cols = np.zeros(0, np.intp)
        self._grid_u = np.zeros((0, 0), np.float32)
        self._grid_v = np.zeros((0, 0), np.float32)

    def apply(self, aligned: np.ndarray, pose: np.ndarray | None,
              camera: Intrinsics | None, mix: bool) -> np.ndarray:
        """Fuse ``aligned`` (H, W) disparity with the previous output; returns a new array."""
        previous, previous_pose = self._previous, self._pose
        out = aligned
        if mix and previous.shape == aligned.shape:
            if pose is not None and previous_pose is not None and camera is not None:
                warped = self._warp(aligned, previous, np.linalg.inv(previous_pose) @ pose,
                                    camera)
            else:
                warped = previous
            with np.errstate(invalid='ignore'):
                agree = np.abs(warped - aligned) <= np.float32(self.tolerance) * aligned
            w = np.float32(self.weight)
            out = np.where(agree, aligned + w * (warped - aligned), aligned)
        else:
            out = aligned.copy()  # the caller owns the returned array
        self._previous = out.copy() if out is aligned else out
        self._pose = None if pose is None else pose.copy()
        return out

    def _warp(self, aligned: np.ndarray, previous: np.ndarray, T_prev_new: np.ndarray,
              camera: Intrinsics) -> np.ndarray:
        """The previous disparity seen from the new view, at each new pixel, NaN unknown."""
        height, width = aligned.shape
        self._set_grid(camera, (height, width))
        # Depth of the new frame at the grid points (holes filled: the warp is smooth).
        depth = disparity_to_depth(aligned[self._grid_rows[:, None], self._grid_cols[None, :]])
        finite = np.isfinite(depth)
        if not finite.any():
            return np.full_like(aligned, np.nan)
        depth[~finite] = np.median(depth[finite])
        fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
        R, t = T_prev_new[:3, :3], T_prev_new[:3, 3]
        ray_x = (self._grid_u - cx) / fx
        ray_y = (self._grid_v - cy) / fy
        point = [(R[r, 0] * ray_x + R[r, 1] * ray_y + R[r, 2]) * depth + t[r] for r in range(3)]
        with np.errstate(divide='ignore', invalid='ignore'):
            u = fx * point[0] / point[2] + cx
            v = fy * point[1] / point[2] + cy
        # A previous point seen at (u, v) with disparity q lies at z_new = a / q + b in the
        # new view, a = R_new_prev[2] . ray(u, v), b = t_new_prev[2]: a is smooth too.
        T_new_prev = np.linalg.inv(T_prev_new)
        r3, b = T_new_prev[2, :3], np.float32(T_new_prev[2, 3])
        a = r3[0] * (u - cx) / fx + r3[1] * (v - cy) / fy + r3[2]
        grid = np.stack([u, v, a], axis=-1).astype(np.float32)
        grid[~np.isfinite(grid)] = -1e6  # lands outside: no lookup
        full = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        seen = cv2.remap(previous, full[..., 0], full[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=math.nan)
        with np.errstate(divide='ignore', invalid='ignore'):
            warped = seen / (full[..., 2] + b * seen)
        return warped

    def _set_grid(self, camera: Intrinsics, shape: tuple[int, int]) -> None:
        """Grid points whose bilinear upsampling (cv2.resize) lands on every pixel."""
        if self._grid_key == (camera, shape):
            return
        height, width = shape
        step = max(1.0, math.sqrt(height * width / FUSION_GRID_PIXELS))
        h, w = max(2, round(height / step)), max(2, round(width / step))
        # cv2.resize maps small pixel j to full coordinate (j + 0.5) * W / w - 0.5.
        v = (np.arange(h) + 0.5) * height / h - 0.5
        u = (np.arange(w) + 0.5) * width / w - 0.5
        self._grid_rows = np.clip(np.rint(v), 0, height - 1).astype(np.intp)
        self._grid_cols = np.clip(np.rint(u), 0, width - 1).astype(np.intp)
        self._grid_u, self._grid_v = (a.astype(np.float32) for a in np.meshgrid(u, v))
        self._grid_key = (camera, shape)


def _frame(disparity: np.ndarray, mask: np.ndarray | None, pose: np.ndarray | None,
           stamp_ns: int, grid: _Grid) -> _Input:
    """Bundle a frame's disparity with its usable pixels and fitting image."""
    usable = np.isfinite(disparity)
    if mask is None:
        masked = disparity
    else:
        usable &= mask
        masked = np.where(usable, disparity, np.float32(np.nan))
    return _Input(disparity, usable, grid.sample(masked), pose, stamp_ns)


def _apply(disparity: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``max(scale * disparity + shift, 0)`` in float32, NaN kept."""
    out = disparity * np.float32(scale)
    out += np.float32(shift)
    np.maximum(out, np.float32(0.0), out=out)
    return out


def _mix(old: np.ndarray, new: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * old + weight * new`` where both are finite, else whichever is."""
    w = np.float32(weight)
    mixed = (np.float32(1.0) - w) * old + w * new
    return np.where(np.isfinite(mixed), mixed, np.where(np.isfinite(new), new, old))


def _is_constant(values: np.ndarray) -> bool:
    """True when a 1-D array of finite values has no usable spread."""
    if values.size < 2:
        return True
    low, high = float(values.min()), float(values.max())
    return high - low <= CONSTANT_SPREAD * max(abs(low), abs(high))


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f'{name} must be one of {allowed}, got {value!r}.')


def _integer(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f'{name} must be an integer >= {low}, got {value!r}.')


def _number(name: str, value: object, low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (
            v < high if high_open else v <= high)
    if not ok:
        interval = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
        raise ConfigError(f'{name} must be a number in {interval}, got {value!r}.')
