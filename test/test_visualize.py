"""Depth colouring for people: turbo, near red, far blue, invalid black."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_ros.visualize import colorize_depth, turbo


def test_turbo_maps_the_ends_to_dark_blue_and_dark_red() -> None:
    low, high = turbo(np.array([0.0, 1.0]))
    assert low[2] > low[0]  # blue end
    assert high[0] > high[2]  # red end


def test_turbo_clips_out_of_range_values_and_blacks_out_nan() -> None:
    colours = turbo(np.array([-1.0, 0.0, 1.0, 2.0, np.nan]))
    assert colours.dtype == np.uint8 and colours.shape == (5, 3)
    np.testing.assert_array_equal(colours[0], colours[1])
    np.testing.assert_array_equal(colours[2], colours[3])
    np.testing.assert_array_equal(colours[4], [0, 0, 0])


def test_colorize_depth_shows_near_as_red_far_as_blue_and_invalid_as_black() -> None:
    depth = np.tile(np.linspace(0.01, 0.1, 64, dtype=np.float32), (48, 1))
    depth[0, 0] = np.nan
    depth[0, 1] = 0.0
    image = colorize_depth(depth)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    near, far = image[10, 2].astype(int), image[10, -1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]
    np.testing.assert_array_equal(image[0, :2], 0)


@pytest.mark.parametrize('shape', [(8, 8), (1, 5)])
def test_colorize_depth_without_valid_pixels_is_black(shape: tuple[int, int]) -> None:
    image = colorize_depth(np.full(shape, np.nan, dtype=np.float32))
    assert image.shape == (*shape, 3) and not image.any()


def test_colorize_depth_with_a_fixed_range_colours_a_depth_the_same_in_every_frame() -> None:
    frame_a = np.full((4, 4), 0.05, dtype=np.float32)
    frame_b = frame_a.copy()
    frame_b[0] = 0.09  # other content must not change the colour of 5 cm
    image_a = colorize_depth(frame_a, vmin=0.0, vmax=0.1)
    image_b = colorize_depth(frame_b, vmin=0.0, vmax=0.1)
    np.testing.assert_array_equal(image_a[1:], image_b[1:])
    assert not np.array_equal(image_a[0], image_b[0])


def test_colorize_depth_of_a_constant_image_is_one_colour() -> None:
    depth = np.full((4, 4), 0.05, dtype=np.float32)
    assert len({tuple(c) for c in colorize_depth(depth).reshape(-1, 3)}) == 1
