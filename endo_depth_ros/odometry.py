"""RGB-D visual odometry on (predicted) depth: frame-to-keyframe PnP tracking.

A keyframe is a frame whose aligned depth is known: corners detected in it are
lifted to 3-D with that depth. Later frames are located against the keyframe's 3-D
points: the corners are followed from frame to frame with pyramidal Lucas-Kanade
(``method='klt'``, forward-backward checked) or re-found by ORB descriptor matching
against the keyframe (``method='orb'``), then ``cv2.solvePnPRansac`` (EPnP) and
Levenberg-Marquardt refinement give ``T_camera_keyframe``. Poses are composed only at
keyframe switches, so the pose error does not grow frame by frame between keyframes.
A new keyframe is taken when the inliers fall (below ``keyframe_min_tracked_ratio``
of the keyframe's first count) or the motion from the keyframe grows.

Distorted cameras: tracked pixels are undistorted (``cv2.undistortPoints`` for
plumb_bob / rational_polynomial, ``cv2.fisheye.undistortPoints`` for equidistant) into
an ideal pinhole camera with the same K, in which lifting and PnP happen.

On failure (too few tracks or inliers, no keyframe depth yet, a non-finite or
implausibly large motion) the last pose is held with ``valid=False``, state
``'lost'`` and ``lost_variance`` on the covariance's diagonal; the failed frame is
offered as the next keyframe, so tracking restarts from the held pose (no jump) as
soon as its depth is given.

Call order (the pipeline needs the pose before the depth of the same frame is
aligned)::

    estimate = vo.track(rgb, intrinsics)   # pose of this frame in odom
    vo.set_reference_depth(depth)          # depth of the same frame; kept if it
                                           # becomes the next keyframe

Frames: ``odom`` is the optical frame of the first camera (REP-105: continuous,
never jumps); the child is the camera optical frame (REP-103). Translations are in
the depth's units: metres when the depth is metric, otherwise consistently scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import math
from typing import Literal

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError

#: Tracking states reported in :class:`PoseEstimate`.
State = Literal['init', 'tracking', 'lost']

METHODS = ('klt', 'orb')


@dataclass
class OdometryConfig:
    """Visual odometry settings.

    Attributes:
        enabled: the pipeline runs odometry only when True (``VisualOdometry``
            returns an invalid identity estimate without work when False).
        method: ``'klt'`` (good-features + pyramidal Lucas-Kanade from the keyframe)
            or ``'orb'`` (ORB descriptors matched to the keyframe).
        max_features: corners detected per keyframe.
        feature_quality: ``goodFeaturesToTrack`` quality level (fraction of the best corner).
        feature_min_distance_px: minimum spacing of keyframe corners (pixels).
        klt_window_px: Lucas-Kanade window side (pixels, odd).
        klt_levels: pyramid levels above the base image.
        klt_max_error_px: forward-backward consistency limit (pixels); 0 disables the check.
        orb_max_hamming: largest accepted ORB descriptor distance (bits).
        orb_search_radius_px: largest distance of an ORB match from where the last
            pose predicts it, in pixels of a 640-pixel-wide image (scaled with the image).
        min_inliers: fewest PnP inliers for a valid pose.
        ransac_reprojection_px: RANSAC inlier threshold (undistorted pixels).
        ransac_iterations: RANSAC iterations.
        ransac_confidence: RANSAC confidence in (0, 1).
        keyframe_min_tracked_ratio: switch keyframe when inliers / keyframe corners
            fall below this.
        keyframe_max_translation: switch keyframe when the translation from it exceeds
            this fraction of the keyframe's median scene depth (scale-free, so it
            works for metric and relative depth alike).
        keyframe_max_rotation_deg: switch keyframe beyond this rotation from it (degrees).
        max_frame_translation: reject a frame-to-frame step larger than this fraction
            of the median scene depth as a jump (tracking failure).
        max_frame_rotation_deg: reject a frame-to-frame rotation larger than this (degrees).
        min_depth: nearest depth lifted to 3-D (depth units, metres when metric).
        max_depth: farthest depth lifted to 3-D (depth units).
        max_depth_step: reject a corner whose 2x2 depth neighbourhood varies by more than
            this fraction (it sits on an occlusion edge).
        min_intensity: corners are detected only where the grey level exceeds this
            (the black outside an endoscope's circular field of view).
        max_intensity: ... and is below this (saturated specular highlights move with
            the light, not with the tissue).
        base_sigma_translation: standard deviation floor of each translation (depth units).
        base_sigma_rotation_rad: standard deviation floor of each rotation (radians).
        min_sigma_px: floor on the image noise used to scale the covariance (pixels).
        lost_variance: variance on the diagonal of the covariance of a failed estimate.
    """

    enabled: bool = True
    method: str = 'klt'
    max_features: int = 300
    feature_quality: float = 0.01
    feature_min_distance_px: float = 7.0
    klt_window_px: int = 15
    klt_levels: int = 3
    klt_max_error_px: float = 1.0
    orb_max_hamming: int = 64
    orb_search_radius_px: float = 80.0
    min_inliers: int = 15
    ransac_reprojection_px: float = 2.0
    ransac_iterations: int = 100
    ransac_confidence: float = 0.99
    keyframe_min_tracked_ratio: float = 0.5
    keyframe_max_translation: float = 0.15
    keyframe_max_rotation_deg: float = 10.0
    max_frame_translation: float = 0.5
    max_frame_rotation_deg: float = 20.0
    min_depth: float = 1e-4
    max_depth: float = 10.0
    max_depth_step: float = 0.05
    min_intensity: int = 10
    max_intensity: int = 250
    base_sigma_translation: float = 1e-4
    base_sigma_rotation_rad: float = 1e-3
    min_sigma_px: float = 0.5
    lost_variance: float = 1e4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value.

        Raises:
            ConfigError: naming the first invalid value.
        """
        if self.method not in METHODS:
            raise ConfigError(f'odometry.method must be one of {METHODS}, got {self.method!r}.')
        positive_ints = ('max_features', 'klt_window_px', 'ransac_iterations')
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f'odometry.{name} must be a positive integer, got {value!r}.')
        if self.klt_window_px % 2 == 0 or self.klt_window_px < 5:
            raise ConfigError(
                f'odometry.klt_window_px must be odd and >= 5, got {self.klt_window_px}.')
        if not isinstance(self.klt_levels, int) or not 0 <= self.klt_levels <= 8:
            raise ConfigError(f'odometry.klt_levels must be in 0..8, got {self.klt_levels!r}.')
        if not isinstance(self.min_inliers, int) or self.min_inliers < 6:
            raise ConfigError(
                f'odometry.min_inliers must be an integer >= 6 (PnP needs a margin over the '
                f'4-6 point minimal sets), got {self.min_inliers!r}.')
        if not 0 < self.orb_max_hamming <= 256:
            raise ConfigError(
                f'odometry.orb_max_hamming must be in 1..256, got {self.orb_max_hamming!r}.')
        open_unit = ('feature_quality', 'ransac_confidence')
        for name in open_unit:
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f'odometry.{name} must be in (0, 1), got {value!r}.')
        if not 0.0 <= self.keyframe_min_tracked_ratio < 1.0:
            raise ConfigError(
                'odometry.keyframe_min_tracked_ratio must be in [0, 1), '
                f'got {self.keyframe_min_tracked_ratio!r}.')
        positive = (
            'feature_min_distance_px', 'orb_search_radius_px', 'ransac_reprojection_px',
            'keyframe_max_translation', 'keyframe_max_rotation_deg', 'max_frame_translation',
            'max_frame_rotation_deg',
            'min_depth', 'max_depth', 'max_depth_step', 'base_sigma_translation',
            'base_sigma_rotation_rad', 'min_sigma_px', 'lost_variance')
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value <= 0:
                raise ConfigError(f'odometry.{name} must be a positive number, got {value!r}.')
        if not math.isfinite(self.klt_max_error_px) or self.klt_max_error_px < 0:
            raise ConfigError(
                f'odometry.klt_max_error_px must be >= 0, got {self.klt_max_error_px!r}.')
        if self.max_depth <= self.min_depth:
            raise ConfigError(
                f'odometry.max_depth ({self.max_depth}) must exceed min_depth ({self.min_depth}).')
        if not 0 <= self.min_intensity < self.max_intensity <= 256:
            raise ConfigError(
                'odometry.min_intensity/max_intensity must satisfy 0 <= min < max <= 256, '
                f'got {self.min_intensity!r}/{self.max_intensity!r}.')

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> OdometryConfig:
        """Build from a mapping (YAML parameters); unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'Unknown odometry parameter(s): {", ".join(unknown)}.')
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class PoseEstimate:
    """One frame's pose.

    Attributes:
        pose: (4, 4) float64 ``T_odom_camera`` (camera optical frame in odom).
        valid: False when tracking failed and ``pose`` is the last good pose held.
        covariance: (6, 6) float64 in ROS order (x, y, z, roll, pitch, yaw), axes of
            odom, translation in depth units and rotation in radians; the confidence of
            this frame's estimate relative to its keyframe (``lost_variance`` on the
            diagonal when invalid).
        inliers: PnP inliers used (0 when none).
        reprojection_error_px: RMS reprojection error of the inliers (undistorted
            pixels), NaN without a PnP solution.
        state: ``'init'`` (first frame: the odom origin), ``'tracking'`` or ``'lost'``.
        keyframe: True when this frame is selected to become the next keyframe (its
            depth, given to ``set_reference_depth``, will be used).
        tracked: keyframe features tracked or matched into this frame.
    """

    pose: np.ndarray
    valid: bool
    covariance: np.ndarray
    inliers: int = 0
    reprojection_error_px: float = math.nan
    state: State = 'init'
    keyframe: bool = False
    tracked: int = 0


@dataclass
class _Frame:
    """What track() keeps of the last frame until its depth arrives."""

    gray: np.ndarray
    intrinsics: Intrinsics
    pose: np.ndarray
    view: np.ndarray | None = None  # (H, W) bool field of view (features only inside)


@dataclass
class _Keyframe:
    """A frame with depth: its corners, their 3-D points and its pose."""

    frame: _Frame
    pixels: np.ndarray  # (N, 2) float32 raw pixel positions in the keyframe
    points: np.ndarray  # (N, 3) float64 in the keyframe's optical frame
    median_depth: float
    first_inliers: int = 0  # PnP inliers of the first frame tracked against it
    descriptors: np.ndarray | None = None  # (N, 32) uint8 for ORB
    # KLT: each corner's position in the last tracked frame, and whether it is still tracked.
    tracks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class VisualOdometry:
    """Frame-to-keyframe RGB-D odometry (see the module docstring for the call order).

    Args:
        config: the settings (validated).
    """

    def __init__(self, config: OdometryConfig | None = None) -> None:
        self.config = config if config is not None else OdometryConfig()
        self.config.validate()
        self._orb: dict[tuple[int, int], cv2.ORB] = {}
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame becomes the odom origin."""
        self._keyframe: _Keyframe | None = None
        self._last: _Frame | None = None
        self._candidate = False  # the last tracked frame wants to become the keyframe
        self._depth_used = False  # set_reference_depth already consumed for the last frame
        self._pose = np.eye(4)
        self._frames = 0

    @property
    def pose(self) -> np.ndarray:
        """The latest ``T_odom_camera`` (a copy)."""
        return self._pose.copy()

    def track(self, rgb: np.ndarray, intrinsics: Intrinsics, *,
              view: np.ndarray | None = None) -> PoseEstimate:
        """Locate a new frame against the current keyframe.

        Args:
            rgb: (H, W, 3) uint8 RGB or (H, W) uint8 grey image, H/W as ``intrinsics``.
            intrinsics: the camera of this image (distortion honoured).
            view: (H, W) bool field of view (``masks``); features are detected only
                inside it. None: the whole image.

        Returns:
            The frame's pose in odom. On failure the last pose is held with
            ``valid=False``, ``state='lost'`` and a large covariance; the frame is then
            offered as a new keyframe so that tracking recovers once its depth arrives.

        Raises:
            BadInputError: the image is not uint8 (H, W[, 3]) of the camera's size.
        """
        gray = _to_gray(rgb, intrinsics)
        if not self.config.enabled:
            return PoseEstimate(np.eye(4), False, self._lost_covariance(), state='init')
        self._frames += 1
        frame = _Frame(gray=gray, intrinsics=intrinsics, pose=self._pose.copy(),
                       view=view if view is None or view.shape == gray.shape else None)
        previous, self._last = self._last, frame
        self._depth_used = False

        if self._frames == 1:
            # The first camera defines odom: its pose is exact by definition.
            self._candidate = True
            return PoseEstimate(
                self._pose.copy(), True, self._base_covariance(), state='init', keyframe=True)

        keyframe = self._keyframe
        if keyframe is None or keyframe.frame.intrinsics != intrinsics:
            return self._fail(keyframe_reset=True)

        if self.config.method == 'klt':
            obj, img, idx = self._track_klt(
                keyframe, frame, previous if previous is not None else keyframe.frame)
        else:
            obj, img, idx = self._match_orb(keyframe, frame)
        tracked = len(idx)
        if tracked < self.config.min_inliers:
            return self._fail(tracked=tracked)

        solution = self._solve_pnp(obj, img, intrinsics)
        if solution is None:
            return self._fail(tracked=tracked)
        T_cur_kf, inlier_mask, rms_px, cov_cam = solution
        inliers = int(inlier_mask.sum())
        pose = keyframe.frame.pose @ _invert(T_cur_kf)
        reference = previous.pose if previous is not None else self._pose
        if not np.isfinite(pose).all() or self._is_jump(reference, pose, keyframe.median_depth):
            return self._fail(tracked=tracked)

        if self.config.method == 'klt':
            # Outliers are dropped for good: they are mistracks or moving specularities.
            keyframe.alive[idx[~inlier_mask]] = False

        self._pose = pose
        frame.pose = pose.copy()
        self._candidate = self._wants_keyframe(keyframe, T_cur_kf, inliers)
        R = pose[:3, :3]
        rot6 = np.zeros((6, 6))
        rot6[:3, :3] = R
        rot6[3:, 3:] = R
        covariance = rot6 @ cov_cam @ rot6.T + self._base_covariance()
        return PoseEstimate(
            pose=pose.copy(), valid=True, covariance=0.5 * (covariance + covariance.T),
            inliers=inliers, reprojection_error_px=rms_px, state='tracking',
            keyframe=self._candidate, tracked=tracked)

    def set_reference_depth(self, depth: np.ndarray) -> bool:
        """Attach the depth of the frame just tracked; it becomes the keyframe if selected.

        Args:
            depth: (h, w) float depth of the last frame given to :meth:`track`
                (depth units, NaN/<=0 invalid); any resolution with the image's
                aspect (it is sampled at the corners' scaled positions).

        Returns:
            True when a new keyframe was created from this depth.

        Raises:
            BadInputError: ``depth`` is not a 2-D array, or no frame was tracked yet.
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or depth.shape[0] < 2 or depth.shape[1] < 2:
            raise BadInputError(
                f'Reference depth must be a 2-D (H, W) array, got shape {depth.shape}.', 'depth')
        if not self.config.enabled:
            return False
        if self._last is None:
            raise BadInputError(
                'set_reference_depth() needs a frame: call track() first.', 'sequence')
        if not self._candidate or self._depth_used:
            return False
        self._depth_used = True
        keyframe = self._make_keyframe(self._last, depth)
        if keyframe is None:
            return False
        self._keyframe = keyframe
        self._candidate = False
        return True

    # -- tracking -----------------------------------------------------------------------

    def _track_klt(
        self, keyframe: _Keyframe, frame: _Frame, previous: _Frame,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track the keyframe's live corners from the previous frame into ``frame``.

        Frame-to-frame tracking follows the gradual changes of scale and of the
        co-moving light that defeat a keyframe template; the 3-D points stay those of
        the keyframe, so the pose itself does not accumulate error between keyframes.
        """
        cfg = self.config
        idx = np.flatnonzero(keyframe.alive)
        if len(idx) == 0:
            return np.zeros((0, 3)), np.zeros((0, 2), np.float32), idx
        src = keyframe.tracks[idx].reshape(-1, 1, 2)
        win = (cfg.klt_window_px, cfg.klt_window_px)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
        dst, status, _ = cv2.calcOpticalFlowPyrLK(
            previous.gray, frame.gray, src, src.copy(), winSize=win, maxLevel=cfg.klt_levels,
            criteria=criteria)
        ok = status.ravel() == 1
        if cfg.klt_max_error_px > 0 and ok.any():
            # Forward-backward check: a track that does not return is a mistrack.
            back, status_b, _ = cv2.calcOpticalFlowPyrLK(
                frame.gray, previous.gray, dst, src.copy(), winSize=win,
                maxLevel=cfg.klt_levels, criteria=criteria, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            error = np.linalg.norm((back - src).reshape(-1, 2), axis=1)
            ok &= (status_b.ravel() == 1) & (error < cfg.klt_max_error_px)
        dst = dst.reshape(-1, 2)
        w, h = frame.intrinsics.size
        ok &= (dst[:, 0] >= 0) & (dst[:, 0] <= w - 1) & (dst[:, 1] >= 0) & (dst[:, 1] <= h - 1)
        keyframe.alive[idx[~ok]] = False
        idx = idx[ok]
        keyframe.tracks[idx] = dst[ok]
        return keyframe.points[idx], dst[ok], idx

    def _match_orb(
        self, keyframe: _Keyframe, frame: _Frame,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Match keyframe ORB descriptors to this frame's."""
        if keyframe.descriptors is None:
            return np.zeros((0, 3)), np.zeros((0, 2), np.float32), np.zeros(0, dtype=np.int64)
        keypoints, descriptors = self._orb_for(frame).detectAndCompute(
            frame.gray, self._detect_mask(frame))
        if descriptors is None or len(keypoints) == 0:
            return np.zeros((0, 3)), np.zeros((0, 2), np.float32), np.zeros(0, dtype=np.int64)
        matches = self._matcher.match(keyframe.descriptors, descriptors)
        matches = [m for m in matches if m.distance <= self.config.orb_max_hamming]
        idx = np.array([m.queryIdx for m in matches], dtype=np.int64)
        img = np.array([keypoints[m.trainIdx].pt for m in matches], dtype=np.float32)
        img = img.reshape(-1, 2)
        # Guided matching: keep matches near where the last pose predicts them, which
        # removes most wrong matches of a repetitive texture before RANSAC sees them.
        T_prev_kf = _invert(self._pose) @ keyframe.frame.pose
        cam = keyframe.points[idx] @ T_prev_kf[:3, :3].T + T_prev_kf[:3, 3]
        intr = frame.intrinsics
        with np.errstate(divide='ignore', invalid='ignore'):
            predicted = cam[:, :2] / cam[:, 2:3] * [intr.fx, intr.fy] + [intr.cx, intr.cy]
            near = np.linalg.norm(predicted - _undistort(img, intr), axis=1)
            near = near <= self.config.orb_search_radius_px * max(intr.size) / 640
        return keyframe.points[idx[near]], img[near], idx[near]

    def _orb_for(self, frame: _Frame) -> cv2.ORB:
        """An ORB detector whose patch suits the image size (31 px is too big for 160x128)."""
        size = frame.intrinsics.size
        if size not in self._orb:
            patch = int(np.clip(min(size) // 8, 15, 31))
            self._orb[size] = cv2.ORB.create(
                nfeatures=self.config.max_features, scaleFactor=1.3, nlevels=4,
                edgeThreshold=patch, patchSize=patch, fastThreshold=10)
        return self._orb[size]

    def _solve_pnp(
        self, obj: np.ndarray, img: np.ndarray, intrinsics: Intrinsics,
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray] | None:
        """RANSAC PnP + LM refinement.

        Returns:
            ``(T_cur_kf, inlier mask over the inputs, RMS px, 6x6 covariance)`` where the
            covariance (x, y, z, rx, ry, rz) is of the camera's pose perturbation in its
            own axes, or None when there is no acceptable solution.
        """
        cfg = self.config
        K = intrinsics.K
        uv = _undistort(img, intrinsics)
        obj = np.ascontiguousarray(obj, dtype=np.float64)
        found, rvec, tvec, ransac_inliers = cv2.solvePnPRansac(
            obj, uv, K, None, iterationsCount=cfg.ransac_iterations,
            reprojectionError=cfg.ransac_reprojection_px, confidence=cfg.ransac_confidence,
            flags=cv2.SOLVEPNP_EPNP)
        if not found or ransac_inliers is None or len(ransac_inliers) < cfg.min_inliers:
            return None
        mask = np.zeros(len(obj), dtype=bool)
        mask[ransac_inliers.ravel()] = True
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-10)
        for _ in range(2):
            # Refine on the inliers, then re-select them with the refined pose.
            rvec, tvec = cv2.solvePnPRefineLM(obj[mask], uv[mask], K, None, rvec, tvec, criteria)
            R, _ = cv2.Rodrigues(rvec)
            cam = obj @ R.T + tvec.reshape(1, 3)
            with np.errstate(divide='ignore', invalid='ignore'):
                proj = cam[:, :2] / cam[:, 2:3] * [intrinsics.fx, intrinsics.fy]
                proj += [intrinsics.cx, intrinsics.cy]
                err = np.linalg.norm(proj - uv, axis=1)
            mask = (cam[:, 2] > 0) & (err < cfg.ransac_reprojection_px)
            if mask.sum() < cfg.min_inliers:
                return None
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = tvec.ravel()
        if not np.isfinite(T).all():
            return None
        rms = float(np.sqrt(np.mean(err[mask] ** 2)))
        covariance = _pnp_covariance(cam[mask], intrinsics, max(rms, cfg.min_sigma_px))
        if covariance is None:
            return None
        return T, mask, rms, covariance

    # -- keyframes ------------------------------------------------------------------------

    def _wants_keyframe(self, keyframe: _Keyframe, T_cur_kf: np.ndarray, inliers: int) -> bool:
        cfg = self.config
        # Relative to the first frame tracked against this keyframe: ORB's repeatability
        # (unlike KLT's) keeps well under all the keyframe's corners even without motion.
        keyframe.first_inliers = keyframe.first_inliers or inliers
        if inliers < max(2 * cfg.min_inliers, cfg.keyframe_min_tracked_ratio
                         * keyframe.first_inliers):
            return True
        T_kf_cur = _invert(T_cur_kf)
        if np.linalg.norm(T_kf_cur[:3, 3]) > cfg.keyframe_max_translation * keyframe.median_depth:
            return True
        return _angle_deg(T_kf_cur[:3, :3]) > cfg.keyframe_max_rotation_deg

    def _make_keyframe(self, frame: _Frame, depth: np.ndarray) -> _Keyframe | None:
        """Detect corners in ``frame``, lift them with ``depth``; None if too few survive."""
        cfg = self.config
        mask = self._detect_mask(frame)
        descriptors = None
        if cfg.method == 'orb':
            keypoints, descriptors = self._orb_for(frame).detectAndCompute(frame.gray, mask)
            if descriptors is None or len(keypoints) < cfg.min_inliers:
                return None
            pixels = np.array([k.pt for k in keypoints], dtype=np.float32)
        else:
            corners = cv2.goodFeaturesToTrack(
                frame.gray, cfg.max_features, cfg.feature_quality, cfg.feature_min_distance_px,
                mask=mask, blockSize=7)
            if corners is None or len(corners) < cfg.min_inliers:
                return None
            pixels = corners.reshape(-1, 2).astype(np.float32)
            # Sub-pixel corners make the LK template and the depth lookup agree.
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
            refined = cv2.cornerSubPix(frame.gray, pixels.reshape(-1, 1, 2), (3, 3), (-1, -1),
                                       criteria)
            pixels = np.asarray(refined, dtype=np.float32).reshape(-1, 2)
        z = self._sample_depth(depth, pixels, frame.intrinsics)
        ok = np.isfinite(z)
        if ok.sum() < cfg.min_inliers:
            return None
        pixels, z = pixels[ok], z[ok]
        rays = _normalised(pixels, frame.intrinsics)
        points = np.column_stack([rays * z[:, None], z]).astype(np.float64)
        keyframe = _Keyframe(frame=frame, pixels=np.ascontiguousarray(pixels), points=points,
                             median_depth=float(np.median(z)))
        if descriptors is not None:
            keyframe.descriptors = descriptors[ok]
        else:
            keyframe.tracks = keyframe.pixels.copy()
            keyframe.alive = np.ones(len(pixels), dtype=bool)
        return keyframe

    def _detect_mask(self, frame: _Frame) -> np.ndarray:
        """Where corners may be detected: neither black surround nor specular highlight."""
        gray = frame.gray
        bad = (gray <= self.config.min_intensity) | (gray >= self.config.max_intensity)
        # Grow the excluded areas: corners at their borders move with the light or the lens.
        if frame.view is not None:
            bad |= ~frame.view
        grown = cv2.dilate(bad.astype(np.uint8), np.ones((7, 7), np.uint8))
        return np.where(grown == 0, 255, 0).astype(np.uint8)

    def _sample_depth(
        self, depth: np.ndarray, pixels: np.ndarray, intrinsics: Intrinsics,
    ) -> np.ndarray:
        """Depth at ``pixels`` (image coordinates), NaN where unusable.

        The 2x2 neighbourhood must be valid, in range and smooth (no occlusion edge).
        """
        cfg = self.config
        h, w = depth.shape
        # Pixel-centre convention as Intrinsics.scaled.
        x = (pixels[:, 0] + 0.5) * (w / intrinsics.width) - 0.5
        y = (pixels[:, 1] + 0.5) * (h / intrinsics.height) - 0.5
        x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2)
        y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2)
        fx = np.clip(x - x0, 0.0, 1.0)
        fy = np.clip(y - y0, 0.0, 1.0)
        q = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0],
                      depth[y0 + 1, x0 + 1]], axis=1).astype(np.float64)
        with np.errstate(invalid='ignore'):
            good = np.isfinite(q).all(axis=1) & (q > 0).all(axis=1)
            lo, hi = q.min(axis=1), q.max(axis=1)
            good &= (hi - lo) <= cfg.max_depth_step * lo
            z = (q[:, 0] * (1 - fx) * (1 - fy) + q[:, 1] * fx * (1 - fy)
                 + q[:, 2] * (1 - fx) * fy + q[:, 3] * fx * fy)
            good &= (z >= cfg.min_depth) & (z <= cfg.max_depth)
        return np.where(good, z, np.nan)

    # -- failure and covariance ---------------------------------------------------------

    def _is_jump(self, previous: np.ndarray, pose: np.ndarray, scene_depth: float) -> bool:
        step = _invert(previous) @ pose
        if np.linalg.norm(step[:3, 3]) > self.config.max_frame_translation * scene_depth:
            return True
        return _angle_deg(step[:3, :3]) > self.config.max_frame_rotation_deg

    def _fail(self, *, tracked: int = 0, keyframe_reset: bool = False) -> PoseEstimate:
        """Hold the last pose, flag it, and offer this frame as the recovery keyframe."""
        if keyframe_reset:
            self._keyframe = None
        self._candidate = True
        return PoseEstimate(
            pose=self._pose.copy(), valid=False, covariance=self._lost_covariance(),
            state='lost', keyframe=True, tracked=tracked)

    def _base_covariance(self) -> np.ndarray:
        t = self.config.base_sigma_translation ** 2
        r = self.config.base_sigma_rotation_rad ** 2
        return np.diag([t, t, t, r, r, r])

    def _lost_covariance(self) -> np.ndarray:
        return np.eye(6) * self.config.lost_variance


def _to_gray(rgb: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise BadInputError(
            f'Odometry needs a uint8 (H, W, 3) RGB or (H, W) grey image, got {image.dtype} '
            f'{image.shape}.', 'encoding')
    if image.shape[:2] != (intrinsics.height, intrinsics.width):
        raise BadInputError(
            f'Image size {image.shape[1]}x{image.shape[0]} does not match the camera '
            f'{intrinsics.width}x{intrinsics.height}.', 'size_mismatch')
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _normalised(pixels: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(N, 2) raw pixels -> (N, 2) undistorted normalised coordinates (x/z, y/z)."""
    uv = _undistort(pixels, intrinsics)
    return np.column_stack([(uv[:, 0] - intrinsics.cx) / intrinsics.fx,
                            (uv[:, 1] - intrinsics.cy) / intrinsics.fy])


def _undistort(pixels: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(N, 2) raw pixels -> (N, 2) float64 pixels of the same K without distortion."""
    pts = np.ascontiguousarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
    if not intrinsics.is_distorted or len(pts) == 0:
        return pts.reshape(-1, 2)
    K = intrinsics.K
    D = np.asarray(intrinsics.distortion, dtype=np.float64)
    if intrinsics.distortion_model == 'equidistant':
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
        out = cv2.fisheye.undistortPoints(pts, K, D[:4], P=K, criteria=criteria)
    else:
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
        out = cv2.undistortPointsIter(pts, K, D, np.eye(3), K, criteria)
    return out.reshape(-1, 2).astype(np.float64)


def _pnp_covariance(cam: np.ndarray, intrinsics: Intrinsics, sigma_px: float) -> np.ndarray | None:
    """Gauss-Newton covariance sigma² (JᵀJ)⁻¹ of a camera pose from its inlier points.

    ``cam`` are (N, 3) inlier points in the current camera; the parameters are a
    perturbation ``[δt, δθ]`` of the camera pose in its own axes (translation, rotation
    vector), the order ROS uses (x, y, z, roll, pitch, yaw for small angles).
    """
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    fx, fy = intrinsics.fx, intrinsics.fy
    n = len(cam)
    # d(pixel)/d(point in camera), (N, 2, 3).
    J_p = np.zeros((n, 2, 3))
    J_p[:, 0, 0] = fx / z
    J_p[:, 0, 2] = -fx * x / z**2
    J_p[:, 1, 1] = fy / z
    J_p[:, 1, 2] = -fy * y / z**2
    # Moving the camera by (δt, δθ) moves a point by -δt - δθ × p = -δt + [p]x δθ.
    skew = np.zeros((n, 3, 3))
    skew[:, 0, 1], skew[:, 0, 2] = -z, y
    skew[:, 1, 0], skew[:, 1, 2] = z, -x
    skew[:, 2, 0], skew[:, 2, 1] = -y, x
    J = np.concatenate([-J_p, J_p @ skew], axis=2).reshape(-1, 6)
    info = J.T @ J
    if not np.isfinite(info).all() or np.linalg.cond(info) > 1e12:
        return None
    return sigma_px**2 * np.linalg.inv(info)


def _invert(T: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    R = T[:3, :3]
    inv[:3, :3] = R.T
    inv[:3, 3] = -R.T @ T[:3, 3]
    return inv


def _angle_deg(R: np.ndarray) -> float:
    cos = (np.trace(R) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, float(cos)))))
