"""Hamlyn rectified sequences with depth (the release of Recasens et al., "Endo-Depth-
and-Motion", used by EndoDAC / EndoDAV and the Depth Anything endoscopy evaluations).

Format, from the release's own reader (UZ-SLAMLab/Endo-Depth-and-Motion
``edam/dataset/hamlyn/hamlyn_io.py``: colour and depth lists ordered by the integer in
their file names, ``depth_read`` divides the PNG by 1000 to get metres) and the EndoDAC-style
loaders (``rectifiedNN/image01`` + ``intrinsics.txt``):

- ``color/*.jpg`` or ``image01/*.jpg`` (left, rectified; ``image02`` is the right view);
- ``depth/*.png`` or ``depth01/*.png``: 16-bit depth in millimetres, 0 invalid, paired with
  the image of the same file stem (or, when the stems differ, in integer file-name order);
- the rectified camera matrix: ``intrinsics.txt`` or ``intrinsic/intrinsic_color.txt``,
  3x3, 3x4 or 4x4 numbers (the top-left 3x3 is used).

There are no poses.
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
    positive_or_nan,
    read_numbers,
    read_png16,
    read_rgb,
    require_dir,
)
from endo_depth_ros.errors import DatasetError

_IMAGE_DIRS = ('image01', 'color', 'images')
_NUMBER = re.compile(r'\d+')
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
    depth_files = [] if depth_dir is None else sorted(depth_dir.glob('*.png'), key=_number)
    depths = {p.stem: p for p in depth_files}
    if depth_files and not any(p.stem in depths for p in images):
        if len(depth_files) != len(images):
            raise DatasetError(f'{src}: {len(images)} images but {len(depth_files)} depth '
                               'images, and their file names do not match.')
        images = sorted(images, key=_number)
        depths = {p.stem: d for p, d in zip(images, depth_files, strict=True)}
    calibration = next((f for f in (src / 'intrinsics.txt',
                                    src / 'intrinsic' / 'intrinsic_color.txt') if f.is_file()),
                       src / 'intrinsics.txt')
    numbers = read_numbers(calibration, 'Hamlyn intrinsics')
    if numbers.size not in (9, 12, 16):
        raise DatasetError(f'{calibration}: expected a 3x3, 3x4 or 4x4 matrix, got '
                           f'{numbers.size} numbers.')
    K = numbers.reshape(4 if numbers.size == 16 else 3, -1)[:3, :3]

    def frames() -> Iterator[ImportedFrame]:
        for i, path in enumerate(images):
            rgb = read_rgb(path)
            height, width = rgb.shape[:2]
            camera = options.camera_for(width, height) or camera_matrix(
                K, width, height, calibration)
            depth = None
            if path.stem in depths:
                raw = read_png16(depths[path.stem])
                check_same_size(rgb, raw, depths[path.stem])
                depth = positive_or_nan(raw.astype(np.float32) * np.float32(1e-3))  # mm -> m
            yield ImportedFrame(options.stamp_ns(i), rgb, camera, depth)

    return Dataset(limited(frames(), options), frame_count(len(images), options),
                   has_depth=bool(depths))


def _number(path: Path) -> tuple[int, str]:
    """Sort key: the last integer in the file name (then the name)."""
    digits = _NUMBER.findall(path.stem)
    return (int(digits[-1]) if digits else -1, path.name)
