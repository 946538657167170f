"""Hamlyn rectified sequences with depth (the release of Recasens et al., "Endo-Depth-
and-Motion", used by EndoDAC / EndoDAV and the Depth Anything endoscopy evaluations).

Format, as their loaders read it (split lines ``rectifiedNN <frame> l``, one folder per
sequence):

- ``image01/*.jpg`` (left, rectified; ``image02`` is the right view) or ``color/*.jpg``;
- ``depth01/*.png`` or ``depth/*.png``: 16-bit depth in millimetres, 0 invalid, paired
  with the image of the same file stem;
- ``intrinsics.txt``: the rectified camera matrix, 3x3 (or 3x4 projection) numbers.

There are no poses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from endo_depth_ros.datasets.common import (
    Dataset,
    ImportedFrame,
    ImportOptions,
    camera_matrix,
    check_same_size,
    frame_count,
    limited,
    positive_or_nan,
    read_numbers,
    read_png16,
    read_rgb,
    require_dir,
)
from endo_depth_ros.errors import DatasetError

_IMAGE_DIRS = ('image01', 'color', 'images')
_DEPTH_DIRS = ('depth01', 'depth')
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


def open_dataset(src: Path, options: ImportOptions) -> Dataset:
    """Open a Hamlyn ``rectifiedNN`` folder."""
    require_dir(src, 'Hamlyn sequence')
    image_dir = next((src / d for d in _IMAGE_DIRS if (src / d).is_dir()), None)
    if image_dir is None:
        raise DatasetError(f'{src}: no image folder ({" or ".join(_IMAGE_DIRS)}); is this a '
                           'Hamlyn rectifiedNN folder?')
    depth_dir = next((src / d for d in _DEPTH_DIRS if (src / d).is_dir()), None)
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f'{image_dir}: no .jpg/.png images.')
    depths = {} if depth_dir is None else {p.stem: p for p in depth_dir.glob('*.png')}
    numbers = read_numbers(src / 'intrinsics.txt', 'Hamlyn intrinsics')
    if numbers.size not in (9, 12):
        raise DatasetError(f'{src / "intrinsics.txt"}: expected a 3x3 or 3x4 matrix, got '
                           f'{numbers.size} numbers.')
    K = numbers.reshape(3, -1)[:, :3]

    def frames() -> Iterator[ImportedFrame]:
        for i, path in enumerate(images):
            rgb = read_rgb(path)
            height, width = rgb.shape[:2]
            camera = options.camera_for(width, height) or camera_matrix(
                K, width, height, src / 'intrinsics.txt')
            depth = None
            if path.stem in depths:
                raw = read_png16(depths[path.stem])
                check_same_size(rgb, raw, depths[path.stem])
                depth = positive_or_nan(raw.astype(np.float32) * np.float32(1e-3))  # mm -> m
            yield ImportedFrame(options.stamp_ns(i), rgb, camera, depth)

    return Dataset(limited(frames(), options), frame_count(len(images), options),
                   has_depth=bool(depths))
