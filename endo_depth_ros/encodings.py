"""Pixel layouts of ROS image messages, without ROS.

The one place that knows how ``sensor_msgs/Image`` bytes map to numpy arrays (and
back), how ``sensor_msgs/CompressedImage`` payloads are decoded, how CameraInfo
fields become :class:`~endo_depth_ros.camera.Intrinsics`, and how depth is stored in
REP-118 images. Functions take message *fields*, so the rclpy conversions
(``endo_depth_ros.ros.conversions``) and the rosbags reader/writer (``endo_depth_ros.bags``)
share this code without importing each other's message classes.

Conventions: RGB images are (H, W, 3) uint8; depth is (H, W) float32 metres with NaN
invalid; 16UC1 depth images hold millimetres with 0 invalid (REP-117/118).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError


@dataclass(frozen=True)
class _Layout:
    dtype: str  # numpy base type of one channel, without byte order
    channels: int


#: Supported ``sensor_msgs/Image`` encodings and their pixel layout.
_LAYOUTS: dict[str, _Layout] = {
    'rgb8': _Layout('u1', 3),
    'bgr8': _Layout('u1', 3),
    'rgba8': _Layout('u1', 4),
    'bgra8': _Layout('u1', 4),
    'mono8': _Layout('u1', 1),
    'mono16': _Layout('u2', 1),
    '16UC1': _Layout('u2', 1),
    '32FC1': _Layout('f4', 1),
}

#: Encodings accepted by :func:`decode_image` / :func:`encode_image`.
IMAGE_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

#: Encodings that hold depth (see :func:`depth_to_encoding`).
DEPTH_ENCODINGS: tuple[str, ...] = ('32FC1', '16UC1')

#: Number of ``D`` coefficients each CameraInfo distortion model takes (0: no distortion).
DISTORTION_COEFFICIENTS: dict[str, tuple[int, ...]] = {
    '': (0,),
    'none': (0,),
    'plumb_bob': (0, 4, 5),
    'rational_polynomial': (0, 8, 12, 14),
    'equidistant': (0, 4),
}

_UINT16_MAX = 65535
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
#: JPEG markers without a length field, and the start-of-frame markers holding the size.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Bytes of a compressed stream searched for its size (JPEG headers with big EXIF/ICC
#: segments put the frame header further in; the segment walk skips them).
_HEADER_SCAN_BYTES = 1 << 20


def _layout(encoding: str) -> _Layout:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise BadInputError(
            f'Unsupported image encoding {encoding!r}; expected one of {IMAGE_ENCODINGS}.',
            'encoding') from None


def _as_bytes_view(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` (bytes, array.array, ndarray, memoryview)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        # Plain lists or non-contiguous arrays: one copy is unavoidable.
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Raise unless a ``width`` x ``height`` image has at most ``max_pixels`` pixels.

    Raises:
        BadInputError: reason ``'too_large'`` naming the size and the limit.
    """
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise BadInputError(
            f'Image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels '
            '(input.max_input_pixels); dropped before decoding.', 'too_large')


def decode_image(
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: int | bool,
    data: Any,
) -> np.ndarray:
    """View the bytes of a ``sensor_msgs/Image`` as a numpy array.

    The result is a zero-copy (possibly read-only, possibly row-strided) view of
    ``data`` when the byte order is native; it is a native-order copy otherwise.
    Copy it before writing into it.

    Args:
        height: rows (pixels).
        width: columns (pixels).
        encoding: one of :data:`IMAGE_ENCODINGS`.
        step: bytes per row, including any padding at the end of a row.
        is_bigendian: byte order of multi-byte channels (ignored for 8-bit encodings).
        data: the pixel bytes (bytes, bytearray, array.array('B'), uint8 ndarray, ...).

    Returns:
        (H, W) for one-channel encodings or (H, W, C) otherwise, with dtype uint8,
        uint16 or float32 (native byte order), channels in the encoding's order.

    Raises:
        BadInputError: reason ``'encoding'`` for an unsupported encoding, ``'empty'``
            for a zero-size image, ``'buffer_size'`` when ``step`` is shorter than a row
            or ``data`` does not hold ``height`` rows of ``step`` bytes.
    """
    layout = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise BadInputError(f'Image {encoding} is empty: {width}x{height}.', 'empty')
    itemsize = np.dtype(layout.dtype).itemsize
    pixel_bytes = itemsize * layout.channels
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise BadInputError(
            f'Image step {step} is shorter than one row of {width} {encoding} pixels '
            f'({row_bytes} bytes).', 'buffer_size')
    raw = _as_bytes_view(data)
    # The padding after the last row is sometimes omitted; anything else is corrupt.
    needed = step * (height - 1) + row_bytes
    if not needed <= raw.size <= step * height:
        raise BadInputError(
            f'Image data has {raw.size} bytes, expected {step * height} '
            f'({height} rows x step {step}) for a {width}x{height} {encoding} image.',
            'buffer_size')
    dtype = np.dtype(layout.dtype)
    if itemsize > 1:
        dtype = dtype.newbyteorder('>' if is_bigendian else '<')
    shape: tuple[int, ...] = (height, width, layout.channels)
    strides: tuple[int, ...] = (step, pixel_bytes, itemsize)
    if layout.channels == 1:
        shape, strides = shape[:2], strides[:2]
    if step == row_bytes and raw.size == step * height:
        array = raw.view(dtype).reshape(shape)
    else:
        # Padded rows: a strided view over the same bytes (np.ndarray checks the extent).
        array = np.ndarray(shape=shape, dtype=dtype, buffer=raw, strides=strides)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder('='))
    return array


def encode_image(array: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """The bytes and row step of an image message holding ``array``.

    Rows are packed without padding in little-endian order (``is_bigendian = 0``).

    Args:
        array: (H, W) for one-channel encodings (H, W, 1 accepted) or (H, W, C),
            with the encoding's dtype (uint8 for ``*8``, uint16 for ``mono16``/``16UC1``;
            any float dtype for ``32FC1``, cast to float32).
        encoding: one of :data:`IMAGE_ENCODINGS`; channels are taken as given
            (use ``'rgb8'`` for RGB arrays).

    Returns:
        ``(data, step)``: a flat contiguous uint8 array (a view of ``array`` when it
        is already contiguous little-endian) and the number of bytes per row.

    Raises:
        BadInputError: reason ``'encoding'`` for an unsupported encoding or an array
            whose dtype/shape does not fit it; ``'empty'`` for a zero-size array.
    """
    layout = _layout(encoding)
    array = np.asarray(array)
    if array.ndim == 3 and layout.channels == 1 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if layout.channels == 1 else 3
    if array.ndim != expected_ndim or (expected_ndim == 3 and array.shape[2] != layout.channels):
        raise BadInputError(
            f'Array of shape {array.shape} cannot be stored as {encoding} '
            f'({layout.channels} channel(s)).', 'encoding')
    if array.size == 0:
        raise BadInputError(f'Cannot encode an empty {array.shape} array.', 'empty')
    target = np.dtype(layout.dtype).newbyteorder('<') if layout.dtype != 'u1' else np.dtype('u1')
    if layout.dtype == 'f4':
        if array.dtype.kind != 'f':
            raise BadInputError(
                f'{encoding} needs a floating-point array, got {array.dtype}.', 'encoding')
    elif array.dtype.kind != 'u' or array.dtype.itemsize != target.itemsize:
        raise BadInputError(
            f'{encoding} needs a {np.dtype(layout.dtype).name} array, got {array.dtype}.',
            'encoding')
    array = np.ascontiguousarray(array, dtype=target)
    step = array.shape[1] * target.itemsize * layout.channels
    return array.reshape(-1).view(np.uint8), step


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded colour or grey image to RGB for the depth models.

    Args:
        array: as returned by :func:`decode_image` for ``encoding``.
        encoding: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` or ``mono16``
            (16-bit grey keeps its 8 most significant bits).

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous; ``array`` itself (possibly a read-only view
        of a message) for contiguous rgb8 input, a new array otherwise.

    Raises:
        BadInputError: reason ``'encoding'`` for depth encodings (16UC1, 32FC1) or an
            unknown encoding, or when ``array`` does not have the encoding's layout.
    """
    layout = _layout(encoding)
    if encoding in DEPTH_ENCODINGS:
        raise BadInputError(
            f'Encoding {encoding!r} holds depth, not a colour image; '
            f'expected one of rgb8, bgr8, rgba8, bgra8, mono8, mono16.', 'encoding')
    expected = (2,) if layout.channels == 1 else (3,)
    if array.ndim not in expected or (
            layout.channels > 1 and array.shape[2] != layout.channels) or (
            array.dtype != np.dtype(layout.dtype)):
        raise BadInputError(
            f'Array of shape {array.shape} and dtype {array.dtype} is not a {encoding} image.',
            'encoding')
    if encoding == 'rgb8':
        return np.ascontiguousarray(array)
    if encoding == 'mono16':
        array = np.right_shift(array, 8).astype(np.uint8)
        encoding = 'mono8'
    codes = {
        'bgr8': cv2.COLOR_BGR2RGB,
        'rgba8': cv2.COLOR_RGBA2RGB,
        'bgra8': cv2.COLOR_BGRA2RGB,
        'mono8': cv2.COLOR_GRAY2RGB,
    }
    return cv2.cvtColor(np.ascontiguousarray(array), codes[encoding])


def compressed_image_size(data: Any) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG stream, read from its header (no decoding).

    PNG: the IHDR chunk that must come first; JPEG: the first start-of-frame segment.

    Returns:
        The size in pixels, or None when ``data`` is neither a PNG nor a JPEG stream
        with a readable header.
    """
    raw = bytes(_as_bytes_view(data)[:_HEADER_SCAN_BYTES])
    if raw.startswith(_PNG_SIGNATURE):
        if len(raw) < 24 or raw[12:16] != b'IHDR':
            return None
        return int.from_bytes(raw[16:20], 'big'), int.from_bytes(raw[20:24], 'big')
    if not raw.startswith(b'\xff\xd8'):
        return None
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(raw[pos + 2:pos + 4], 'big')
        if marker in _JPEG_START_OF_FRAME:
            if pos + 9 > len(raw):
                return None
            height = int.from_bytes(raw[pos + 5:pos + 7], 'big')
            width = int.from_bytes(raw[pos + 7:pos + 9], 'big')
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def decode_compressed(format: str, data: Any, max_pixels: int | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` payload (JPEG or PNG) with OpenCV.

    Args:
        format: the message's ``format`` field, e.g. ``'jpeg'``, ``'png'``,
            ``'rgb8; jpeg compressed bgr8'`` or ``'mono8; png compressed mono8'``.
        data: the compressed bytes.
        max_pixels: refuse larger images, from the size in the stream's header, before
            decoding (None: no limit).

    Returns:
        (H, W, 3) uint8 RGB for colour payloads (alpha dropped), (H, W) uint8 or
        uint16 for grey payloads.

    Raises:
        BadInputError: reason ``'encoding'`` for a format that is neither JPEG nor PNG
            (including ``compressedDepth``), ``'empty'`` for no data, ``'decode'`` when
            the bytes are not a PNG/JPEG stream OpenCV can decode, ``'too_large'`` when
            the header announces more than ``max_pixels`` pixels.
    """
    fmt = format.lower()
    if 'compresseddepth' in fmt or not any(k in fmt for k in ('jpeg', 'jpg', 'png')):
        raise BadInputError(
            f'Unsupported compressed image format {format!r}; expected jpeg or png.',
            'encoding')
    raw = _as_bytes_view(data)
    if raw.size == 0:
        raise BadInputError(f'Compressed image ({format!r}) has no data.', 'empty')
    size = compressed_image_size(raw)
    if size is None:
        raise BadInputError(
            f'{raw.size} bytes of compressed image ({format!r}) do not start with a PNG or '
            'JPEG header.', 'decode')
    check_pixels(*size, max_pixels)
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadInputError(
            f'Cannot decode {raw.size} bytes of compressed image ({format!r}).', 'decode')
    if image.ndim == 2:
        return image
    if image.dtype != np.uint8:
        # 16-bit colour PNG: keep the 8 most significant bits, as to_rgb does for mono16.
        image = np.right_shift(image, 8).astype(np.uint8)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def intrinsics_from_fields(
    width: int,
    height: int,
    k: Sequence[float] | np.ndarray,
    d: Sequence[float] | np.ndarray,
    distortion_model: str,
) -> Intrinsics:
    """Build :class:`Intrinsics` from ``sensor_msgs/CameraInfo`` fields.

    Args:
        width, height: image size (pixels) the calibration refers to.
        k: the 3x3 camera matrix, row-major (9 values).
        d: distortion coefficients in CameraInfo order (may be empty).
        distortion_model: ``plumb_bob``, ``rational_polynomial``, ``equidistant`` or
            ``''``.

    Raises:
        BadInputError: reason ``'intrinsics'`` for an uncalibrated camera (all-zero K),
            a K that is not 9 values, non-finite or non-positive focal lengths, an
            unknown distortion model or a wrong number of coefficients for it.
    """
    K = np.asarray(k, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise BadInputError(f'CameraInfo K must have 9 values, got {K.size}.', 'intrinsics')
    if not np.any(K):
        raise BadInputError(
            'CameraInfo K is all zeros: the camera is uncalibrated.', 'intrinsics')
    D = np.asarray(d, dtype=np.float64).reshape(-1)
    allowed = DISTORTION_COEFFICIENTS.get(distortion_model)
    if allowed is not None and D.size not in allowed:
        raise BadInputError(
            f'Distortion model {distortion_model!r} takes {allowed} coefficients, '
            f'got {D.size}: {D[:8].tolist()}{" ..." if D.size > 8 else ""}.', 'intrinsics')
    # Intrinsics validates finiteness, focal lengths, size and the model name.
    return Intrinsics.from_matrix(K, int(width), int(height), distortion_model, D)


def intrinsics_to_fields(intrinsics: Intrinsics) -> dict[str, Any]:
    """``sensor_msgs/CameraInfo`` fields describing ``intrinsics`` (unrectified camera).

    Returns:
        A dict with ``width``, ``height`` (int), ``distortion_model`` (str) and
        ``d`` (n,), ``k`` (9,), ``r`` (9,, identity), ``p`` (12,, ``[K | 0]``) as
        float64 arrays.
    """
    K = intrinsics.K
    return {
        'width': intrinsics.width,
        'height': intrinsics.height,
        'distortion_model': intrinsics.distortion_model,
        'd': np.asarray(intrinsics.distortion, dtype=np.float64),
        'k': K.reshape(-1).copy(),
        'r': np.eye(3, dtype=np.float64).reshape(-1),
        'p': np.hstack([K, np.zeros((3, 1))]).reshape(-1),
    }


def check_size(intrinsics: Intrinsics, width: int, height: int) -> None:
    """Raise unless ``intrinsics`` describe images of ``width`` x ``height`` pixels.

    Raises:
        BadInputError: reason ``'size_mismatch'`` naming both sizes.
    """
    if intrinsics.size != (int(width), int(height)):
        raise BadInputError(
            f'Camera info is for {intrinsics.width}x{intrinsics.height} images but the '
            f'image is {width}x{height}.', 'size_mismatch')


def depth_to_encoding(depth: np.ndarray, encoding: str = '32FC1') -> np.ndarray:
    """Store metric depth the way a REP-118 depth image does.

    Args:
        depth: (H, W) depth in metres along the optical axis; NaN, inf and values
            <= 0 are invalid.
        encoding: ``'32FC1'`` (float32 metres, NaN invalid) or ``'16UC1'`` (uint16
            millimetres, 0 invalid; valid depths are rounded and clipped to 1..65535 mm
            so that no valid depth becomes the invalid value).

    Returns:
        (H, W) array ready for :func:`encode_image` with the same encoding.

    Raises:
        BadInputError: reason ``'encoding'`` for another encoding or a non-2-D array.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise BadInputError(
            f'Unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}.',
            'encoding')
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise BadInputError(f'Depth must be (H, W), got shape {depth.shape}.', 'encoding')
    depth = depth.astype(np.float32, copy=False)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth > 0)
    if encoding == '32FC1':
        return np.where(valid, depth, np.float32(np.nan)).astype(np.float32, copy=False)
    millimetres = np.zeros(depth.shape, dtype=np.uint16)
    millimetres[valid] = np.clip(np.rint(depth[valid] * 1000.0), 1, _UINT16_MAX)
    return millimetres


def depth_from_encoding(array: np.ndarray, encoding: str) -> np.ndarray:
    """Metric depth from a decoded depth image.

    Args:
        array: (H, W) as returned by :func:`decode_image`.
        encoding: ``'32FC1'`` (metres) or ``'16UC1'`` (millimetres, 0 invalid).

    Returns:
        (H, W) float32 metres, NaN invalid (non-finite or <= 0 values and 16UC1 zeros).

    Raises:
        BadInputError: reason ``'encoding'`` for another encoding.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise BadInputError(
            f'Unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}.',
            'encoding')
    if encoding == '16UC1':
        depth = array.astype(np.float32) * np.float32(1e-3)
        depth[array == 0] = np.nan
        return depth
    depth = np.array(array, dtype=np.float32)  # a writable copy, never a view of the message
    with np.errstate(invalid='ignore'):
        depth[~(depth > 0) | ~np.isfinite(depth)] = np.nan
    return depth
