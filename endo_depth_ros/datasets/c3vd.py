"""C3VD (Colonoscopy 3D Video Dataset, Bobrow et al. 2023): one folder per sequence.

Format, from the dataset's own example loader (DurrLab/C3VD ``python/exampleDataLoader.py``)
and README:

- ``NNNN_color.png``: RGB frames, 1350x1080;
- ``NNNN_depth.tiff``: 16-bit depth along the camera z axis, 0..65535 mapping 0..100 mm;
  0 and 65535 (clipped at 100 mm) are invalid;
- ``pose.txt``: one line per frame, 16 comma-separated values of the homogeneous
  camera-to-world transform in column-major order (the loader multiplies row vectors by
  the row-major reshape), translation in millimetres;
- intrinsics: an omnidirectional (Scaramuzza) model, rays ``(u - cx, v - cy)`` through the
  inverse stretch matrix ``[[c, d], [e, 1]]`` and ``z = a0 + a2 rho^2 + ...``: the camera
  axes are x right, y down, z forward (REP-103 optical). Its pinhole part at the image
  centre, ``fx = c * a0``, ``fy = a0``, ``cx``, ``cy`` with the loader's values (a0
  769.2436, c 0.99998688, cx 678.5448, cy 542.9759 at 1350x1080), is the camera written
  unless the user gives one (``--fx ...`` or ``--camera-info``). Depth and colour are
  pixel-aligned, so depth scores do not depend on it; reprojection (TAE, odometry) away
  from the centre is approximate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    check_same_size,
    frame_count,
    limited,
    numbered,
    positive_or_nan,
    read_numbers,
    read_rgb,
    read_tiff,
    require_dir,
)
from endo_depth_ros.errors import DatasetError

#: Full scale of the 16-bit depth TIFFs (millimetres).
DEPTH_FULL_SCALE_MM = 100.0
#: The pinhole part of the dataset's calibration, at its native 1350x1080.
NATIVE_CAMERA = Intrinsics(width=1350, height=1080, fx=0.999986882249990 * 769.243600037458,
                           fy=769.243600037458, cx=678.544839263292, cy=542.975887548343)


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a C3VD sequence folder (``NNNN_color.png``, ``NNNN_depth.tiff``, ``pose.txt``)."""
    require_dir(src, 'C3VD sequence')
    colours = dict(numbered(src, r'(\d+)_color\.png'))
    if not colours:
        raise DatasetError(f'{src}: no NNNN_color.png frames (is this a C3VD sequence folder?).')
    depths = dict(numbered(src, r'(\d+)_depth\.tiff?'))
    poses = _read_poses(src / 'pose.txt') if (src / 'pose.txt').exists() else None
    indices = sorted(colours)
    if poses is not None and len(poses) < len(indices):
        raise DatasetError(f'{src / "pose.txt"}: {len(poses)} poses for {len(indices)} frames.')

    def frames() -> Iterator[ImportedFrame]:
        for i, number in enumerate(indices):
            rgb = read_rgb(colours[number])
            height, width = rgb.shape[:2]
            camera = options.camera_for(width, height) or NATIVE_CAMERA.scaled(width, height)
            depth = None
            if number in depths:
                raw = read_tiff(depths[number])
                if raw.dtype != np.uint16 or raw.ndim != 2:
                    raise DatasetError(f'{depths[number]}: expected a 16-bit depth TIFF, got '
                                       f'{raw.dtype} {raw.shape}.')
                check_same_size(rgb, raw, depths[number])
                depth = positive_or_nan(raw.astype(np.float32)
                                        * np.float32(DEPTH_FULL_SCALE_MM / 65535.0 / 1000.0))
                depth[raw == 65535] = np.nan  # clipped at the 100 mm full scale
            yield ImportedFrame(options.stamp_ns(i), rgb, camera, depth,
                                None if poses is None else poses[i])

    return Dataset(limited(frames(), options), frame_count(len(indices), options),
                   has_depth=bool(depths), has_pose=poses is not None)


def _read_poses(path: Path) -> list[np.ndarray]:
    values = read_numbers(path, 'C3VD poses')
    if values.size % 16:
        raise DatasetError(f'{path}: {values.size} numbers is not a whole number of 4x4 poses.')
    poses = []
    for flat in values.reshape(-1, 16):
        T = flat.reshape(4, 4).T.copy()  # stored column by column
        T[:3, 3] /= 1000.0  # mm -> m
        if not np.allclose(T[3], (0, 0, 0, 1), atol=1e-6):
            raise DatasetError(f'{path}: a pose is not a rigid 4x4 transform (last row '
                               f'{T[3].tolist()}).')
        poses.append(T)
    return poses
