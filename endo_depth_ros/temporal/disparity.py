"""Raw predictions <-> disparity <-> depth, and the affine map applied to a frame."""

from __future__ import annotations

import numpy as np

from endo_depth_ros.errors import BadInputError

#: What a raw prediction holds (``DepthModel.output_kind``).
OUTPUT_KINDS = ('relative_disparity', 'metric_depth')


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


def apply_affine(disparity: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``max(scale * disparity + shift, 0)`` in float32, NaN kept."""
    out = disparity * np.float32(scale)
    out += np.float32(shift)
    np.maximum(out, np.float32(0.0), out=out)
    return out


def mix_frames(old: np.ndarray, new: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * old + weight * new`` where both are finite, else whichever is."""
    w = np.float32(weight)
    mixed = (np.float32(1.0) - w) * old + w * new
    return np.where(np.isfinite(mixed), mixed, np.where(np.isfinite(new), new, old))

