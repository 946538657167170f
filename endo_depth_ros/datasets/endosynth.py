"""EndoSynth samples: ``NNNNNN.npz`` files with ``rgb``, ``depth`` and ``seg``.

Format (the dataset's documented sample layout, as the EndoSynth loaders read it):
``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float16 in metres, ``seg`` (H, W) uint8 class
labels. The samples carry no intrinsics and no poses: the camera must be given by the
user (``--fx/--fy/--cx/--cy`` or ``--camera-info``). Samples are independent images, so
the bag is scored frame by frame (TAE and trajectories need poses and do not apply).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import zipfile

import numpy as np

from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    check_same_size,
    frame_count,
    limited,
    positive_or_nan,
    require_dir,
)
from endo_depth_ros.errors import DatasetError


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a folder of EndoSynth ``.npz`` samples (the camera comes from ``options``)."""
    require_dir(src, 'EndoSynth samples')
    files = sorted(src.glob('*.npz'))
    if not files:
        raise DatasetError(f'{src}: no .npz samples.')
    if options.camera is None:
        raise DatasetError('EndoSynth samples have no intrinsics; pass the camera '
                           '(--fx/--fy/--cx/--cy or --camera-info FILE.yaml).')

    def frames() -> Iterator[ImportedFrame]:
        for i, path in enumerate(files):
            rgb, depth = _load(path)
            camera = options.camera_for(rgb.shape[1], rgb.shape[0])
            if camera is None:
                raise DatasetError('EndoSynth samples need the camera (--fx/--fy/--cx/--cy).')
            yield ImportedFrame(options.stamp_ns(i), rgb, camera, depth)

    return Dataset(limited(frames(), options), frame_count(len(files), options))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if 'rgb' not in data.files:
                raise DatasetError(f'{path}: no "rgb" array (keys: {sorted(data.files)}).')
            rgb = np.asarray(data['rgb'])
            depth = np.asarray(data['depth']) if 'depth' in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f'Cannot read EndoSynth sample {str(path)!r}: {err}') from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DatasetError(f'{path}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}.')
    if depth is None:
        return rgb, None
    check_same_size(rgb, depth, path)
    return rgb, positive_or_nan(depth.astype(np.float32))  # float16 metres
