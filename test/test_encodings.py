"""Tests of endo_depth_ros.encodings: image layouts, compressed images, CameraInfo fields."""

from __future__ import annotations

import array
from typing import Literal

import cv2
import numpy as np
import pytest

from endo_depth_ros import encodings
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError

H, W = 48, 64

# encoding -> (dtype, channels)
LAYOUTS: dict[str, tuple[type[np.generic], int]] = {
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1),
    'mono16': (np.uint16, 1),
    '16UC1': (np.uint16, 1),
    '32FC1': (np.float32, 1),
}


def _random_image(encoding: str, seed: int = 0) -> np.ndarray:
    dtype, channels = LAYOUTS[encoding]
    rng = np.random.default_rng(seed)
    shape = (H, W) if channels == 1 else (H, W, channels)
    if dtype == np.float32:
        return rng.uniform(0.01, 0.2, shape).astype(np.float32)
    top = int(np.iinfo(np.dtype(dtype)).max)
    return rng.integers(0, top, shape, endpoint=True).astype(dtype)


def _padded_bytes(
    image: np.ndarray, pad: int, byteorder: Literal['<', '>']
) -> tuple[bytes, int]:
    """Rows of ``image`` in ``byteorder``, each followed by ``pad`` junk bytes."""
    rows = image.astype(image.dtype.newbyteorder(byteorder)).reshape(image.shape[0], -1)
    row_bytes = rows.view(np.uint8).reshape(image.shape[0], -1)
    junk = np.full((image.shape[0], pad), 0xAB, dtype=np.uint8)
    return np.hstack([row_bytes, junk]).tobytes(), row_bytes.shape[1] + pad


def test_supported_encodings_are_the_documented_ones() -> None:
    assert set(encodings.IMAGE_ENCODINGS) == set(LAYOUTS)


@pytest.mark.parametrize('encoding', list(LAYOUTS))
def test_encode_decode_round_trip_is_exact(encoding: str) -> None:
    image = _random_image(encoding)
    data, step = encodings.encode_image(image, encoding)
    assert step == image.nbytes // H
    decoded = encodings.decode_image(H, W, encoding, step, False, bytes(data))
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('encoding', list(LAYOUTS))
@pytest.mark.parametrize('big_endian', [False, True])
def test_decode_honours_padded_step_and_byte_order(encoding: str, big_endian: bool) -> None:
    image = _random_image(encoding, seed=1)
    data, step = _padded_bytes(image, pad=7, byteorder='>' if big_endian else '<')
    decoded = encodings.decode_image(H, W, encoding, step, big_endian, data)
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image)


def test_decode_is_zero_copy_for_native_layouts() -> None:
    image = _random_image('rgb8')
    data = array.array('B', image.tobytes())  # what rclpy messages hold
    decoded = encodings.decode_image(H, W, 'rgb8', W * 3, False, data)
    assert np.shares_memory(decoded, np.frombuffer(data, dtype=np.uint8))
    padded, step = _padded_bytes(_random_image('32FC1'), pad=4, byteorder='<')
    buffer = bytearray(padded)
    view = encodings.decode_image(H, W, '32FC1', step, False, buffer)
    assert np.shares_memory(view, np.frombuffer(buffer, dtype=np.uint8))


def test_decode_accepts_rosbags_style_ndarray_data_and_missing_last_row_padding() -> None:
    image = _random_image('mono16')
    padded, step = _padded_bytes(image, pad=2, byteorder='<')
    data = np.frombuffer(padded, dtype=np.uint8)[:-2]  # last row's padding omitted
    np.testing.assert_array_equal(encodings.decode_image(H, W, 'mono16', step, 0, data), image)


def test_encode_image_output_is_little_endian_view_of_contiguous_input() -> None:
    depth = _random_image('32FC1')
    data, step = encodings.encode_image(depth, '32FC1')
    assert np.shares_memory(data, depth)
    assert step == W * 4
    np.testing.assert_array_equal(np.frombuffer(data, dtype='<f4').reshape(H, W), depth)


def test_encode_image_casts_float64_depth_to_float32() -> None:
    depth = _random_image('32FC1').astype(np.float64)
    data, _ = encodings.encode_image(depth, '32FC1')
    assert data.size == H * W * 4


@pytest.mark.parametrize(
    ('kwargs', 'reason', 'match'),
    [
        ({'encoding': 'yuv422'}, 'encoding', 'yuv422'),
        ({'height': 0}, 'empty', '64x0'),
        ({'width': 0}, 'empty', '0x48'),
        ({'step': W * 3 - 1}, 'buffer_size', 'step 191'),
        ({'data': bytes(H * W * 3 - 1)}, 'buffer_size', '9215 bytes'),
        ({'data': bytes(H * W * 3 + 5)}, 'buffer_size', '9221 bytes'),
    ],
)
def test_decode_rejects_bad_input_with_reason_and_value(
    kwargs: dict[str, object], reason: str, match: str
) -> None:
    fields: dict[str, object] = {
        'height': H, 'width': W, 'encoding': 'rgb8', 'step': W * 3, 'is_bigendian': 0,
        'data': bytes(H * W * 3),
    }
    fields.update(kwargs)
    with pytest.raises(BadInputError, match=match) as info:
        encodings.decode_image(**fields)  # type: ignore[arg-type]
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ('array', 'encoding', 'reason', 'match'),
    [
        (np.zeros((H, W), np.uint8), 'bayer_rggb8', 'encoding', 'bayer_rggb8'),
        (np.zeros((H, W), np.uint8), 'rgb8', 'encoding', r'\(48, 64\)'),
        (np.zeros((H, W), np.float32), 'mono16', 'encoding', 'float32'),
        (np.zeros((H, W), np.uint16), '32FC1', 'encoding', 'uint16'),
        (np.zeros((0, W), np.uint8), 'mono8', 'empty', r'\(0, 64\)'),
    ],
)
def test_encode_rejects_arrays_that_do_not_fit_the_encoding(
    array: np.ndarray, encoding: str, reason: str, match: str
) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        encodings.encode_image(array, encoding)
    assert info.value.reason == reason


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_to_rgb_reorders_colour_channels(encoding: str) -> None:
    rgb = _random_image('rgb8')
    order = {'rgb8': [0, 1, 2], 'bgr8': [2, 1, 0], 'rgba8': [0, 1, 2], 'bgra8': [2, 1, 0]}
    image = rgb[:, :, order[encoding]]
    if encoding.endswith('a8'):
        image = np.dstack([image, np.full((H, W), 255, np.uint8)])
    out = encodings.to_rgb(image, encoding)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('encoding', ['mono8', 'mono16'])
def test_to_rgb_replicates_grey(encoding: str) -> None:
    grey = _random_image(encoding)
    out = encodings.to_rgb(grey, encoding)
    expected = grey if encoding == 'mono8' else (grey >> 8).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], expected)


def test_to_rgb_rejects_depth_encodings() -> None:
    with pytest.raises(BadInputError, match="'32FC1' holds depth") as info:
        encodings.to_rgb(_random_image('32FC1'), '32FC1')
    assert info.value.reason == 'encoding'


def test_to_rgb_rejects_array_not_matching_encoding() -> None:
    with pytest.raises(BadInputError, match='not a bgra8 image'):
        encodings.to_rgb(_random_image('rgb8'), 'bgra8')


@pytest.mark.parametrize('fmt', ['png', 'rgb8; png compressed bgr8'])
def test_decode_compressed_png_is_lossless_rgb(fmt: str) -> None:
    rgb = _random_image('rgb8')
    ok, payload = cv2.imencode('.png', rgb[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(encodings.decode_compressed(fmt, payload.tobytes()), rgb)


def test_decode_compressed_png_keeps_16_bit_grey() -> None:
    grey = _random_image('mono16')
    ok, payload = cv2.imencode('.png', grey)
    assert ok
    out = encodings.decode_compressed('mono16; png compressed mono16', payload.tobytes())
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, grey)


@pytest.mark.parametrize('fmt', ['jpeg', 'rgb8; jpeg compressed bgr8'])
def test_decode_compressed_jpeg_is_close_rgb(fmt: str) -> None:
    # Smooth image: JPEG error stays small, and swapped channels would be far off.
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.dstack([xx * 4, yy * 5, np.full_like(xx, 40)]).astype(np.uint8)
    ok, payload = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = encodings.decode_compressed(fmt, payload.tobytes())
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3.0


def test_decode_compressed_jpeg_mono_stays_grey() -> None:
    grey = np.tile(np.arange(W, dtype=np.uint8) * 3, (H, 1))
    ok, payload = cv2.imencode('.jpg', grey)
    assert ok
    out = encodings.decode_compressed('mono8; jpeg compressed mono8', payload)
    assert out.shape == (H, W)


@pytest.mark.parametrize(
    ('fmt', 'data', 'reason', 'match'),
    [
        ('tiff', b'II*\x00', 'encoding', "'tiff'"),
        ('16UC1; compressedDepth png', b'\x00' * 20, 'encoding', 'compressedDepth'),
        ('jpeg', b'', 'empty', 'no data'),
        ('png', b'definitely not a png', 'decode', '20 bytes'),
    ],
)
def test_decode_compressed_rejects_bad_input(
    fmt: str, data: bytes, reason: str, match: str
) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        encodings.decode_compressed(fmt, data)
    assert info.value.reason == reason


K = [300.0, 0.0, 31.5, 0.0, 310.0, 23.5, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ('model', 'd'),
    [
        ('', []),
        ('plumb_bob', [0.1, -0.05, 0.001, 0.002, 0.01]),
        ('rational_polynomial', [0.1, -0.05, 0.001, 0.002, 0.01, 0.02, 0.0, 0.003]),
        ('equidistant', [0.05, -0.01, 0.002, -0.0005]),
    ],
)
def test_intrinsics_round_trip_through_camera_info_fields(model: str, d: list[float]) -> None:
    intr = encodings.intrinsics_from_fields(W, H, np.array(K), d, model)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (300.0, 310.0, 31.5, 23.5)
    fields = encodings.intrinsics_to_fields(intr)
    assert fields['p'].tolist() == [300.0, 0.0, 31.5, 0.0, 0.0, 310.0, 23.5, 0.0, 0, 0, 1, 0]
    assert fields['r'].tolist() == np.eye(3).ravel().tolist()
    again = encodings.intrinsics_from_fields(
        fields['width'], fields['height'], fields['k'], fields['d'], fields['distortion_model'])
    assert again == intr


@pytest.mark.parametrize(
    ('k', 'd', 'model', 'match'),
    [
        ([0.0] * 9, [], 'plumb_bob', 'uncalibrated'),
        (K[:8], [], '', '9 values, got 8'),
        ([float('nan'), *K[1:]], [], '', 'fx is not finite: nan'),
        ([-300.0, *K[1:]], [], '', 'fx=-300.0'),
        (K, [0.1, 0.2, 0.0], 'plumb_bob', 'got 3'),
        (K, [0.1, float('inf'), 0.0, 0.0, 0.0], 'plumb_bob', 'not finite'),
        (K, [], 'kannala_brandt', 'kannala_brandt'),
    ],
)
def test_intrinsics_from_fields_rejects_bad_camera_info(
    k: list[float], d: list[float], model: str, match: str
) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        encodings.intrinsics_from_fields(W, H, k, d, model)
    assert info.value.reason == 'intrinsics'


def test_check_size_names_both_sizes() -> None:
    intr = Intrinsics(W, H, 300.0, 300.0, 31.5, 23.5)
    encodings.check_size(intr, W, H)
    with pytest.raises(BadInputError, match='64x48 images but the image is 128x96') as info:
        encodings.check_size(intr, 128, 96)
    assert info.value.reason == 'size_mismatch'


def test_depth_32fc1_marks_every_invalid_value_nan() -> None:
    depth = np.array([[0.05, 0.0, -1.0], [np.nan, np.inf, 0.1]], dtype=np.float64)
    out = encodings.depth_to_encoding(depth, '32FC1')
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [[False, True, True], [True, True, False]])
    back = encodings.depth_from_encoding(out, '32FC1')
    np.testing.assert_allclose(back[~np.isnan(back)], [0.05, 0.1], rtol=1e-6)


def test_depth_16uc1_is_rounded_clipped_millimetres_with_zero_invalid() -> None:
    depth = np.array([[0.0504, 0.0506, 0.0001], [np.nan, 70.0, -0.2]], dtype=np.float32)
    mm = encodings.depth_to_encoding(depth, '16UC1')
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[50, 51, 1], [0, 65535, 0]])
    back = encodings.depth_from_encoding(mm, '16UC1')
    np.testing.assert_allclose(back[0], [0.050, 0.051, 0.001], rtol=1e-6)
    assert np.isnan(back[1, 0]) and np.isnan(back[1, 2])


def test_depth_from_encoding_returns_a_writable_copy() -> None:
    depth = np.full((H, W), 0.05, np.float32)
    data, step = encodings.encode_image(depth, '32FC1')
    view = encodings.decode_image(H, W, '32FC1', step, False, bytes(data))
    out = encodings.depth_from_encoding(view, '32FC1')
    out[0, 0] = 1.0
    assert out.flags.writeable and view[0, 0] == np.float32(0.05)


@pytest.mark.parametrize('function', [encodings.depth_to_encoding, encodings.depth_from_encoding])
def test_depth_conversion_rejects_non_depth_encoding(function: object) -> None:
    with pytest.raises(BadInputError, match="'mono8'"):
        function(np.zeros((H, W), np.uint8), 'mono8')  # type: ignore[operator]


def test_compressed_sizes_are_read_from_the_header_and_bombs_refused_before_decoding() -> None:
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in ('.png', '.jpg'):
        ok, data = cv2.imencode(ext, image)
        assert ok and encodings.compressed_image_size(data) == (53, 37)
    ok, png = cv2.imencode('.png', image)
    bomb = bytearray(png.tobytes())
    bomb[16:24] = (20000).to_bytes(4, 'big') * 2  # a 20000 x 20000 header on a tiny file
    with pytest.raises(BadInputError, match='20000x20000') as info:
        encodings.decode_compressed('png', bytes(bomb), max_pixels=7680 * 4320)
    assert info.value.reason == 'too_large'
    with pytest.raises(BadInputError) as info:
        encodings.decode_compressed('jpeg', b'GIF89a' + bytes(100))
    assert info.value.reason == 'decode'
    assert encodings.decode_compressed('png', png, max_pixels=53 * 37).shape == (37, 53, 3)
