"""Depth images to 3-D points in the camera optical frame, and pose parameterisations.

Back-projection follows REP-118 depth (z along the optical axis): a pixel with
undistorted normalised ray ``(x/z, y/z, 1)`` and depth ``z`` is the point
``z * (x/z, y/z, 1)``. Ray directions depend only on the camera, so they are computed
once per :class:`~endo_depth_ros.camera.Intrinsics` value (OpenCV ``undistortPoints`` /
``fisheye.undistortPoints`` for distorted lenses) and kept in a small cache; a cloud is
then one multiplication plus masking, a few milliseconds for a 518x518 depth image.

Points are float32 metres in the camera optical frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import functools
import math

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError

#: Camera ray tables kept in memory (one per distinct Intrinsics value).
RAY_CACHE_SIZE = 8
#: A ray is kept only if projecting it again lands within this distance of its pixel;
#: beyond a lens model's valid domain the iterative undistortion returns garbage.
_RAY_REPROJECTION_TOLERANCE_PX = 0.01
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


#: Upper bounds of the CloudConfig fields (changed live: a huge value must not stall frames).
MAX_STRIDE = 64
MAX_SPECULAR_DILATE_PX = 50
MAX_FOV_RADIUS = 10.0


@dataclass(frozen=True)
class CloudConfig:
    """How depth images become point clouds.

    Attributes:
        stride: keep every ``stride``-th pixel in both directions (decimation, 1..64).
        min_range_m: depths (z, metres) at or below this are dropped (>= 0).
        max_range_m: depths above this are dropped (> min_range_m; ``inf`` disables).
        mask_specular: drop saturated specular highlights found in the RGB image
            (needs ``rgb`` in :func:`make_cloud`).
        specular_threshold: a pixel is specular when all its RGB channels are at least
            this value (1..255).
        specular_dilate_px: grow the specular mask by this many pixels, because depth
            around a highlight is unreliable too (0..50).
        fov_mask: drop pixels outside the endoscope's circular field of view.
        fov_radius: radius of that circle as a fraction of half the shorter image
            side, centred on the image (0..10; 1.0 touches the shorter sides).
        colour: attach per-point RGB colours when an RGB image is given.
        organized: keep the (h, w) image layout with NaN for dropped pixels instead of
            an (N, 3) list of valid points.
    """

    stride: int = 1
    min_range_m: float = 0.0
    max_range_m: float = math.inf
    mask_specular: bool = False
    specular_threshold: int = 240
    specular_dilate_px: int = 2
    fov_mask: bool = False
    fov_radius: float = 1.0
    colour: bool = True
    organized: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == 'bool' and not isinstance(value, bool):
                raise ConfigError(f'CloudConfig.{f.name} must be true or false, got {value!r}.')
            if f.type == 'int' and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f'CloudConfig.{f.name} must be an integer, got {value!r}.')
            if f.type == 'float' and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f'CloudConfig.{f.name} must be a number, got {value!r}.')
        # Upper bounds too: these apply live, and a huge value would cost every frame.
        if not 1 <= self.stride <= MAX_STRIDE:
            raise ConfigError(f'CloudConfig.stride must be in 1..{MAX_STRIDE}, got {self.stride}.')
        if not (math.isfinite(self.min_range_m) and self.min_range_m >= 0):
            raise ConfigError(
                f'CloudConfig.min_range_m must be finite and >= 0, got {self.min_range_m}.')
        if math.isnan(self.max_range_m) or self.max_range_m <= self.min_range_m:
            raise ConfigError(
                f'CloudConfig.max_range_m must exceed min_range_m={self.min_range_m}, '
                f'got {self.max_range_m}.')
        if not 1 <= self.specular_threshold <= 255:
            raise ConfigError(
                f'CloudConfig.specular_threshold must be in 1..255, got {self.specular_threshold}.')
        if not 0 <= self.specular_dilate_px <= MAX_SPECULAR_DILATE_PX:
            raise ConfigError(
                f'CloudConfig.specular_dilate_px must be in 0..{MAX_SPECULAR_DILATE_PX}, '
                f'got {self.specular_dilate_px}.')
        if not (math.isfinite(self.fov_radius) and 0 < self.fov_radius <= MAX_FOV_RADIUS):
            raise ConfigError(
                f'CloudConfig.fov_radius must be in (0, {MAX_FOV_RADIUS}], got {self.fov_radius}.')


@dataclass(frozen=True, eq=False)
class PointCloud:
    """Points back-projected from one depth image, in the camera optical frame.

    Attributes:
        points: (N, 3) float32 metres (unorganised, all finite) or (h, w, 3) float32
            metres with NaN rows for dropped pixels (organised).
        colors: RGB uint8 of the same leading shape ((N, 3) or (h, w, 3)), or None.
        organized: whether ``points`` keeps the (decimated) image layout.
    """

    points: np.ndarray
    colors: np.ndarray | None
    organized: bool

    @property
    def height(self) -> int:
        """Rows of the cloud: the image rows when organised, 1 otherwise (PointCloud2)."""
        return int(self.points.shape[0]) if self.organized else 1

    @property
    def width(self) -> int:
        """Points per row: the image columns when organised, N otherwise (PointCloud2)."""
        return int(self.points.shape[1]) if self.organized else int(self.points.shape[0])

    @property
    def is_dense(self) -> bool:
        """True when every point is finite (PointCloud2 ``is_dense``: no NaN or inf)."""
        return bool(np.isfinite(self.points).all())

    def __len__(self) -> int:
        return self.height * self.width


# ---------------------------------------------------------------------------------------
# Camera rays


@dataclass(frozen=True, eq=False)
class _RayTable:
    rays: np.ndarray  # (H, W, 3) float32, read-only
    x: np.ndarray  # (H, W) float32 contiguous copy of rays[..., 0], for fast masked gathers
    y: np.ndarray  # (H, W) float32 contiguous copy of rays[..., 1]
    has_nan: bool  # some pixels have no ray


def camera_rays(intrinsics: Intrinsics) -> np.ndarray:
    """Undistorted ray direction of every pixel, scaled so that z = 1.

    Computed once per distinct ``intrinsics`` value and cached (see
    :func:`ray_cache_info`); the returned array is shared and read-only.

    Args:
        intrinsics: the camera; ``plumb_bob`` and ``rational_polynomial`` lenses are
            undistorted with ``cv2.undistortPoints``, ``equidistant`` (fisheye) with
            ``cv2.fisheye.undistortPoints``.

    Returns:
        (H, W, 3) float32 ``(x/z, y/z, 1)``; NaN for pixels outside the lens model's
        valid domain (whose undistortion does not reproject onto the pixel).

    Raises:
        BadInputError: reason ``'intrinsics'`` when OpenCV rejects the distortion
            coefficients (e.g. an equidistant model without exactly 4 of them).
    """
    return _cached_rays(intrinsics).rays


def ray_cache_info() -> functools._CacheInfo:
    """Hits, misses (= ray tables computed) and size of the :func:`camera_rays` cache."""
    return _cached_rays.cache_info()


def clear_ray_cache() -> None:
    """Forget every cached ray table."""
    _cached_rays.cache_clear()


@functools.lru_cache(maxsize=RAY_CACHE_SIZE)
def _cached_rays(intrinsics: Intrinsics) -> _RayTable:
    h, w = intrinsics.height, intrinsics.width
    rays = np.empty((h, w, 3), dtype=np.float32)
    rays[:, :, 2] = 1.0
    if not intrinsics.is_distorted:
        rays[:, :, 0] = ((np.arange(w, dtype=np.float64) - intrinsics.cx) / intrinsics.fx)[None]
        rays[:, :, 1] = ((np.arange(h, dtype=np.float64) - intrinsics.cy) / intrinsics.fy)[:, None]
    else:
        rays[:, :, :2] = _undistorted_xy(intrinsics)
    x = np.ascontiguousarray(rays[:, :, 0])
    y = np.ascontiguousarray(rays[:, :, 1])
    for array in (rays, x, y):
        array.flags.writeable = False
    return _RayTable(rays=rays, x=x, y=y, has_nan=bool(np.isnan(x).any()))


def _undistorted_xy(intrinsics: Intrinsics) -> np.ndarray:
    """(H, W, 2) float64 normalised coordinates of every pixel, NaN where invalid."""
    h, w = intrinsics.height, intrinsics.width
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pixels = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    K = intrinsics.K
    D = np.asarray(intrinsics.distortion, dtype=np.float64)
    fisheye = intrinsics.distortion_model == 'equidistant'
    try:
        if fisheye:
            xy = cv2.fisheye.undistortPoints(pixels, K, D, criteria=_UNDISTORT_CRITERIA)
            rays3 = np.concatenate([xy, np.ones_like(xy[:, :, :1])], axis=2)
            back, _ = cv2.fisheye.projectPoints(rays3, np.zeros(3), np.zeros(3), K, D)
        else:
            # Identity R and P: the output stays in normalised coordinates.
            xy = cv2.undistortPointsIter(pixels, K, D, np.eye(3), np.eye(3), _UNDISTORT_CRITERIA)
            rays3 = np.concatenate([xy, np.ones_like(xy[:, :, :1])], axis=2)
            back, _ = cv2.projectPoints(rays3, np.zeros(3), np.zeros(3), K, D)
    except cv2.error as err:
        raise BadInputError(
            f'OpenCV rejects distortion {intrinsics.distortion_model!r} with coefficients '
            f'{intrinsics.distortion}: {err.msg}', 'intrinsics') from None
    error = np.linalg.norm(back.reshape(-1, 2) - pixels.reshape(-1, 2), axis=1)
    xy = xy.reshape(-1, 2)
    xy[~(error <= _RAY_REPROJECTION_TOLERANCE_PX)] = np.nan
    return xy.reshape(h, w, 2)


# ---------------------------------------------------------------------------------------
# Masks


def specular_mask(rgb: np.ndarray, threshold: int = 240, dilate_px: int = 0) -> np.ndarray:
    """Saturated specular highlights: pixels whose R, G and B are all >= ``threshold``.

    Args:
        rgb: (H, W, 3) uint8.
        threshold: 1..255.
        dilate_px: grow the mask by this many pixels (elliptical structuring element).

    Returns:
        (H, W) bool, True on highlights.
    """
    _check_rgb(rgb, rgb.shape[:2])
    t = int(threshold)
    mask = cv2.inRange(np.ascontiguousarray(rgb), (t, t, t), (255, 255, 255))
    if dilate_px > 0:
        size = 2 * int(dilate_px) + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return mask != 0


def fov_mask(
    height: int,
    width: int,
    radius: float = 1.0,
    center: tuple[float, float] | None = None,
) -> np.ndarray:
    """The endoscope's circular field of view.

    Args:
        height, width: image size (pixels).
        radius: circle radius as a fraction of half the shorter image side.
        center: circle centre ``(u, v)`` in pixels; None for the image centre.

    Returns:
        (H, W) bool, True inside the circle; cached and read-only.
    """
    if center is None:
        center = ((width - 1) / 2.0, (height - 1) / 2.0)
    return _cached_fov_mask(int(height), int(width), float(radius),
                            float(center[0]), float(center[1]))


@functools.lru_cache(maxsize=8)
def _cached_fov_mask(height: int, width: int, radius: float, cu: float, cv: float) -> np.ndarray:
    r_px = radius * min(height, width) / 2.0
    du2 = (np.arange(width, dtype=np.float64) - cu) ** 2
    dv2 = (np.arange(height, dtype=np.float64) - cv) ** 2
    mask = (dv2[:, None] + du2[None, :]) <= r_px * r_px
    mask.flags.writeable = False
    return mask


def valid_depth_mask(
    depth: np.ndarray, min_range_m: float = 0.0, max_range_m: float = math.inf
) -> np.ndarray:
    """Pixels with a usable depth: finite, > 0, > ``min_range_m`` and <= ``max_range_m``.

    Args:
        depth: (H, W) float metres, NaN invalid.

    Returns:
        (H, W) bool.
    """
    # Comparisons with NaN are False, so NaN drops out without an isfinite pass.
    valid = depth > max(float(min_range_m), 0.0)
    if math.isinf(max_range_m):
        valid &= depth < np.inf
    else:
        valid &= depth <= max_range_m
    return valid


# ---------------------------------------------------------------------------------------
# Back-projection


def depth_to_points(depth: np.ndarray, intrinsics: Intrinsics, *, stride: int = 1) -> np.ndarray:
    """Back-project every (decimated) pixel of a depth image.

    Args:
        depth: (H, W) float32 metres along the optical axis, NaN invalid; H, W must
            match ``intrinsics``.
        intrinsics: the camera that produced the depth image.
        stride: keep every ``stride``-th pixel in both directions.

    Returns:
        (ceil(H/stride), ceil(W/stride), 3) float32 metres; NaN where the depth is
        invalid (non-finite or <= 0, see :func:`valid_depth_mask`) or the pixel has no ray.

    Raises:
        BadInputError: reason ``'size_mismatch'`` or ``'depth'`` for a depth image
            that does not fit ``intrinsics``.
    """
    _check_depth(depth, intrinsics)
    if stride < 1:
        raise ConfigError(f'stride must be >= 1, got {stride}.')
    d = depth[::stride, ::stride]
    rays = camera_rays(intrinsics)[::stride, ::stride]
    points = np.multiply(rays, d[:, :, None], dtype=np.float32)
    points[~valid_depth_mask(d)] = np.nan
    return points


def make_cloud(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    config: CloudConfig | None = None,
    rgb: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> PointCloud:
    """Build a point cloud from a depth image, dropping unusable pixels.

    A pixel is kept when its depth is valid and within range, its ray exists, and (when
    enabled) it is not a specular highlight, lies inside the field of view and is True
    in ``mask``.

    Args:
        depth: (H, W) float32 metres along the optical axis, NaN invalid.
        intrinsics: the camera of ``depth`` (same size).
        config: options (default ``CloudConfig()``).
        rgb: (H, W, 3) uint8 image of the same frame, for colours and specular masking.
        mask: (H, W) bool, True where a pixel may produce a point (e.g. ``seg == 0``
            to drop surgical instruments).

    Returns:
        The cloud: organised (h, w, 3) with NaN for dropped pixels, or (N, 3) valid
        points; colours when ``config.colour`` and ``rgb`` is given.

    Raises:
        BadInputError: reason ``'size_mismatch'`` when ``depth``, ``rgb`` or ``mask``
            do not match ``intrinsics``, ``'depth'`` for a non-2-D/non-float depth,
            ``'rgb'`` for a non-uint8 RGB image or when ``config.mask_specular`` is set
            without ``rgb``.
    """
    config = CloudConfig() if config is None else config
    _check_depth(depth, intrinsics)
    size = (intrinsics.height, intrinsics.width)
    if rgb is not None:
        _check_rgb(rgb, size)
    s = config.stride
    d = depth[::s, ::s]
    valid = valid_depth_mask(d, config.min_range_m, config.max_range_m)
    if config.mask_specular:
        if rgb is None:
            raise BadInputError(
                'CloudConfig.mask_specular is set but no RGB image was given.', 'rgb')
        valid &= ~specular_mask(rgb, config.specular_threshold, config.specular_dilate_px)[::s, ::s]
    if config.fov_mask:
        valid &= fov_mask(size[0], size[1], config.fov_radius)[::s, ::s]
    if mask is not None:
        if mask.shape != size:
            raise BadInputError(
                f'Mask of shape {mask.shape} does not match the {size[1]}x{size[0]} depth image.',
                'size_mismatch')
        valid &= mask[::s, ::s].astype(bool, copy=False)
    table = _cached_rays(intrinsics)
    if table.has_nan:
        valid &= ~np.isnan(table.x[::s, ::s])
    colours = rgb[::s, ::s] if (config.colour and rgb is not None) else None
    if config.organized:
        points = np.multiply(table.rays[::s, ::s], d[:, :, None], dtype=np.float32)
        points[~valid] = np.nan
        colors = None if colours is None else np.ascontiguousarray(colours)
        return PointCloud(points=points, colors=colors, organized=True)
    # Gather per coordinate plane: masked gathers of contiguous 1-channel arrays are
    # several times faster than gathering 3-float rows.
    z = d[valid].astype(np.float32, copy=False)
    points = np.empty((z.size, 3), dtype=np.float32)
    np.multiply(table.x[::s, ::s][valid], z, out=points[:, 0])
    np.multiply(table.y[::s, ::s][valid], z, out=points[:, 1])
    points[:, 2] = z
    colors = None if colours is None else _gather_rgb(colours, valid)
    return PointCloud(points=points, colors=colors, organized=False)


def _gather_rgb(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``rgb[valid]`` as (N, 3) uint8, gathering whole 3-byte pixels at once (~20x faster)."""
    if rgb.strides[2] != 1:
        rgb = np.ascontiguousarray(rgb)
    pixels = rgb.view(np.dtype('V3'))[:, :, 0]
    return pixels[valid].view(np.uint8).reshape(-1, 3)


def _check_depth(depth: np.ndarray, intrinsics: Intrinsics) -> None:
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind != 'f':
        shape = getattr(depth, 'shape', None)
        dtype = getattr(depth, 'dtype', type(depth).__name__)
        raise BadInputError(
            f'Depth must be a 2-D float array, got shape {shape} and dtype {dtype}.', 'depth')
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise BadInputError(
            f'Depth image is {depth.shape[1]}x{depth.shape[0]} but the camera is '
            f'{intrinsics.width}x{intrinsics.height}.', 'size_mismatch')


def _check_rgb(rgb: np.ndarray, size: tuple[int, int]) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadInputError(
            f'RGB image must be (H, W, 3) uint8, got shape {rgb.shape} and dtype {rgb.dtype}.',
            'rgb')
    if rgb.shape[:2] != tuple(size):
        raise BadInputError(
            f'RGB image is {rgb.shape[1]}x{rgb.shape[0]} but the depth image is '
            f'{size[1]}x{size[0]}.', 'size_mismatch')


# ---------------------------------------------------------------------------------------
# Poses


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix, with ``w >= 0``.

    Uses the numerically stable branch of Shepperd's method.
    """
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4, (R[1, 0] - R[0, 1]) / s]
    quat = np.array(q, dtype=np.float64)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def quaternion_to_rotation(q: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
    """3x3 rotation matrix of a quaternion ``(x, y, z, w)`` (normalised first).

    Raises:
        BadInputError: reason ``'pose'`` for a zero or non-finite quaternion.
    """
    x, y, z, w = (float(c) for c in np.asarray(q, dtype=np.float64).reshape(4))
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not (math.isfinite(norm) and norm > 0):
        raise BadInputError(f'Quaternion {(x, y, z, w)} is zero or not finite.', 'pose')
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def pose_to_translation_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 4x4 rigid transform into translation (3,) and quaternion ``(x, y, z, w)``.

    Raises:
        BadInputError: reason ``'pose'`` for a non-4x4 or non-finite matrix.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise BadInputError(f'Pose must be a finite 4x4 matrix, got {T.tolist()}.', 'pose')
    return T[:3, 3].copy(), rotation_to_quaternion(T[:3, :3])


def pose_from_translation_quaternion(
    translation: np.ndarray | tuple[float, float, float],
    quaternion: np.ndarray | tuple[float, float, float, float],
) -> np.ndarray:
    """4x4 float64 rigid transform from a translation and a quaternion ``(x, y, z, w)``."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(quaternion)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T
