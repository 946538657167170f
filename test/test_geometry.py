"""Tests of endo_depth_ros.geometry: rays, masks, back-projection and pose helpers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from endo_depth_ros import geometry
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.geometry import CloudConfig, make_cloud

W, H = 80, 64
PINHOLE = Intrinsics(W, H, 70.0, 72.0, 39.2, 31.7)
# Lenses of a wide-angle endoscope: strong barrel distortion, and a fisheye.
LENSES = {
    'pinhole': PINHOLE,
    'plumb_bob': Intrinsics(W, H, 70.0, 72.0, 39.2, 31.7, 'plumb_bob',
                            (-0.25, 0.06, 0.002, -0.001, -0.005)),
    'rational_polynomial': Intrinsics(W, H, 70.0, 72.0, 39.2, 31.7, 'rational_polynomial',
                                      (0.3, 0.05, 0.001, 0.002, 0.0, 0.55, 0.1, 0.0)),
    'equidistant': Intrinsics(W, H, 45.0, 46.0, 39.2, 31.7, 'equidistant',
                              (0.05, -0.01, 0.003, -0.0005)),
}
# The plane n . X = c, tilted, 5 cm in front of the camera (metres).
NORMAL = np.array([0.25, -0.15, 1.0]) / np.linalg.norm([0.25, -0.15, 1.0])
OFFSET = float(NORMAL @ np.array([0.0, 0.0, 0.05]))


def _project(intr: Intrinsics, rays: np.ndarray) -> np.ndarray:
    """Pixels of (N, 3) camera-frame points through the lens model, with OpenCV."""
    obj = rays.reshape(-1, 1, 3).astype(np.float64)
    D = np.asarray(intr.distortion, dtype=np.float64)
    if intr.distortion_model == 'equidistant':
        pixels, _ = cv2.fisheye.projectPoints(obj, np.zeros(3), np.zeros(3), intr.K, D)
    else:
        pixels, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), intr.K, D)
    return pixels.reshape(-1, 2)


def _true_rays(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Rays (x, y, 1) hitting each pixel centre, by Newton's method on the *forward* model.

    Independent of the undistortion under test: only ``projectPoints`` is used.
    Returns (H*W, 3) rays and a (H*W,) mask of pixels where Newton converged.
    """
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    target = np.stack([u.ravel(), v.ravel()], axis=1)
    xy = (target - [intr.cx, intr.cy]) / [intr.fx, intr.fy]
    dx, dy = np.array([1e-7, 0.0]), np.array([0.0, 1e-7])
    for _ in range(30):
        def f(p: np.ndarray) -> np.ndarray:
            return _project(intr, np.column_stack([p, np.ones(len(p))]))
        residual = f(xy) - target
        jx = (f(xy + dx) - f(xy - dx)) / 2e-7
        jy = (f(xy + dy) - f(xy - dy)) / 2e-7
        J = np.stack([jx, jy], axis=2)  # (N, 2, 2): d pixel / d (x, y)
        xy = xy - np.linalg.solve(J, residual[:, :, None])[:, :, 0]
    converged = np.linalg.norm(_project(intr, np.column_stack([xy, np.ones(len(xy))]))
                               - target, axis=1) < 1e-9
    return np.column_stack([xy, np.ones(len(xy))]), converged


def _plane_depth(rays: np.ndarray) -> np.ndarray:
    """Depth z of the plane along each ray (x, y, 1)."""
    return OFFSET / (rays @ NORMAL)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    geometry.clear_ray_cache()


@pytest.mark.parametrize('lens', list(LENSES))
def test_back_projection_of_a_plane_is_exact(lens: str) -> None:
    intr = LENSES[lens]
    rays, converged = _true_rays(intr)
    assert converged.mean() > 0.99  # the test's own ground truth covers the image
    truth = rays * _plane_depth(rays)[:, None]
    depth = truth[:, 2].reshape(H, W).astype(np.float32)
    depth[~converged.reshape(H, W)] = np.nan
    cloud = make_cloud(depth, intr, CloudConfig(organized=True))
    points = cloud.points.reshape(-1, 3).astype(np.float64)
    ok = converged & ~np.isnan(points[:, 0])
    assert ok.sum() >= 0.99 * H * W
    assert np.abs(points[ok] @ NORMAL - OFFSET).max() < 1e-5
    assert np.abs(points[ok] - truth[ok]).max() < 1e-5


@pytest.mark.parametrize('lens', ['plumb_bob', 'equidistant'])
def test_distorted_rays_reproject_onto_their_pixels(lens: str) -> None:
    intr = LENSES[lens]
    rays = geometry.camera_rays(intr)
    assert rays.shape == (H, W, 3) and rays.dtype == np.float32
    assert np.all(rays[:, :, 2] == 1.0)
    v, u = np.mgrid[0:H, 0:W]
    pixels = _project(intr, rays.reshape(-1, 3))
    error = np.linalg.norm(pixels - np.column_stack([u.ravel(), v.ravel()]), axis=1)
    assert np.nanmax(error) < 0.01


def test_rays_outside_the_fisheye_domain_are_nan_and_produce_no_points() -> None:
    # Focal length so short that the image corners lie beyond 90 degrees off axis.
    intr = Intrinsics(W, H, 18.0, 18.0, 39.5, 31.5, 'equidistant', (0.1, -0.05, 0.0, 0.0))
    rays = geometry.camera_rays(intr)
    assert np.isnan(rays[0, 0, 0]) and not np.isnan(rays[H // 2, W // 2, 0])
    cloud = make_cloud(np.full((H, W), 0.05, np.float32), intr)
    assert 0 < len(cloud) < H * W
    assert np.isfinite(cloud.points).all()


def test_camera_rays_are_computed_once_per_camera() -> None:
    same = Intrinsics(**{**LENSES['plumb_bob'].__dict__})
    depth = np.full((H, W), 0.05, np.float32)
    make_cloud(depth, LENSES['plumb_bob'])
    make_cloud(depth, same)  # equal value, different object: served from the cache
    geometry.depth_to_points(depth, LENSES['plumb_bob'], stride=2)
    assert geometry.ray_cache_info().misses == 1
    assert geometry.ray_cache_info().hits == 2
    make_cloud(depth, PINHOLE)
    assert geometry.ray_cache_info().misses == 2


def test_cached_rays_are_read_only() -> None:
    rays = geometry.camera_rays(PINHOLE)
    with pytest.raises(ValueError, match='read-only'):
        rays[0, 0, 0] = 1.0


def test_pinhole_rays_follow_the_camera_matrix() -> None:
    rays = geometry.camera_rays(PINHOLE)
    assert rays[10, 20, 0] == pytest.approx((20 - 39.2) / 70.0)
    assert rays[10, 20, 1] == pytest.approx((10 - 31.7) / 72.0)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.02, 0.12, (H, W)).astype(np.float32)
    depth[5, 7] = np.nan
    depth[6, 8] = 0.0
    depth[7, 9] = -0.1
    depth[8, 10] = np.inf
    rgb = rng.integers(0, 200, (H, W, 3), dtype=np.uint8)
    return depth, rgb


def test_unorganised_cloud_keeps_only_valid_points_with_their_colours() -> None:
    depth, rgb = _scene()
    cloud = make_cloud(depth, PINHOLE, CloudConfig(), rgb=rgb)
    assert not cloud.organized and cloud.is_dense
    assert cloud.points.shape == (H * W - 4, 3) and cloud.points.dtype == np.float32
    assert cloud.colors is not None and cloud.colors.shape == (H * W - 4, 3)
    assert (cloud.height, cloud.width) == (1, H * W - 4)
    valid = np.isfinite(depth) & (depth > 0)
    np.testing.assert_array_equal(cloud.points[:, 2], depth[valid])
    np.testing.assert_array_equal(cloud.colors, rgb[valid])
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(cloud.points[:, 0], (u - PINHOLE.cx) / PINHOLE.fx * depth[valid],
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cloud.points[:, 1], (v - PINHOLE.cy) / PINHOLE.fy * depth[valid],
                               rtol=1e-6, atol=1e-9)


def test_organised_cloud_keeps_the_image_layout_with_nan_holes() -> None:
    depth, rgb = _scene()
    cloud = make_cloud(depth, PINHOLE, CloudConfig(organized=True), rgb=rgb)
    assert cloud.organized and not cloud.is_dense
    assert cloud.points.shape == (H, W, 3) and (cloud.height, cloud.width) == (H, W)
    for v, u in [(5, 7), (6, 8), (7, 9), (8, 10)]:
        assert np.isnan(cloud.points[v, u]).all()
    assert cloud.points[20, 30, 2] == depth[20, 30]
    np.testing.assert_array_equal(cloud.colors, rgb)


def test_colour_option_and_missing_rgb_give_no_colours() -> None:
    depth, rgb = _scene()
    assert make_cloud(depth, PINHOLE, CloudConfig(colour=False), rgb=rgb).colors is None
    assert make_cloud(depth, PINHOLE).colors is None


@pytest.mark.parametrize('stride', [2, 3])
def test_stride_decimates_both_directions(stride: int) -> None:
    depth, rgb = _scene()
    cloud = make_cloud(depth, PINHOLE, CloudConfig(stride=stride, organized=True), rgb=rgb)
    full = geometry.depth_to_points(depth, PINHOLE)
    assert cloud.points.shape == (math.ceil(H / stride), math.ceil(W / stride), 3)
    np.testing.assert_array_equal(cloud.points, full[::stride, ::stride])
    np.testing.assert_array_equal(cloud.colors, rgb[::stride, ::stride])


def test_range_limits_drop_near_and_far_points() -> None:
    depth, _ = _scene()
    cloud = make_cloud(depth, PINHOLE, CloudConfig(min_range_m=0.04, max_range_m=0.1))
    assert cloud.points[:, 2].min() > 0.04 and cloud.points[:, 2].max() <= 0.1
    expected = ((depth > 0.04) & (depth <= 0.1)).sum()
    assert len(cloud) == expected


def test_specular_highlights_are_masked_with_dilation() -> None:
    depth, rgb = _scene()
    rgb[30, 40] = (255, 250, 245)  # saturated highlight
    rgb[10, 10] = (255, 255, 100)  # bright but coloured: not specular
    mask = geometry.specular_mask(rgb, threshold=240)
    assert mask.dtype == bool and mask[30, 40] and not mask[10, 10] and mask.sum() == 1
    grown = geometry.specular_mask(rgb, threshold=240, dilate_px=2)
    assert grown[30, 42] and grown[32, 40] and grown[31, 41]
    assert not grown[30, 43] and not grown[32, 42] and grown.sum() < 25
    config = CloudConfig(mask_specular=True, specular_threshold=240, specular_dilate_px=2,
                         organized=True)
    cloud = make_cloud(depth, PINHOLE, config, rgb=rgb)
    assert np.isnan(cloud.points[30, 41]).all() and not np.isnan(cloud.points[10, 10]).any()


def test_fov_mask_is_the_centred_circle() -> None:
    mask = geometry.fov_mask(H, W, radius=1.0)
    assert mask.shape == (H, W) and mask[H // 2, W // 2]
    assert not mask[0, 0] and not mask[0, W - 1] and not mask[H - 1, 0]
    # Radius 1 touches the shorter (vertical) sides at the centre column.
    assert mask[0, W // 2] and mask[H - 1, W // 2] and not mask[H // 2, 0]
    cloud = make_cloud(np.full((H, W), 0.05, np.float32), PINHOLE, CloudConfig(fov_mask=True))
    assert len(cloud) == mask.sum()


def test_fov_mask_with_custom_centre() -> None:
    mask = geometry.fov_mask(H, W, radius=0.2, center=(10.0, 10.0))
    assert mask[10, 10] and not mask[H // 2, W // 2]


def test_instrument_mask_drops_its_pixels() -> None:
    depth, _ = _scene()
    seg = np.zeros((H, W), np.uint8)
    seg[:, :20] = 1  # instrument on the left
    cloud = make_cloud(depth, PINHOLE, CloudConfig(organized=True), mask=seg == 0)
    assert np.isnan(cloud.points[:, :20]).all()
    assert not np.isnan(cloud.points[20:30, 20:]).any()


def test_depth_to_points_marks_invalid_depth_nan() -> None:
    depth, _ = _scene()
    points = geometry.depth_to_points(depth, PINHOLE)
    assert points.shape == (H, W, 3)
    assert np.isnan(points[5, 7]).all() and np.isnan(points[6, 8]).all()
    assert np.isnan(points[7, 9]).all() and np.isnan(points[8, 10]).all()


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'stride': 0}, r'stride must be in 1\.\.64, got 0'),
        ({'stride': 65}, r'stride must be in 1\.\.64, got 65'),
        ({'stride': 1.5}, 'stride must be an integer, got 1.5'),
        ({'min_range_m': -0.1}, 'min_range_m must be finite and >= 0, got -0.1'),
        ({'min_range_m': 0.2, 'max_range_m': 0.1}, 'max_range_m must exceed'),
        ({'max_range_m': float('nan')}, 'max_range_m'),
        ({'specular_threshold': 256}, 'specular_threshold must be in 1..255, got 256'),
        ({'specular_dilate_px': -1}, r'specular_dilate_px must be in 0\.\.50'),
        # Live parameters are bounded above too: 1e9 made OpenCV allocate 4e18 bytes.
        ({'specular_dilate_px': 10**9}, r'specular_dilate_px must be in 0\.\.50, got 1000000000'),
        ({'fov_radius': 0.0}, r'fov_radius must be in \(0, 10.0\], got 0.0'),
        ({'fov_radius': float('inf')}, r'fov_radius must be in \(0, 10.0\], got inf'),
        ({'organized': 'yes'}, "organized must be true or false, got 'yes'"),
        ({'max_range_m': '1'}, "max_range_m must be a number, got '1'"),
    ],
)
def test_cloud_config_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CloudConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ('depth', 'rgb', 'mask', 'config', 'reason', 'match'),
    [
        (np.zeros((H, W + 1), np.float32), None, None, CloudConfig(), 'size_mismatch',
         'Depth image is 81x64 but the camera is 80x64'),
        (np.zeros((H, W), np.uint16), None, None, CloudConfig(), 'depth', 'uint16'),
        (np.zeros((H, W), np.float32), np.zeros((H, W, 3), np.float32), None, CloudConfig(),
         'rgb', 'float32'),
        (np.zeros((H, W), np.float32), np.zeros((H // 2, W // 2, 3), np.uint8), None,
         CloudConfig(), 'size_mismatch', 'RGB image is 40x32'),
        (np.zeros((H, W), np.float32), None, np.ones((H, 2), bool), CloudConfig(),
         'size_mismatch', r'Mask of shape \(64, 2\)'),
        (np.zeros((H, W), np.float32), None, None, CloudConfig(mask_specular=True), 'rgb',
         'no RGB image'),
    ],
)
def test_make_cloud_rejects_bad_input(
    depth: np.ndarray, rgb: np.ndarray | None, mask: np.ndarray | None, config: CloudConfig,
    reason: str, match: str,
) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        make_cloud(depth, PINHOLE, config, rgb=rgb, mask=mask)
    assert info.value.reason == reason


def test_wrong_coefficient_count_for_fisheye_is_bad_intrinsics() -> None:
    intr = Intrinsics(W, H, 45.0, 45.0, 39.5, 31.5, 'equidistant', (0.1, 0.0, 0.0, 0.0, 0.2))
    with pytest.raises(BadInputError, match='equidistant') as info:
        geometry.camera_rays(intr)
    assert info.value.reason == 'intrinsics'


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    R, _ = cv2.Rodrigues(rng.normal(size=3) * 1.5)
    return R


def test_quaternion_round_trip_over_random_rotations() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        R = _random_rotation(rng)
        q = geometry.rotation_to_quaternion(R)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(geometry.quaternion_to_rotation(q), R, atol=1e-12)


@pytest.mark.parametrize(
    ('axis_angle', 'quaternion'),
    [
        ((0.0, 0.0, math.pi / 2), (0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))),
        ((math.pi, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)),
        ((0.0, math.pi, 0.0), (0.0, 1.0, 0.0, 0.0)),
        ((0.0, 0.0, math.pi), (0.0, 0.0, 1.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
    ],
)
def test_known_quaternions(axis_angle: tuple[float, float, float],
                           quaternion: tuple[float, float, float, float]) -> None:
    R, _ = cv2.Rodrigues(np.array(axis_angle))
    q = geometry.rotation_to_quaternion(R)
    # q and -q are the same rotation; compare up to sign.
    assert min(np.abs(q - quaternion).max(), np.abs(q + quaternion).max()) < 1e-12


def test_pose_translation_quaternion_round_trip() -> None:
    T = np.eye(4)
    T[:3, :3] = _random_rotation(np.random.default_rng(5))
    T[:3, 3] = (0.01, -0.02, 0.03)
    t, q = geometry.pose_to_translation_quaternion(T)
    np.testing.assert_allclose(geometry.pose_from_translation_quaternion(t, q), T, atol=1e-12)


@pytest.mark.parametrize('T', [np.eye(3), np.full((4, 4), np.nan)])
def test_bad_pose_is_rejected(T: np.ndarray) -> None:
    with pytest.raises(BadInputError, match='finite 4x4') as info:
        geometry.pose_to_translation_quaternion(T)
    assert info.value.reason == 'pose'


def test_zero_quaternion_is_rejected() -> None:
    with pytest.raises(BadInputError, match='zero or not finite'):
        geometry.quaternion_to_rotation((0.0, 0.0, 0.0, 0.0))


def test_a_cloud_with_infinite_points_is_not_dense() -> None:
    # fx = fy = 1e-300 used to make such points while is_dense said true.
    cloud = geometry.PointCloud(
        points=np.array([[0.0, 0.0, 1.0], [np.inf, 0.0, 1.0]], np.float32), colors=None,
        organized=False)
    assert not cloud.is_dense
