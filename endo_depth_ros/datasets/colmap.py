"""COLMAP sparse models (``cameras``, ``images``, ``points3D`` as ``.txt`` or ``.bin``)
plus the images they were built from: poses and *sparse* depth from the 3D points.

Format, from COLMAP's documentation ("Output Format") and its reference reader
(colmap/colmap ``scripts/python/read_write_model.py``):

- cameras: id, model, width, height, parameters (SIMPLE_PINHOLE f cx cy; PINHOLE fx fy
  cx cy; SIMPLE_RADIAL f cx cy k; RADIAL f cx cy k1 k2; OPENCV fx fy cx cy k1 k2 p1 p2;
  OPENCV_FISHEYE fx fy cx cy k1..k4; FULL_OPENCV fx fy cx cy k1 k2 p1 p2 k3..k6);
  binary: uint64 count, then per camera int32 id, int32 model id, uint64 width, height,
  float64 parameters;
- images: id, qw qx qy qz, tx ty tz (world-to-camera: x_cam = R(q) x_world + t),
  camera id, name, then the 2D points (x, y, point3D id; -1 when unmatched); binary:
  uint64 count, then int32 id, 7 float64, int32 camera id, NUL-terminated name,
  uint64 number of points, (float64 x, float64 y, int64 id) each;
- points3D: id, x y z, r g b, error, track; binary: uint64 count, then uint64 id,
  3 float64, 3 uint8, float64 error, uint64 track length, (int32, int32) each;
- pixel coordinates have the centre of the top-left pixel at (0.5, 0.5) (ours: (0, 0));
- the camera frame is x right, y down, z forward (REP-103 optical).

A reconstruction has no metric scale: depth and poses are written in the model's units
(``gt_units: relative``). Frames are the model's images in name order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
import struct
from typing import Any, BinaryIO

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    frame_count,
    limited,
    read_rgb,
    require_dir,
)
from endo_depth_ros.errors import BadInputError, DatasetError
from endo_depth_ros.geometry import quaternion_to_rotation

#: COLMAP camera models: id -> (name, number of parameters).
CAMERA_MODELS = {
    0: ('SIMPLE_PINHOLE', 3), 1: ('PINHOLE', 4), 2: ('SIMPLE_RADIAL', 4), 3: ('RADIAL', 5),
    4: ('OPENCV', 8), 5: ('OPENCV_FISHEYE', 8), 6: ('FULL_OPENCV', 12), 7: ('FOV', 5),
    8: ('SIMPLE_RADIAL_FISHEYE', 4), 9: ('RADIAL_FISHEYE', 5), 10: ('THIN_PRISM_FISHEYE', 12),
}
_MODEL_IDS = {name: (i, n) for i, (name, n) in CAMERA_MODELS.items()}


@dataclass(frozen=True)
class Camera:
    """A COLMAP camera in the package's convention."""

    width: int
    height: int
    model: str
    params: tuple[float, ...]

    def intrinsics(self) -> Intrinsics:
        """Pinhole part plus the distortion, named as in sensor_msgs/CameraInfo."""
        p = self.params
        coeffs: tuple[float, ...]
        if self.model in ('SIMPLE_PINHOLE', 'SIMPLE_RADIAL', 'RADIAL'):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            k = list(p[3:]) + [0.0] * (2 - len(p[3:]))
            model, coeffs = ('plumb_bob', (k[0], k[1], 0.0, 0.0, 0.0)) \
                if self.model != 'SIMPLE_PINHOLE' else ('', ())
        elif self.model in ('PINHOLE', 'OPENCV', 'FULL_OPENCV', 'OPENCV_FISHEYE'):
            fx, fy, cx, cy = p[:4]
            rest = p[4:]
            if self.model == 'PINHOLE':
                model, coeffs = '', ()
            elif self.model == 'OPENCV':
                model, coeffs = 'plumb_bob', (*rest, 0.0)
            elif self.model == 'FULL_OPENCV':
                model, coeffs = 'rational_polynomial', rest
            else:
                model, coeffs = 'equidistant', rest
        else:
            raise DatasetError(f'COLMAP camera model {self.model} is not supported (use '
                               'SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, '
                               'OPENCV_FISHEYE or FULL_OPENCV, or undistort the model).')
        # COLMAP puts the top-left pixel's centre at (0.5, 0.5), this package at (0, 0).
        try:
            return Intrinsics(self.width, self.height, fx, fy, cx - 0.5, cy - 0.5, model,
                              tuple(float(c) for c in coeffs))
        except BadInputError as err:
            raise DatasetError(f'COLMAP camera: {err}') from None


@dataclass(frozen=True)
class Image:
    """A registered image: world-to-camera rotation/translation and its 2D-3D matches."""

    name: str
    camera_id: int
    R: np.ndarray  # (3, 3) world -> camera
    t: np.ndarray  # (3,)
    xy: np.ndarray  # (N, 2) float64 COLMAP pixel coordinates
    point_ids: np.ndarray  # (N,) int64, -1 unmatched

    @property
    def pose(self) -> np.ndarray:
        """4x4 ``T_world_camera`` (camera-to-world)."""
        T = np.eye(4)
        T[:3, :3] = self.R.T
        T[:3, 3] = -self.R.T @ self.t
        return T


@dataclass(frozen=True)
class Model:
    """A COLMAP sparse model."""

    cameras: dict[int, Camera]
    images: list[Image]  # in name order
    points: dict[int, np.ndarray]  # id -> (3,) world position


def find_model(src: Path) -> Path:
    """The folder holding ``cameras``/``images``/``points3D`` (``src``, ``src/sparse/0``,
    ``src/sparse``)."""
    for folder in (src, src / 'sparse' / '0', src / 'sparse'):
        if any((folder / f'cameras{ext}').is_file() for ext in ('.bin', '.txt')):
            return folder
    raise DatasetError(f'{src}: no COLMAP model (cameras.bin/.txt) here, in sparse/0 or in '
                       'sparse.')


def read_model(folder: Path) -> Model:
    """Read a text or binary model (binary when ``cameras.bin`` exists)."""
    binary = (folder / 'cameras.bin').is_file()
    ext = '.bin' if binary else '.txt'
    paths = {name: folder / f'{name}{ext}' for name in ('cameras', 'images', 'points3D')}
    for path in paths.values():
        if not path.is_file():
            raise DatasetError(f'COLMAP model: {str(path)!r} is missing.')
    try:
        if binary:
            cameras = _read_cameras_bin(paths['cameras'])
            images = _read_images_bin(paths['images'])
            points = _read_points_bin(paths['points3D'])
        else:
            cameras = _read_cameras_txt(paths['cameras'])
            images = _read_images_txt(paths['images'])
            points = _read_points_txt(paths['points3D'])
    except (OSError, ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
        raise DatasetError(f'COLMAP model {str(folder)!r} is malformed: {err}') from None
    for image in images:
        if image.camera_id not in cameras:
            raise DatasetError(f'COLMAP model: image {image.name!r} uses camera '
                               f'{image.camera_id}, which is not in cameras{ext}.')
    return Model(cameras, sorted(images, key=lambda im: im.name), points)


def sparse_depth(image: Image, points: dict[int, np.ndarray], width: int,
                 height: int) -> np.ndarray:
    """(H, W) float32 z-depth (model units) at the image's matched 2D points, NaN elsewhere.

    Each observation's depth is the z of its 3D point in the camera frame; it is written
    at the pixel containing the observation (the nearest point wins a shared pixel).
    """
    depth = np.full((height, width), np.inf, np.float32)
    matched = image.point_ids >= 0
    ids = image.point_ids[matched]
    known = np.array([i in points for i in ids], dtype=bool)
    if not known.any():
        return np.full((height, width), np.nan, np.float32)
    world = np.stack([points[int(i)] for i in ids[known]])
    z = (world @ image.R.T + image.t)[:, 2]
    xy = image.xy[matched][known]
    # COLMAP's pixel (0.5, 0.5) is the centre of pixel (0, 0).
    cols = np.floor(xy[:, 0]).astype(np.int64)
    rows = np.floor(xy[:, 1]).astype(np.int64)
    inside = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    np.minimum.at(depth, (rows[inside], cols[inside]), z[inside].astype(np.float32))
    depth[~np.isfinite(depth)] = np.nan
    return depth


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a COLMAP project (model + ``images/``; ``options.images`` overrides the latter)."""
    require_dir(src, 'COLMAP project')
    folder = find_model(src)
    model = read_model(folder)
    if not model.images:
        raise DatasetError(f'COLMAP model {str(folder)!r} has no registered image.')
    image_dir = options.images
    if image_dir is None:
        image_dir = next((d / 'images' for d in (src, *folder.parents)
                          if (d / 'images').is_dir()), src / 'images')
    require_dir(image_dir, 'COLMAP image folder (pass --images DIR)')

    def frames() -> Iterator[ImportedFrame]:
        for i, image in enumerate(model.images):
            camera = model.cameras[image.camera_id]
            path = image_dir / image.name
            if not path.is_file():
                raise DatasetError(f'COLMAP image {image.name!r} is not in {str(image_dir)!r}.')
            rgb = read_rgb(path)
            height, width = rgb.shape[:2]
            if (width, height) != (camera.width, camera.height):
                raise DatasetError(f'{path}: image is {width}x{height} but COLMAP camera '
                                   f'{image.camera_id} is {camera.width}x{camera.height}.')
            intrinsics = options.camera_for(width, height) or camera.intrinsics()
            yield ImportedFrame(options.stamp_ns(i), rgb, intrinsics,
                                sparse_depth(image, model.points, width, height), image.pose)

    return Dataset(limited(frames(), options), frame_count(len(model.images), options),
                   gt_units='relative', has_pose=True)


# --------------------------------------------------------------------------- text


def _data_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith('#')]


def _read_cameras_txt(path: Path) -> dict[int, Camera]:
    cameras = {}
    for line in _data_lines(path):
        parts = line.split()
        model = parts[1]
        params = tuple(float(v) for v in parts[4:])
        if model in _MODEL_IDS and len(params) != _MODEL_IDS[model][1]:
            raise ValueError(f'camera {parts[0]} ({model}) has {len(params)} parameters')
        cameras[int(parts[0])] = Camera(int(parts[2]), int(parts[3]), model, params)
    return cameras


def _read_images_txt(path: Path) -> list[Image]:
    # Image lines come in pairs: the pose line and the (possibly empty) 2D points line.
    raw = [line.strip() for line in path.read_text().splitlines()
           if not line.lstrip().startswith('#')]
    while raw and not raw[-1]:
        raw.pop()
    while raw and not raw[0]:
        raw.pop(0)
    images = []
    for k in range(0, len(raw), 2):
        head = raw[k].split()
        if len(head) < 10:
            raise ValueError(f'image line {head!r} has fewer than 10 fields')
        q = np.array([float(v) for v in head[1:5]])  # qw qx qy qz
        t = np.array([float(v) for v in head[5:8]])
        points = raw[k + 1].split() if k + 1 < len(raw) else []
        values = np.array([float(v) for v in points]).reshape(-1, 3)
        images.append(_image(' '.join(head[9:]), int(head[8]), q, t, values[:, :2],
                             values[:, 2].astype(np.int64)))
    return images


def _read_points_txt(path: Path) -> dict[int, np.ndarray]:
    points = {}
    for line in _data_lines(path):
        parts = line.split()
        points[int(parts[0])] = np.array([float(v) for v in parts[1:4]])
    return points


def _image(name: str, camera_id: int, q_wxyz: np.ndarray, t: np.ndarray, xy: np.ndarray,
           ids: np.ndarray) -> Image:
    norm = float(np.linalg.norm(q_wxyz))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f'image {name!r} has an invalid quaternion {q_wxyz.tolist()}')
    w, x, y, z = q_wxyz / norm
    R = quaternion_to_rotation((x, y, z, w))
    return Image(name, camera_id, R, t.astype(np.float64), xy.astype(np.float64), ids)


# --------------------------------------------------------------------------- binary


def _unpack(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError('unexpected end of file')
    return struct.unpack(fmt, data)


def _count(f: BinaryIO) -> int:
    (n,) = _unpack(f, '<Q')
    if not isinstance(n, int) or n > 10_000_000:
        raise ValueError(f'implausible entry count {n}')
    return n


def _read_cameras_bin(path: Path) -> dict[int, Camera]:
    cameras = {}
    with path.open('rb') as f:
        for _ in range(_count(f)):
            cam_id, model_id, width, height = _unpack(f, '<iiQQ')
            if model_id not in CAMERA_MODELS:
                raise ValueError(f'unknown camera model id {model_id}')
            name, n = CAMERA_MODELS[int(model_id)]
            params = tuple(float(v) for v in _unpack(f, f'<{n}d'))
            cameras[int(cam_id)] = Camera(int(width), int(height), name,
                                          params)
    return cameras


def _read_images_bin(path: Path) -> list[Image]:
    images = []
    with path.open('rb') as f:
        for _ in range(_count(f)):
            values = _unpack(f, '<i7di')
            name = bytearray()
            while True:
                byte = f.read(1)
                if not byte:
                    raise ValueError('unexpected end of file in an image name')
                if byte == b'\x00':
                    break
                name += byte
            n = _count(f)
            data = f.read(24 * n)
            if len(data) != 24 * n:
                raise ValueError('unexpected end of file in 2D points')
            table = np.frombuffer(data, dtype=np.dtype([('x', '<f8'), ('y', '<f8'),
                                                        ('id', '<i8')]))
            q = np.array(values[1:5], dtype=np.float64)
            t = np.array(values[5:8], dtype=np.float64)
            images.append(_image(name.decode('utf-8'), int(values[8]),
                                 q, t, np.column_stack([table['x'], table['y']]),
                                 table['id'].astype(np.int64)))
    return images


def _read_points_bin(path: Path) -> dict[int, np.ndarray]:
    points = {}
    with path.open('rb') as f:
        for _ in range(_count(f)):
            values = _unpack(f, '<Q3d3BdQ')
            track = int(values[8])
            if len(f.read(8 * track)) != 8 * track:
                raise ValueError('unexpected end of file in a track')
            points[int(values[0])] = np.array(values[1:4], dtype=np.float64)
    return points
