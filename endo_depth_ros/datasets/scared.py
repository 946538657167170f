"""SCARED (MICCAI 2019 EndoVis "Stereo correspondence and reconstruction of endoscopic
data", Allan et al.): one ``keyframe_N`` folder per keyframe.

Format, as the challenge release and the public toolkit read it (dimitrisPs/scared_toolkit:
``scaredtk/io.py``, ``scripts/extract_sequence_dataset.py``):

- ``Left_Image.png``: the left image of the keyframe (1280x1024, not rectified);
- ``left_depth_map.tiff``: a 3-channel float "3D image": per left-image pixel the X, Y, Z
  of the structured-light point in the left camera frame, millimetres; Z == 0 unknown;
- ``endoscope_calibration.yaml``: OpenCV FileStorage with the left camera matrix ``M1``
  (the toolkit also writes ``K1``) and its distortion ``D1``;
- ``data/rgb.mp4`` (optional): the keyframe's video, left and right views stacked
  vertically (left on top); ``data/scene_points.tar.gz`` (or an extracted
  ``data/scene_points/`` folder): one 3D image per video frame, left stacked on right;
  ``data/frame_data.tar.gz`` (or ``data/frame_data/``): one JSON per frame whose
  ``camera-pose`` (millimetres) maps points of the keyframe's left camera frame into this
  frame's (the toolkit's ``scripts/generate_sequence_dataset.py`` warps the keyframe
  point cloud with it through ``convertions.transform_pts``): world = the keyframe's
  camera, and the pose written is its inverse, camera-to-world; OpenCV camera axes
  (x right, y down, z forward: REP-103 optical).

A keyframe folder with ``data/rgb.mp4`` imports the whole video with its interpolated
ground truth; without it, the keyframe alone (one frame). Depth is the Z channel in metres
on the raw (distorted) left image; the camera info carries ``D1`` (plumb_bob).
"""

from __future__ import annotations

from collections.abc import Iterator
import io
import json
from pathlib import Path
import re
import tarfile

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    camera_matrix,
    check_same_size,
    frame_count,
    limited,
    positive_or_nan,
    read_rgb,
    read_tiff,
    require_dir,
    require_file,
)
from endo_depth_ros.errors import DatasetError


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a SCARED ``keyframe_N`` folder (its video when ``data/rgb.mp4`` is there)."""
    require_dir(src, 'SCARED keyframe')
    calibration = require_file(src / 'endoscope_calibration.yaml', 'SCARED calibration')
    K, D = _read_calibration(calibration)
    video = src / 'data' / 'rgb.mp4'
    if video.is_file():
        return _open_video(src, video, K, D, options)
    rgb_path = require_file(src / 'Left_Image.png', 'SCARED keyframe image')
    depth_path = require_file(src / 'left_depth_map.tiff', 'SCARED keyframe depth')

    def frames() -> Iterator[ImportedFrame]:
        rgb = read_rgb(rgb_path)
        depth = _z_depth(read_tiff(depth_path), rgb.shape[0], depth_path)
        check_same_size(rgb, depth, depth_path)
        yield ImportedFrame(options.stamp_ns(0), rgb, _camera(K, D, rgb, calibration, options),
                            depth)

    return Dataset(limited(frames(), options), frame_count(1, options))


def _open_video(src: Path, video: Path, K: np.ndarray, D: np.ndarray,
                options: ImportOptions) -> Dataset:
    points = _Members(src / 'data', 'scene_points', ('.tiff', '.tif'))
    poses = _Members(src / 'data', 'frame_data', ('.json',))
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DatasetError(f'Cannot open video {str(video)!r}.')
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if total <= 0:
        total = len(points)

    def frames() -> Iterator[ImportedFrame]:
        try:
            index = 0
            while True:
                ok, stacked = capture.read()
                if not ok or stacked is None:
                    return
                left = cv2.cvtColor(stacked[: stacked.shape[0] // 2], cv2.COLOR_BGR2RGB)
                depth = None
                if index in points:
                    depth = _z_depth(read_tiff_bytes(points.read(index), points.name(index)),
                                     left.shape[0], points.name(index))
                    check_same_size(left, depth, points.name(index))
                pose = _pose(poses.read(index), poses.name(index)) if index in poses else None
                yield ImportedFrame(options.stamp_ns(index), left,
                                    _camera(K, D, left, src, options), depth, pose)
                index += 1
        finally:
            capture.release()
            points.close()
            poses.close()

    return Dataset(limited(frames(), options), frame_count(total, options),
                   has_depth=len(points) > 0, has_pose=len(poses) > 0)


def _read_calibration(path: Path) -> tuple[np.ndarray, np.ndarray]:
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        if not storage.isOpened():
            raise DatasetError(f'Cannot read OpenCV calibration {str(path)!r}.')
        K = next((m for m in (storage.getNode(n).mat() for n in ('M1', 'K1'))
                  if m is not None), None)
        D = storage.getNode('D1').mat()
    finally:
        storage.release()
    if K is None or K.size != 9:
        raise DatasetError(f'{path}: no 3x3 left camera matrix M1 (or K1).')
    return K.reshape(3, 3).astype(np.float64), (np.zeros(5) if D is None
                                                 else D.ravel().astype(np.float64))


def _camera(K: np.ndarray, D: np.ndarray, rgb: np.ndarray, where: Path,
            options: ImportOptions) -> Intrinsics:
    height, width = rgb.shape[:2]
    given = options.camera_for(width, height)
    if given is not None:
        return given
    model = 'rational_polynomial' if D.size == 8 else 'plumb_bob'
    coeffs = D if D.size in (5, 8) else np.pad(D, (0, max(0, 5 - D.size)))[:5]
    return camera_matrix(K, width, height, where, model, coeffs)


def _z_depth(image3d: np.ndarray, height: int, where: Path | str) -> np.ndarray:
    """Metres from a SCARED 3D image (H or 2H, W, 3) in mm: the left view's Z channel."""
    if image3d.ndim != 3 or image3d.shape[2] != 3:
        raise DatasetError(f'{where}: expected an (H, W, 3) XYZ image, got {image3d.shape}.')
    return positive_or_nan(image3d[:height, :, 2].astype(np.float32) * np.float32(1e-3))


def read_tiff_bytes(data: bytes, where: str) -> np.ndarray:
    """The array of a TIFF held in memory (a member of the ground-truth archive)."""
    import tifffile

    try:
        return np.asarray(tifffile.imread(io.BytesIO(data)))
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise DatasetError(f'Cannot read TIFF {where}: {err}') from None


def _pose(data: bytes, where: str) -> np.ndarray:
    try:
        T = np.asarray(json.loads(data)['camera-pose'], dtype=np.float64).reshape(4, 4)
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f'{where}: no 4x4 "camera-pose": {err}') from None
    if not np.isfinite(T).all() or abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-3:
        raise DatasetError(f'{where}: "camera-pose" is not a rigid transform.')
    T_world_camera = np.linalg.inv(T)  # camera-pose maps keyframe (world) to camera
    T_world_camera[:3, 3] /= 1000.0  # mm -> m
    return T_world_camera


class _Members:
    """Per-frame files of a SCARED ``data/<name>.tar.gz`` archive or ``data/<name>/`` folder,
    indexed by the frame number in their names."""

    def __init__(self, data: Path, name: str, suffixes: tuple[str, ...]) -> None:
        self._files: dict[int, Path] = {}
        self._archive: tarfile.TarFile | None = None
        self._members: dict[int, tarfile.TarInfo] = {}
        self._where = data / name
        folder, archive = data / name, data / f'{name}.tar.gz'
        if folder.is_dir():
            for path in folder.iterdir():
                number = _frame_number(path.name, suffixes)
                if number is not None:
                    self._files[number] = path
        elif archive.is_file():
            try:
                # Open while the frames are read (the archive can be gigabytes); close().
                self._archive = tarfile.open(archive, 'r:gz')  # noqa: SIM115
                for member in self._archive.getmembers():
                    number = _frame_number(Path(member.name).name, suffixes)
                    if member.isfile() and number is not None:
                        self._members[number] = member
            except (OSError, tarfile.TarError) as err:
                raise DatasetError(f'Cannot read archive {str(archive)!r}: {err}') from None

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __len__(self) -> int:
        return len(self._files) + len(self._members)

    def __contains__(self, index: int) -> bool:
        return index in self._files or index in self._members

    def name(self, index: int) -> str:
        return str(self._files.get(index, f'{self._where}.tar.gz:{index}'))

    def read(self, index: int) -> bytes:
        if index in self._files:
            return self._files[index].read_bytes()
        assert self._archive is not None  # members exist only with an archive
        handle = self._archive.extractfile(self._members[index])
        if handle is None:
            raise DatasetError(f'{self.name(index)}: not a regular file in the archive.')
        return handle.read()


def _frame_number(name: str, suffixes: tuple[str, ...]) -> int | None:
    if not name.lower().endswith(suffixes):
        return None
    digits = re.findall(r'\d+', name)
    return int(digits[-1]) if digits else None
