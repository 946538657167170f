from __future__ import annotations

import math

import numpy as np
import pytest

from endo_depth_ros.camera import Intrinsics, check_camera_matrix, crop_and_bin
from endo_depth_ros.errors import BadInputError


def test_matrix_round_trip_keeps_every_value() -> None:
    K = np.array([[210.0, 0.0, 161.0], [0.0, 205.0, 120.5], [0.0, 0.0, 1.0]])
    cam = Intrinsics.from_matrix(K, 320, 256, 'plumb_bob', [0.1, -0.01, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(cam.K, K)
    assert cam.size == (320, 256)
    assert cam.is_distorted


def test_zero_coefficients_count_as_undistorted() -> None:
    cam = Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5, 'plumb_bob', (0.0,) * 5)
    assert not cam.is_distorted


def test_scaling_maps_pixel_centres_consistently() -> None:
    cam = Intrinsics(320, 256, 200.0, 200.0, 159.5, 127.5)
    half = cam.scaled(160, 128)
    assert (half.fx, half.fy) == (100.0, 100.0)
    # The image centre stays the image centre under the pixel-centre convention.
    assert (half.cx, half.cy) == (79.5, 63.5)


@pytest.mark.parametrize(('kwargs', 'match'), [
    ({'fx': math.nan}, 'fx is not finite'),
    ({'cy': math.inf}, 'cy is not finite'),
    ({'fx': 0.0}, 'Focal lengths must be positive'),
    ({'fy': -5.0}, 'Focal lengths must be positive'),
    ({'width': 0}, 'Camera size must be positive'),
    ({'distortion_model': 'kannala'}, "Unsupported distortion model 'kannala'"),
    ({'distortion': (0.1, math.nan)}, 'Distortion coefficients are not finite'),
])
def test_invalid_intrinsics_are_rejected_with_the_value(kwargs: dict, match: str) -> None:
    values = {'width': 64, 'height': 48, 'fx': 50.0, 'fy': 50.0, 'cx': 31.5, 'cy': 23.5}
    values.update(kwargs)
    with pytest.raises(BadInputError, match=match) as info:
        Intrinsics(**values)
    assert info.value.reason == 'intrinsics'


# ---------------------------------------------------------------- plausibility, ROI, binning


@pytest.mark.parametrize(('change', 'match'), [
    ({(2, 2): 0.0}, r'must be \[\[fx, s, cx\]'),
    ({(1, 0): 3.0}, r'must be \[\[fx, s, cx\]'),
    ({(0, 0): 1e-300, (1, 1): 1e-300}, 'fx=1e-300 px is implausible'),
    ({(1, 1): 1e9}, 'fy=1e.09 px is implausible'),
    ({(0, 2): 1e6}, 'cx=1e.06 px lies outside'),
    ({(1, 2): -100.0}, 'cy=-100 px lies outside'),
])
def test_implausible_camera_matrices_are_refused(change: dict[tuple[int, int], float],
                                                 match: str) -> None:
    K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 127.5], [0.0, 0.0, 1.0]])
    check_camera_matrix(K, 320, 256)  # the plausible one passes
    for index, value in change.items():
        K[index] = value
    with pytest.raises(BadInputError, match=match):
        check_camera_matrix(K, 320, 256)


def test_roi_and_binning_give_the_camera_of_the_delivered_image() -> None:
    sensor = Intrinsics(640, 480, 500.0, 500.0, 320.0, 240.0)
    out = crop_and_bin(sensor, (100, 40, 400, 300), (2, 2))
    assert (out.width, out.height) == (200, 150)
    assert (out.fx, out.fy, out.cx, out.cy) == (250.0, 250.0, 110.0, 100.0)
    assert crop_and_bin(sensor, (0, 0, 0, 0), (0, 0)) is sensor
    with pytest.raises(BadInputError, match='does not fit'):
        crop_and_bin(sensor, (400, 0, 400, 300), (1, 1))
    with pytest.raises(BadInputError, match='Binning'):
        crop_and_bin(sensor, (0, 0, 0, 0), (1000, 1))
