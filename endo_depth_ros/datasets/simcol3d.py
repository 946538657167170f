"""SimCol3D (MICCAI 2022 EndoVis challenge; Rau et al.): synthetic colonoscopy from Unity.

Format, from the authors' code (anitarau/simcol: ``evaluation/eval_synthetic_depth.py``,
``bimodal_camera_pose/datasets/sequence_folders_quat.py``,
``data_helpers/visualize_3D_data.py``), one trajectory ``Frames_<X>`` inside a
``SyntheticColon_*`` folder:

- ``Frames_<X>/FrameBuffer_NNNN.png``: RGB(A) frames (475x475);
- ``Frames_<X>/Depth_NNNN.png``: 16-bit depth; ``value / 255 / 256`` is depth in units
  of 20 cm (the challenge's evaluation multiplies by 20 to get centimetres);
- ``cam.txt`` (in the colon folder): the 3x3 camera matrix, 9 numbers row-major;
- ``SavedPosition_<X>.txt``: camera positions in centimetres, one ``x y z`` line per frame;
- ``SavedRotationQuaternion_<X>.txt``: orientations ``qx qy qz qw`` (scipy order);
- Unity is left-handed (y up); the authors' loader turns a pose P = [R(q) | t] into
  ``TM @ P @ TM`` with ``TM = diag(1, -1, 1, 1)``, which is a right-handed
  camera-to-world transform whose camera axes are x right, y down, z forward
  (REP-103 optical). Translations are converted from cm to metres.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import re

import numpy as np

from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    camera_matrix,
    check_same_size,
    frame_count,
    limited,
    numbered,
    positive_or_nan,
    read_numbers,
    read_png16,
    read_rgb,
    require_dir,
)
from endo_depth_ros.errors import DatasetError
from endo_depth_ros.geometry import pose_from_translation_quaternion

#: Depth PNG value -> metres: value / 255 / 256 * 20 cm.
DEPTH_SCALE_M = 0.20 / (255.0 * 256.0)
#: Unity (left-handed, y up) <-> right-handed optical frame: flip y on both sides.
_FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a SimCol3D trajectory folder ``.../SyntheticColon_*/Frames_<X>``."""
    require_dir(src, 'SimCol3D trajectory')
    match = re.fullmatch(r'Frames_(\w+?)(?:_OP)?', src.name)
    if match is None:
        raise DatasetError(f'{src}: a SimCol3D trajectory folder is named Frames_<X> '
                           '(e.g. SyntheticColon_I/Frames_S1).')
    name = match.group(1)
    colour = dict(numbered(src, r'FrameBuffer_(\d+)\.png'))
    if not colour:
        raise DatasetError(f'{src}: no FrameBuffer_NNNN.png frames.')
    depth_files = dict(numbered(src, r'Depth_(\d+)\.png'))
    colon = src.parent
    K = read_numbers(colon / 'cam.txt', 'SimCol3D camera (cam.txt)')
    if K.size != 9:
        raise DatasetError(f'{colon / "cam.txt"}: expected 9 numbers (3x3), got {K.size}.')
    poses = _read_poses(colon, name)
    indices = sorted(colour)
    if poses is not None and len(poses) < len(indices):
        raise DatasetError(f'{colon}: {len(poses)} poses for {len(indices)} frames of {src.name}.')

    def frames() -> Iterator[ImportedFrame]:
        for i, number in enumerate(indices):
            rgb = read_rgb(colour[number])
            height, width = rgb.shape[:2]
            camera = options.camera_for(width, height) or camera_matrix(
                K, width, height, colon / 'cam.txt')
            depth = None
            if number in depth_files:
                raw = read_png16(depth_files[number])
                check_same_size(rgb, raw, depth_files[number])
                depth = positive_or_nan(raw.astype(np.float32) * np.float32(DEPTH_SCALE_M))
            yield ImportedFrame(options.stamp_ns(i), rgb, camera, depth,
                                None if poses is None else poses[i])

    return Dataset(limited(frames(), options), frame_count(len(indices), options),
                   has_depth=bool(depth_files), has_pose=poses is not None)


def _read_poses(colon: Path, name: str) -> list[np.ndarray] | None:
    position_file = colon / f'SavedPosition_{name}.txt'
    rotation_file = colon / f'SavedRotationQuaternion_{name}.txt'
    if not position_file.exists() and not rotation_file.exists():
        return None
    positions = read_numbers(position_file, 'SimCol3D positions')
    quaternions = read_numbers(rotation_file, 'SimCol3D rotations')
    if positions.size % 3 or quaternions.size % 4 or positions.size // 3 != quaternions.size // 4:
        raise DatasetError(f'{colon}: SavedPosition_{name}.txt ({positions.size} numbers) and '
                           f'SavedRotationQuaternion_{name}.txt ({quaternions.size}) do not '
                           'hold the same number of x y z / qx qy qz qw lines.')
    poses = []
    for t_cm, q in zip(positions.reshape(-1, 3), quaternions.reshape(-1, 4), strict=True):
        if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
            raise DatasetError(f'{colon}: invalid quaternion {q.tolist()} in '
                               f'SavedRotationQuaternion_{name}.txt.')
        unity = pose_from_translation_quaternion(t_cm / 100.0, q / np.linalg.norm(q))
        poses.append(_FLIP_Y @ unity @ _FLIP_Y)
    return poses
