"""Temporal alignment of per-frame depth (bounded memory, no ROS).

Per-frame depth networks predict affine-invariant disparity: each frame has its own
unknown scale and shift, so the depth flickers. ``TemporalAligner`` maps each raw
prediction ``d`` to ``scale * d + shift`` so that consecutive frames agree, and returns
depth in metres::

    aligner = TemporalAligner(AlignmentConfig(mode='stream'))
    for rgb, pose in video:
        raw = model.infer(rgb)                                # relative disparity
        for out in aligner.push(raw, pose=pose, intrinsics=camera, mask=usable):
            use(out.depth)                                    # (H, W) float32 metres
    for out in aligner.flush():                               # 'window' mode only
        use(out.depth)

Modes (``AlignmentConfig.mode``):

- ``none``: every frame keeps the first frame's scale and shift (metric conversion only).
- ``stream``: zero latency; each frame is fitted against the last frame(s) and keyframes
  (``stream.py``).
- ``window``: offline overlapping windows as in Video Depth Anything / EndoDAV; frames
  come out in bursts of one window stride (``window.py``).

Fits are robust closed-form scale+shift fits in disparity space on a fixed subsample
(``robust_fit.py``); ``mask`` (False: instruments, specular highlights, outside the field
of view) keeps pixels out of the fits. A parameter prior decides how much of each fit a
stable model follows (``policy.py``); the output is optionally fused with the pose-warped
previous output (``blend``, ``fusion.py``).

Metric conversion (``scale_source``): ``fixed`` gives the first usable frame shift 0 and
the scale that puts its median depth at ``reference_depth_m``; ``model`` trusts a metric
model (scale-only fits); ``none`` keeps relative units (poses are then not used).

Poses are ``T_world_camera`` 4x4 in the unit of the aligned depth (metres); with them the
references are reprojected into the new view (``reproject``). Without poses a camera
approaching the tissue cannot be told from a change of the prediction's scale.

Degenerate inputs never raise: an all-NaN frame comes out all-NaN, a frame without a
usable fit falls back to the last good scale and shift (``AlignedFrame.fallback``), a
change of frame size or output kind resets the stream. Every buffer is preallocated
(``ring_buffer.py``): memory does not grow with the sequence length.
"""

from endo_depth_ros.temporal.aligner import TemporalAligner
from endo_depth_ros.temporal.config import (
    ESTIMATORS,
    MODES,
    REPROJECT_POLICIES,
    ROBUST_METHODS,
    SCALE_SOURCES,
    AlignmentConfig,
)
from endo_depth_ros.temporal.core import AGREEMENT_FLOOR, AGREEMENT_SIGMAS, WARP_RESOLUTION
from endo_depth_ros.temporal.disparity import OUTPUT_KINDS, disparity_to_depth, to_disparity
from endo_depth_ros.temporal.results import AlignedFrame, AlignmentStats
from endo_depth_ros.temporal.robust_fit import MAD_TO_SIGMA, Fit, fit_scale_shift

__all__ = [
    'AGREEMENT_FLOOR',
    'AGREEMENT_SIGMAS',
    'ESTIMATORS',
    'MAD_TO_SIGMA',
    'MODES',
    'OUTPUT_KINDS',
    'REPROJECT_POLICIES',
    'ROBUST_METHODS',
    'SCALE_SOURCES',
    'WARP_RESOLUTION',
    'AlignedFrame',
    'AlignmentConfig',
    'AlignmentStats',
    'Fit',
    'TemporalAligner',
    'disparity_to_depth',
    'fit_scale_shift',
    'to_disparity',
]
