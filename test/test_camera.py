from __future__ import annotations

import math

import numpy as np
import pytest

from endo_depth_ros.camera import Intrinsics
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
