"""Recordings as folders of ``.npz`` frames (EndoSynth's layout plus camera and pose)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
import zipfile

import numpy as np

from endo_depth_ros import encodings, outputs
from endo_depth_ros.bags.access import describe_error
from endo_depth_ros.bags.layout import (
    CAMERA_FRAME,
    NS_PER_S,
    BagFrame,
    BagTopics,
    CameraGuess,
    FrameLike,
    camera_for_image,
)
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, BagError


def is_npz_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder of ``.npz`` frames (and not a rosbag2 directory)."""
    path = Path(path)
    return (path.is_dir() and not (path / 'metadata.yaml').exists()
            and any(path.glob('*.npz')))


def write_npz(path: str | Path, frames: Iterable[FrameLike], *, overwrite: bool = False) -> int:
    """Write frames as a folder of ``frame_000000.npz`` files.

    Each file holds ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32 metres (NaN
    invalid), ``seg`` (H, W) uint8, ``K`` (3, 3) float64, ``pose`` (4, 4) float64
    ``T_world_camera`` and ``stamp`` (int64 ns).

    Returns:
        The number of frames written.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is False, or it is not a recording
            (see ``endo_depth_ros.outputs``).
        OSError: the folder cannot be created or written.
    """
    path = Path(path)
    outputs.prepare_recording_output(path, overwrite=overwrite)
    path.mkdir()
    count = 0
    for frame in frames:
        np.savez_compressed(
            path / f'frame_{count:06d}.npz',
            rgb=np.asarray(frame.rgb, np.uint8),
            depth=np.asarray(frame.depth, np.float32),
            seg=np.asarray(frame.seg, np.uint8),
            K=frame.intrinsics.K,
            pose=np.asarray(frame.pose, np.float64),
            stamp=np.int64(frame.stamp_ns))
        count += 1
    return count


def npz_files(path: Path) -> list[Path]:
    """The frame files of an npz folder, in order."""
    return sorted(path.glob('*.npz'))


def npz_topics(path: Path, overrides: dict[str, str | None]) -> BagTopics:
    """The "topics" (array keys) of an npz folder."""
    first = npz_files(path)[0]
    keys = set(load_npz(first))
    if 'rgb' not in keys:
        raise BagError(f'{first}: npz frame has no "rgb" array (keys: {sorted(keys)}).')
    if any(v for v in overrides.values()):
        raise BagError(f'{path}: topic overrides do not apply to an npz folder.')

    def key(name: str, field_name: str) -> str | None:
        if overrides.get(field_name) == '':
            return None
        return name if name in keys else None

    return BagTopics(image='rgb', camera_info=key('K', 'camera_info'),
                     depth=key('depth', 'depth'), pose=key('pose', 'pose'),
                     seg=key('seg', 'seg'))


def load_npz(file: Path) -> dict[str, np.ndarray]:
    """The arrays of one npz frame file."""
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BagError(f'Cannot read npz frame {str(file)!r}: {describe_error(err)}') from None


def read_npz(path: Path, start: int, stop: int | None, stride: int,
              fallback: Intrinsics | CameraGuess | None) -> Iterator[BagFrame]:
    """Frames ``start, start + stride, ...`` (before ``stop``) of an npz folder."""
    files = npz_files(path)
    for index in range(start, len(files) if stop is None else min(stop, len(files)), stride):
        data = load_npz(files[index])
        if 'rgb' not in data:
            raise BagError(f'{files[index]}: npz frame has no "rgb" array.')
        rgb = np.asarray(data['rgb'])
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BagError(f'{files[index]}: rgb must be (H, W, 3) uint8, got '
                           f'{rgb.shape} {rgb.dtype}.')
        height, width = rgb.shape[:2]
        if 'K' in data:
            try:
                intrinsics = Intrinsics.from_matrix(data['K'], width, height)
            except BadInputError as err:
                raise BagError(f'{files[index]}: {err}') from None
        elif fallback is not None:
            intrinsics = camera_for_image(fallback, width, height, files[index])
        else:
            raise BagError(f'{files[index]}: no "K" array; pass the camera intrinsics '
                           '(--fx/--fy/--cx/--cy or --camera-info FILE.yaml).')
        depth = data.get('depth')
        seg = data.get('seg')
        pose = data.get('pose')
        stamp = int(data['stamp']) if 'stamp' in data else index * NS_PER_S // 30
        yield BagFrame(
            index=index, stamp_ns=stamp, rgb=rgb, intrinsics=intrinsics, frame_id=CAMERA_FRAME,
            depth_gt=None if depth is None else encodings.depth_from_encoding(
                np.asarray(depth, np.float32), '32FC1'),
            pose_gt=None if pose is None else np.asarray(pose, np.float64).reshape(4, 4),
            seg_gt=None if seg is None else np.asarray(seg, np.uint8))
