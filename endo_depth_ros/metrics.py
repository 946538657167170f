"""Depth, temporal-consistency and trajectory metrics, defined as in the papers' eval code.

One module so every consumer (the bag evaluator, the live replay, the temporal aligner,
benchmarks) scores the same way:

- per-frame depth errors (``depth_errors``): AbsRel, SqRel, RMSE, RMSE log and the
  δ < 1.25^k accuracies of Monodepth2 / AF-SfMLearner / EndoDAC's ``compute_errors``,
  with predictions clamped to the evaluation range as their ``evaluate_depth.py`` does;
- scoring alignment protocols (``align_depth``): ``none`` (metric), ``median`` (per-frame
  median scaling), ``sequence-median`` (one median scale per sequence),
  ``sequence-affine`` (one least-squares scale+shift in disparity space
  per sequence, Video Depth Anything's benchmark) and ``sequence-mad`` (median / mean
  absolute deviation matching in disparity space per sequence, the Depth Anything
  endoscopy evaluations such as EndoDAV);
- the temporal alignment error (``temporal_alignment_error``, Video Depth Anything's TAE)
  built on ``reproject_depth`` (nearest-pixel z-buffer);
- trajectory errors: ``umeyama_alignment``, ``absolute_trajectory_error`` and
  ``relative_pose_error``.

Units: depth in metres, poses as 4x4 float64 ``T_world_camera`` in metres. Everything here
is numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError

#: Keys of the dict returned by ``depth_errors``, in the papers' table order.
DEPTH_METRICS = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3', 'acc_2cm')
#: EndoSynth's metric accuracy: a pixel is right when within this distance (metres).
ACC_DISTANCE_M = 0.02
#: Scoring alignment protocols understood by ``align_depth``.
PROTOCOLS = ('none', 'median', 'sequence-median', 'sequence-affine', 'sequence-mad')
#: Protocols that fit one alignment for the whole sequence.
SEQUENCE_PROTOCOLS = ('none', 'sequence-median', 'sequence-affine', 'sequence-mad')
#: What a prediction array holds: depth in metres (or relative units) or its inverse.
PREDICTION_KINDS = ('depth', 'disparity')

#: Default evaluation range (metres): endoscopy benchmarks cap ground truth at 0.15 m.
DEFAULT_MIN_DEPTH = 1e-3
DEFAULT_MAX_DEPTH = 0.15

DepthStack = np.ndarray | Sequence[np.ndarray]


# --------------------------------------------------------------------------- depth errors


def valid_depth_mask(
    gt: np.ndarray,
    pred: np.ndarray | None = None,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels that take part in scoring.

    Args:
        gt: (H, W) ground-truth depth (metres), NaN/0 invalid.
        pred: optional (H, W) prediction; its non-finite or non-positive pixels are excluded.
        min_depth, max_depth: evaluation range applied to ``gt`` (metres, inclusive).
        mask: optional (H, W) bool, True where the pixel may be scored.

    Returns:
        (H, W) bool.
    """
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(gt) & (gt >= min_depth) & (gt <= max_depth)
        if pred is not None:
            valid &= np.isfinite(pred) & (pred > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    return valid


def depth_errors(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    mask: np.ndarray | None = None,
    clamp: bool = True,
) -> dict[str, float] | None:
    """Standard monocular depth errors of one frame.

    Valid pixels: finite ``gt`` within ``[min_depth, max_depth]``, finite positive ``pred``
    and ``mask``. As in Monodepth2's ``evaluate_depth.py`` the prediction is clamped to
    ``[min_depth, max_depth]`` before scoring (``clamp=False`` disables it).

    Args:
        gt: (H, W) ground-truth depth, metres, NaN invalid.
        pred: (H, W) predicted depth, metres (already aligned), NaN invalid.
        min_depth, max_depth: evaluation range (metres).
        mask: optional (H, W) bool of pixels to score.
        clamp: clamp the prediction to the evaluation range.

    Returns:
        ``{'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3'}`` as floats: AbsRel =
        mean(|g-p|/g), SqRel = mean((g-p)²/g) (metres), RMSE (metres), RMSE of log depth,
        δ_k = mean(max(g/p, p/g) < 1.25^k), acc_2cm = mean(|g-p| < 2 cm) (EndoSynth;
        meaningful for metric depth); ``None`` when no pixel is valid.

    Raises:
        BadInputError: shapes differ (reason ``'size_mismatch'``).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_same_shape(gt, pred, 'ground truth', 'prediction')
    valid = valid_depth_mask(gt, pred, min_depth=min_depth, max_depth=max_depth, mask=mask)
    if not valid.any():
        return None
    g = gt[valid].astype(np.float64)
    p = pred[valid].astype(np.float64)
    if clamp:
        np.clip(p, min_depth, max_depth, out=p)
    thresh = np.maximum(g / p, p / g)
    diff = g - p
    return {
        'abs_rel': float(np.mean(np.abs(diff) / g)),
        'sq_rel': float(np.mean(diff**2 / g)),
        'rmse': float(np.sqrt(np.mean(diff**2))),
        'rmse_log': float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        'a1': float(np.mean(thresh < 1.25)),
        'a2': float(np.mean(thresh < 1.25**2)),
        'a3': float(np.mean(thresh < 1.25**3)),
        'acc_2cm': float(np.mean(np.abs(diff) < ACC_DISTANCE_M)),
    }


def mean_errors(per_frame: Sequence[dict[str, float] | None]) -> dict[str, float] | None:
    """Average per-frame ``depth_errors`` over frames (``None`` frames are dropped).

    Returns:
        The mean of each metric, or ``None`` when every frame was dropped.
    """
    kept = [e for e in per_frame if e is not None]
    if not kept:
        return None
    return {k: float(np.mean([e[k] for e in kept])) for k in DEPTH_METRICS}


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class DepthAlignment:
    """A fitted scoring alignment: maps a raw prediction to metric depth.

    ``space='depth'``: ``depth = scale * pred_depth + shift``;
    ``space='disparity'``: ``depth = 1 / (scale * pred_disparity + shift)``.
    Aligned disparities are clipped to ``[1/max_depth, 1/min_depth]`` (as Video Depth
    Anything's eval clips them) so the result is a finite positive depth.
    """

    space: str
    scale: float
    shift: float
    min_depth: float = DEFAULT_MIN_DEPTH
    max_depth: float = DEFAULT_MAX_DEPTH

    def apply(self, pred: np.ndarray, kind: str = 'depth') -> np.ndarray:
        """Apply to a prediction of ``kind`` ('depth'|'disparity'); returns float32 depth."""
        _check_kind(kind)
        pred = np.asarray(pred, dtype=np.float64)
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            if self.space == 'depth':
                depth = pred if kind == 'depth' else 1.0 / pred
                out = self.scale * depth + self.shift
            else:
                disp = pred if kind == 'disparity' else 1.0 / pred
                aligned = np.clip(self.scale * disp + self.shift,
                                  1.0 / self.max_depth, 1.0 / self.min_depth)
                out = 1.0 / aligned
            # Depth <= 0 is invalid by convention; a relative disparity of 0 is legal.
            invalid = ~np.isfinite(pred) | ~np.isfinite(out)
            if kind == 'depth':
                invalid |= pred <= 0
        out[invalid] = np.nan
        return out.astype(np.float32)


def fit_alignment(
    preds: DepthStack,
    gts: DepthStack,
    protocol: str,
    *,
    kind: str = 'depth',
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    masks: DepthStack | None = None,
) -> list[DepthAlignment | None]:
    """Fit a scoring alignment protocol on a sequence.

    Sequence protocols fit once over the valid pixels of all frames; ``median`` fits per
    frame; ``none`` is the identity.

    Args:
        preds: N predictions (N, H, W) or a sequence of (H, W): depth or disparity per ``kind``.
        gts: N ground-truth depths (metres), same shapes, NaN invalid.
        protocol: one of ``PROTOCOLS``.
        kind: ``'depth'`` or ``'disparity'`` (what ``preds`` holds).
        min_depth, max_depth: evaluation range (metres) selecting the pixels used for fitting.
        masks: optional N bool masks of pixels usable for fitting.

    Returns:
        One alignment per frame (the same object for sequence protocols); ``None`` for a
        frame (or all frames) where no valid pixel allows a fit.

    Raises:
        ConfigError: unknown protocol or kind.
        BadInputError: lengths or shapes differ (reason ``'size_mismatch'``).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f'Unknown scoring protocol {protocol!r}; expected one of {PROTOCOLS}.')
    _check_kind(kind)
    if len(preds) != len(gts):
        raise BadInputError(
            f'{len(preds)} predictions but {len(gts)} ground-truth frames.', 'size_mismatch')
    if masks is not None and len(masks) != len(preds):
        raise BadInputError(
            f'{len(masks)} masks but {len(preds)} predictions.', 'size_mismatch')
    n = len(preds)
    common = {'min_depth': min_depth, 'max_depth': max_depth}
    if protocol == 'none':
        return [DepthAlignment('depth', 1.0, 0.0, **common)] * n

    pairs = []  # per frame: (gt depth, prediction in the protocol's space) on valid pixels
    space = 'depth' if protocol in ('median', 'sequence-median') else 'disparity'
    for i in range(n):
        gt = np.asarray(gts[i])
        pred = np.asarray(preds[i])
        _check_same_shape(gt, pred, 'ground truth', 'prediction')
        valid = valid_depth_mask(gt, pred, min_depth=min_depth, max_depth=max_depth,
                                 mask=None if masks is None else masks[i])
        p = pred[valid].astype(np.float64)
        if (space == 'depth') != (kind == 'depth'):
            p = 1.0 / p
        pairs.append((gt[valid].astype(np.float64), p))

    if protocol == 'sequence-median':
        if not any(g.size for g, _ in pairs):
            return [None] * n
        g_all = np.concatenate([g for g, _ in pairs])
        p_all = np.concatenate([p for _, p in pairs])
        fit = DepthAlignment('depth', float(np.median(g_all) / np.median(p_all)), 0.0, **common)
        return [fit] * n
    if protocol == 'median':
        out: list[DepthAlignment | None] = []
        for g, p in pairs:
            if g.size == 0:
                out.append(None)
                continue
            # Monodepth2: ratio = median(gt) / median(pred).
            out.append(DepthAlignment('depth', float(np.median(g) / np.median(p)), 0.0, **common))
        return out

    g_disp = np.concatenate([1.0 / g for g, _ in pairs]) if pairs else np.empty(0)
    p_disp = np.concatenate([p for _, p in pairs]) if pairs else np.empty(0)
    if g_disp.size < 2:
        return [None] * n
    if protocol == 'sequence-affine':
        scale, shift = _least_squares_affine(p_disp, g_disp)
    else:
        t_gt = float(np.median(g_disp))
        s_gt = float(np.mean(np.abs(g_disp - t_gt)))
        t_pred = float(np.median(p_disp))
        s_pred = float(np.mean(np.abs(p_disp - t_pred)))
        if s_pred <= 0:
            return [None] * n
        # (p - t_pred) * s_gt / s_pred + t_gt  ==  scale * p + shift
        scale = s_gt / s_pred
        shift = t_gt - scale * t_pred
    return [DepthAlignment('disparity', scale, shift, **common)] * n


def align_depth(
    pred: DepthStack,
    gt: DepthStack,
    protocol: str,
    *,
    kind: str = 'depth',
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    mask: DepthStack | None = None,
) -> np.ndarray:
    """Align predictions to ground truth with a scoring protocol (see ``fit_alignment``).

    Args:
        pred: one (H, W) prediction or a sequence (N, H, W) / list of (H, W), depth or
            disparity per ``kind``. Sequence protocols fit once over all given frames.
        gt: matching ground-truth depth (metres), NaN invalid.
        protocol: one of ``PROTOCOLS``.
        kind: ``'depth'`` or ``'disparity'``.
        min_depth, max_depth: evaluation range (metres).
        mask: optional bool mask(s) of pixels usable for fitting, same layout as ``gt``.

    Returns:
        float32 aligned depth (metres) shaped like ``pred`` ((H, W) or (N, H, W)); frames
        that could not be fitted are all NaN.
    """
    single = isinstance(pred, np.ndarray) and pred.ndim == 2
    preds = _as_frames(pred, single)
    gts = _as_frames(gt, single)
    masks = None if mask is None else _as_frames(mask, single)
    fits = fit_alignment(preds, gts, protocol, kind=kind, min_depth=min_depth,
                         max_depth=max_depth, masks=masks)
    out = [
        np.full(np.shape(p), np.nan, np.float32) if f is None else f.apply(p, kind)
        for f, p in zip(fits, preds, strict=True)
    ]
    if single:
        return out[0]
    if not out:
        return np.empty((0, 0, 0), np.float32)
    return np.stack(out)


def _as_frames(frames: DepthStack, single: bool) -> list[np.ndarray]:
    if single:
        return [np.asarray(frames)]
    return [np.asarray(f) for f in frames]


def _least_squares_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(scale, shift) minimising ||scale * x + shift - y||² (closed form, float64)."""
    mx, my = float(x.mean()), float(y.mean())
    var = float(np.mean((x - mx) ** 2))
    if var <= 0:
        return (my / mx if mx != 0 else 1.0), 0.0
    scale = float(np.mean((x - mx) * (y - my))) / var
    return scale, my - scale * mx


# --------------------------------------------------------------------------- reprojection


def reproject_depth(
    depth_src: np.ndarray,
    intrinsics: Intrinsics,
    T_dst_src: np.ndarray,
    intrinsics_dst: Intrinsics | None = None,
) -> np.ndarray:
    """Render a depth map as seen from another camera pose (nearest-pixel z-buffer).

    Each source pixel is back-projected with the pinhole ``intrinsics.K`` (depth is z along
    the optical axis; distortion is ignored, depth images are assumed rectified),
    transformed by ``T_dst_src`` and projected with ``intrinsics_dst``; when several points
    land on one pixel the nearest (smallest z) wins.

    Args:
        depth_src: (H, W) depth of the source camera, metres, NaN/<=0 invalid.
        intrinsics: source camera (its size must be W x H).
        T_dst_src: 4x4 transform mapping source-camera points to destination-camera points.
        intrinsics_dst: destination camera (default: the source camera).

    Returns:
        (H_dst, W_dst) float32 z-depth in the destination camera, NaN where nothing lands.

    Raises:
        BadInputError: depth size differs from the intrinsics or ``T_dst_src`` is not 4x4.
    """
    depth_src = np.asarray(depth_src)
    if depth_src.ndim != 2 or depth_src.shape != (intrinsics.height, intrinsics.width):
        raise BadInputError(
            f'Depth shape {depth_src.shape} does not match intrinsics '
            f'{intrinsics.width}x{intrinsics.height}.', 'size_mismatch')
    T = np.asarray(T_dst_src, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise BadInputError(f'T_dst_src must be a finite 4x4 matrix, got shape {T.shape}.',
                            'pose')
    dst = intrinsics if intrinsics_dst is None else intrinsics_dst
    out = np.full(dst.height * dst.width, np.inf, np.float32)

    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth_src) & (depth_src > 0)
    v, u = np.nonzero(valid)
    z = depth_src[v, u].astype(np.float32)
    # dst_pixel ~ K_dst (R K_src^-1 (u, v, 1) z + t) = z M (u, v, 1) + b; written row by row
    # in float32 (sub-pixel error ~1e-4 px at 518 px) because a (3, 3) @ (3, N) float64
    # matmul is several times slower than these element-wise ops.
    M = (dst.K @ T[:3, :3] @ np.linalg.inv(intrinsics.K)).astype(np.float32)
    b = (dst.K @ T[:3, 3]).astype(np.float32)
    uf = u.astype(np.float32)
    vf = v.astype(np.float32)
    rows = [(M[r, 0] * uf + M[r, 1] * vf + M[r, 2]) * z + b[r] for r in range(3)]
    z_dst = rows[2]
    front = z_dst > 0
    with np.errstate(divide='ignore', invalid='ignore'):
        u_dst = np.rint(rows[0] / z_dst)
        v_dst = np.rint(rows[1] / z_dst)
    inside = front & (u_dst >= 0) & (u_dst < dst.width) & (v_dst >= 0) & (v_dst < dst.height)
    flat = v_dst[inside].astype(np.intp) * dst.width + u_dst[inside].astype(np.intp)
    np.minimum.at(out, flat, z_dst[inside])
    out[np.isinf(out)] = np.nan
    return out.reshape(dst.height, dst.width)


def temporal_alignment_error(
    depths: DepthStack,
    poses: Sequence[np.ndarray] | np.ndarray,
    intrinsics: Intrinsics,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    masks: DepthStack | None = None,
) -> float | None:
    """Temporal alignment error (TAE) of a depth sequence, ×100 (Video Depth Anything).

    For each consecutive pair (t, t+1), frame t's depth is reprojected into t+1 with
    ``T_next_prev = inv(T_world_next) @ T_world_prev`` and compared to frame t+1's depth
    with AbsRel (frame t+1 as reference), and symmetrically t+1 into t; the two are
    averaged (see ``temporal_alignment_errors``).

    Args:
        depths: N aligned depth maps (N, H, W) or list of (H, W), metres, NaN invalid.
        poses: N poses ``T_world_camera`` (4x4), usually ground truth.
        intrinsics: the camera of every frame.
        min_depth, max_depth: evaluation range (metres).
        masks: optional N bool masks (applied on the reference frame of each direction).

    Returns:
        Mean over the pairs that overlap of the symmetric AbsRel ×100; ``None`` when no
        pair overlaps (or fewer than two frames).
    """
    values = temporal_alignment_errors(depths, poses, intrinsics, min_depth=min_depth,
                                       max_depth=max_depth, masks=masks)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def temporal_alignment_errors(
    depths: DepthStack,
    poses: Sequence[np.ndarray] | np.ndarray,
    intrinsics: Intrinsics,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
    masks: DepthStack | None = None,
) -> np.ndarray:
    """Per-pair TAE ×100: (N-1,) float64, NaN for pairs without overlapping valid pixels.

    Pixels count when the reprojected and the reference depth are both finite and within
    ``[min_depth, max_depth]``. Arguments as in ``temporal_alignment_error``.
    """
    if len(depths) != len(poses):
        raise BadInputError(
            f'{len(depths)} depth maps but {len(poses)} poses.', 'size_mismatch')
    values = np.full(max(len(depths) - 1, 0), np.nan)
    for t in range(len(depths) - 1):
        a, b = np.asarray(depths[t]), np.asarray(depths[t + 1])
        Pa, Pb = np.asarray(poses[t], np.float64), np.asarray(poses[t + 1], np.float64)
        T_b_a = np.linalg.inv(Pb) @ Pa
        ma = None if masks is None else masks[t]
        mb = None if masks is None else masks[t + 1]
        forward = _reprojected_abs_rel(a, b, T_b_a, intrinsics, mb, min_depth, max_depth)
        backward = _reprojected_abs_rel(b, a, np.linalg.inv(T_b_a), intrinsics, ma,
                                        min_depth, max_depth)
        both = [e for e in (forward, backward) if e is not None]
        if both:
            values[t] = 100.0 * float(np.mean(both))
    return values


def _reprojected_abs_rel(
    src: np.ndarray,
    ref: np.ndarray,
    T_ref_src: np.ndarray,
    intrinsics: Intrinsics,
    mask: np.ndarray | None,
    min_depth: float,
    max_depth: float,
) -> float | None:
    warped = reproject_depth(src, intrinsics, T_ref_src)
    with np.errstate(invalid='ignore'):
        valid = (np.isfinite(warped) & (warped >= min_depth) & (warped <= max_depth)
                 & np.isfinite(ref) & (ref >= min_depth) & (ref <= max_depth))
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if not valid.any():
        return None
    r = ref[valid].astype(np.float64)
    return float(np.mean(np.abs(warped[valid] - r) / r))


# --------------------------------------------------------------------------- trajectories


def umeyama_alignment(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (or rigid) transform mapping ``src`` points onto ``dst``.

    Umeyama (1991): finds ``s, R, t`` minimising ``sum ||dst_i - (s R src_i + t)||²``.

    Args:
        src: (N, 3) points (e.g. estimated positions, metres).
        dst: (N, 3) corresponding points (e.g. ground-truth positions).
        with_scale: estimate the scale (Sim(3)); otherwise ``s = 1`` (SE(3)).

    Returns:
        ``(s, R (3, 3), t (3,))`` float64.

    Raises:
        BadInputError: shapes differ, fewer than 2 points (3 for a rotation to be
            determined in general) or non-finite values.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise BadInputError(
            f'Umeyama needs two (N, 3) arrays, got {src.shape} and {dst.shape}.',
            'size_mismatch')
    if src.shape[0] < 2:
        raise BadInputError(f'Umeyama needs at least 2 points, got {src.shape[0]}.', 'too_few')
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise BadInputError('Umeyama got non-finite points.', 'not_finite')
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[0]
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0  # reflection -> proper rotation
    R = U @ S @ Vt
    if with_scale:
        var_s = float(np.mean(np.sum(xs**2, axis=1)))
        s = float(np.trace(np.diag(D) @ S) / var_s) if var_s > 0 else 1.0
    else:
        s = 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def absolute_trajectory_error(
    est_poses: Sequence[np.ndarray] | np.ndarray,
    gt_poses: Sequence[np.ndarray] | np.ndarray,
    with_scale: bool = True,
) -> float:
    """ATE: RMSE of camera positions after Umeyama alignment of the estimate onto ground truth.

    Args:
        est_poses: N estimated ``T_odom_camera`` (4x4).
        gt_poses: N ground-truth ``T_world_camera`` (4x4), same frames.
        with_scale: Sim(3) alignment (monocular scale ambiguity) instead of SE(3).

    Returns:
        RMSE in metres.
    """
    errors = aligned_position_errors(est_poses, gt_poses, with_scale)
    return float(np.sqrt(np.mean(errors**2)))


def aligned_position_errors(
    est_poses: Sequence[np.ndarray] | np.ndarray,
    gt_poses: Sequence[np.ndarray] | np.ndarray,
    with_scale: bool = True,
) -> np.ndarray:
    """Per-frame position errors (N,) in metres after Umeyama alignment (see ATE)."""
    est = _positions(est_poses)
    gt = _positions(gt_poses)
    s, R, t = umeyama_alignment(est, gt, with_scale)
    return np.linalg.norm(gt - (s * est @ R.T + t), axis=1)


def align_trajectory(
    est_poses: Sequence[np.ndarray] | np.ndarray,
    gt_poses: Sequence[np.ndarray] | np.ndarray,
    with_scale: bool = True,
) -> np.ndarray:
    """The estimated poses mapped into the ground-truth frame by the Umeyama fit (N, 4, 4).

    Rotations are rotated by R and positions mapped by ``s R p + t`` (for plotting).
    """
    est = _stack_poses(est_poses)
    s, R, t = umeyama_alignment(est[:, :3, 3], _positions(gt_poses), with_scale)
    out = est.copy()
    out[:, :3, :3] = R @ est[:, :3, :3]
    out[:, :3, 3] = s * est[:, :3, 3] @ R.T + t
    return out


def relative_pose_error(
    est_poses: Sequence[np.ndarray] | np.ndarray,
    gt_poses: Sequence[np.ndarray] | np.ndarray,
    *,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """RPE between consecutive frames (delta = 1 frame).

    For each pair the error is ``E = inv(inv(G_i) G_{i+1}) @ inv(P_i) P_{i+1}`` with G the
    ground truth and P the estimate (translation of P multiplied by ``scale``, e.g. the
    Sim(3) scale from ``umeyama_alignment``).

    Args:
        est_poses: N estimated poses (4x4).
        gt_poses: N ground-truth poses (4x4).
        scale: factor applied to the estimated relative translations.

    Returns:
        ``(trans (N-1,) metres, rot (N-1,) degrees)`` float64.
    """
    est = _stack_poses(est_poses)
    gt = _stack_poses(gt_poses)
    if est.shape != gt.shape:
        raise BadInputError(
            f'{len(est)} estimated poses but {len(gt)} ground-truth poses.', 'size_mismatch')
    n = len(est)
    trans = np.zeros(max(n - 1, 0))
    rot = np.zeros(max(n - 1, 0))
    for i in range(n - 1):
        d_gt = np.linalg.inv(gt[i]) @ gt[i + 1]
        d_est = np.linalg.inv(est[i]) @ est[i + 1]
        d_est[:3, 3] *= scale
        E = np.linalg.inv(d_gt) @ d_est
        trans[i] = float(np.linalg.norm(E[:3, 3]))
        rot[i] = rotation_angle_deg(E[:3, :3])
    return trans, rot


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees (robust near 0 and 180)."""
    c = (float(np.trace(R)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _stack_poses(poses: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise BadInputError(f'Poses must be (N, 4, 4), got {arr.shape}.', 'pose')
    return arr


def _positions(poses: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    return _stack_poses(poses)[:, :3, 3]


# --------------------------------------------------------------------------- helpers


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise BadInputError(
            f'{name_a} shape {a.shape} differs from {name_b} shape {b.shape}.', 'size_mismatch')


def _check_kind(kind: str) -> None:
    if kind not in PREDICTION_KINDS:
        raise ConfigError(f'Unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}.')
