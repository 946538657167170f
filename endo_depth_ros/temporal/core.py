"""The aligner's shared machinery: buffers, input validation, fitting against references.

``AlignerCore`` holds the state of one stream; ``StreamMode`` and ``WindowMode`` add the
two alignment procedures on top and ``TemporalAligner`` is the public class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.metrics import reproject_depth
from endo_depth_ros.temporal.config import AlignmentConfig
from endo_depth_ros.temporal.disparity import apply_affine, disparity_to_depth, to_disparity
from endo_depth_ros.temporal.fusion import OutputFusion
from endo_depth_ros.temporal.policy import ParameterPrior
from endo_depth_ros.temporal.results import AlignedFrame, AlignmentStats
from endo_depth_ros.temporal.ring_buffer import (
    FitGrid,
    FrameInput,
    RingBuffer,
    make_input,
)
from endo_depth_ros.temporal.robust_fit import (
    CONSTANT,
    MAD_TO_SIGMA,
    NO_REFERENCE,
    NON_POSITIVE_SCALE,
    TOO_FEW_PIXELS,
    Fit,
    fit_scale_shift,
    is_constant,
)

#: A reference pixel "explains" a new pixel when their aligned disparities differ by less
#: than this many robust standard deviations of the residuals against the most recent
#: frame.
AGREEMENT_SIGMAS = 3.0
#: ... or by less than this fraction of the disparity (so noise-free data still agree).
AGREEMENT_FLOOR = 1e-3
#: Reprojected references land on a camera this many times finer than the fitting image
#: (see ``AlignerCore._reference``).
WARP_RESOLUTION = 3


@dataclass(frozen=True, eq=False)
class Reference:
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


class AlignerCore:
    """State and shared steps of one aligned stream (see ``TemporalAligner``).

    Not thread-safe: one producer pushes frames in order.
    """

    _camera: Intrinsics | None

    def __init__(self, config: AlignmentConfig | None = None) -> None:
        """Create an aligner; buffers are allocated at the first frame (for its size)."""
        self.config = AlignmentConfig() if config is None else config
        self._stats = AlignmentStats()
        self._next_index = 0
        self._clear()

    @property
    def stats(self) -> AlignmentStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the preallocated buffers (constant for a given frame size)."""
        return 0 if self._ring is None else self._ring.nbytes

    # ------------------------------------------------------------------ set-up

    def _clear(self) -> None:
        """Drop every buffer; the next frame allocates them for its size."""
        self._key: tuple[tuple[int, ...], str] | None = None
        self._ring: RingBuffer | None = None
        self._grid = FitGrid(1, 0, 0, (0, 0))
        self._grid_positions = np.zeros(0, np.intp)
        self._camera = None
        # Last camera -> (it, fitting-image camera, fine warp camera).
        self._warp_cameras: tuple[Intrinsics, Intrinsics, Intrinsics] | None = None
        # Seeded per stream: the same input always gives the same output.
        self._rng = np.random.default_rng(0)
        self._length = 0  # frames stored since the buffer was (re)started
        self._last_good: tuple[float, float] | None = None
        self._consecutive_fallbacks = 0
        self._prior = ParameterPrior(self.config)
        self._fusion = OutputFusion(self.config.blend, self.config.blend_tolerance)

    def _start(self, key: tuple[tuple[int, ...], str], shape: tuple[int, ...]) -> None:
        """Allocate the buffers for frames of ``shape``."""
        cfg = self.config
        height, width = shape
        self._key = key
        self._grid = FitGrid.for_size(height, width, cfg.max_fit_pixels)
        self._grid_positions = np.arange(self._grid.size)
        if cfg.mode == 'none':
            return
        grid = self._grid.shape
        self._ring = RingBuffer(cfg.buffer_capacity, height, width, grid)

    def _buffer(self) -> RingBuffer:
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
    ) -> FrameInput:
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
        return make_input(disparity, mask, pose_array, int(stamp_ns), self._grid_for(shape))

    def _grid_for(self, shape: tuple[int, ...]) -> FitGrid:
        if self._key is not None and self._key[0] == shape:
            return self._grid
        return FitGrid.for_size(shape[0], shape[1], self.config.max_fit_pixels)

    def _ring_frame(self, slot: int) -> FrameInput:
        """The frame stored in ring ``slot`` as a fitting target."""
        ring = self._buffer()
        pose = ring.pose[slot] if ring.has_pose[slot] else None
        return FrameInput(ring.raw[slot], ring.usable[slot], ring.grid_raw[slot], pose,
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
        elif cfg.scale_source != 'model' and is_constant(values):
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
            self.config.scale_source == 'model' or not is_constant(values))

    def _reference(
        self, values: np.ndarray, ref_pose: np.ndarray | None, target: FrameInput,
        weight: float = 1.0,
    ) -> Reference:
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
            return Reference(target.grid.ravel(), values.ravel(), self._grid_positions, weight)
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
        return Reference(target.grid.ravel()[grid_pos], np.float32(1.0) / warped[landed], grid_pos,
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
        if self.config.reproject == 'auto' and self._prior.flickering:
            return None
        return self._reprojection_camera()

    def _stochastic_round(self, coord: np.ndarray, size: int) -> np.ndarray:
        """Round to floor or ceil with probabilities making the mean exact; clip to size."""
        low = np.floor(coord)
        up = self._rng.random(coord.size) < (coord - low)
        return np.clip(low.astype(np.intp) + up, 0, size - 1)

    def _fit(self, target: FrameInput, refs: list[Reference],
             ) -> tuple[Fit, np.ndarray, np.ndarray, Fit]:
        """Fit a new frame against references (their pixel pairs pooled).

        Returns:
            The fit; the (h, w) bool trust mask of the new frame's fitting image (False:
            the pixel disagrees with every reference covering it); (R,) overlap of each
            reference: the pixels it explains (within the agreement tolerance) relative to
            those the first reference explains, at most 1; the fit against the first
            reference alone (the most recent frame: what the parameter prior measures).
        """
        cfg = self.config
        sub = target.grid
        n = int(np.count_nonzero(np.isfinite(sub)))
        trusted = np.ones(sub.shape, bool)
        overlap = np.zeros(len(refs))
        if n < cfg.min_valid_pixels or not refs:
            reason = TOO_FEW_PIXELS if n < cfg.min_valid_pixels else NO_REFERENCE
            fit = Fit(math.nan, math.nan, False, reason, n, math.nan, np.zeros(0, bool))
            return fit, trusted, overlap, fit
        x = np.concatenate([ref.x for ref in refs])
        y = np.concatenate([ref.y for ref in refs])
        sizes = [ref.x.size for ref in refs]
        weights = np.repeat([ref.weight for ref in refs], sizes)
        fit = self._fit_pairs(x, y, weights)
        if not fit.ok:
            return fit, trusted, overlap, fit
        # The change of the parameters is measured against the most recent frame alone:
        # pooled with older references (a window's first frames, keyframes) it carries
        # their misregistration too, and a chain of frames aligned by different
        # parameters feeds the prior's own decisions back into the measurement.
        recent = fit if len(refs) == 1 else self._fit_pairs(
            x[:sizes[0]], y[:sizes[0]], weights[:sizes[0]])
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
        return fit, (kept | ~hit).reshape(sub.shape), overlap, recent

    def _fit_pairs(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> Fit:
        """The configured robust fit of ``y ~ scale * x + shift`` on (N,) pairs."""
        cfg = self.config
        return fit_scale_shift(
            x, y, weights, estimator=cfg.estimator, robust=cfg.robust,
            iterations=cfg.robust_iterations, trim_fraction=cfg.trim_fraction,
            huber_k=cfg.huber_k, with_shift=cfg.scale_source != 'model',
            min_pixels=cfg.min_valid_pixels)

    def _accept(self, fit: Fit) -> None:
        self._stats.fits += 1
        self._stats.last_fit_pixels = fit.pixels
        self._stats.last_residual = fit.residual_scale

    def _set_last_good(self, scale: float, shift: float) -> None:
        self._prior.set_anchor_once(scale, shift)
        self._last_good = (scale, shift)
        self._stats.last_scale = scale
        self._stats.last_shift = shift


    def _store(self, slot: int, index: int, inp: FrameInput) -> None:
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
        grid[...] = apply_affine(ring.grid_raw[slot], scale, shift)
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

    def _passthrough(self, inp: FrameInput, index: int) -> AlignedFrame:
        reason = ''
        if self._last_good is None:
            scale, shift, reason = self._initial_params(inp.grid)
            if not reason:
                self._set_last_good(scale, shift)
        else:
            scale, shift = self._last_good
        return self._emit(index, inp.stamp_ns, apply_affine(inp.disparity, scale, shift), scale,
                          shift, reason)

