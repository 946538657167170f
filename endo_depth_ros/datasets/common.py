"""What every dataset importer shares: the frame it yields, file helpers, one-line errors.

Conventions of :class:`ImportedFrame` (what ``bags.read_frames`` gives back later):
depth is REP-118 z-depth in metres (in the ground truth's own unit when the dataset is
scale-free, ``Dataset.gt_units == 'relative'``), NaN where unknown; poses are 4x4
``T_world_camera`` of the REP-103 camera optical frame (x right, y down, z forward),
translation in metres (ground-truth units when scale-free).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
import re

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, DatasetError
from endo_depth_ros.synth.config import DEFAULT_START_NS

#: Builds the camera of an image of (width, height) pixels.
CameraGuess = Callable[[int, int], Intrinsics]


@dataclass(frozen=True, eq=False)
class ImportedFrame:
    """One frame of a dataset in the package's conventions (see the module docstring)."""

    stamp_ns: int
    rgb: np.ndarray
    intrinsics: Intrinsics
    depth: np.ndarray | None = None
    pose: np.ndarray | None = None


@dataclass(frozen=True)
class ImportOptions:
    """What the user adds to a dataset.

    Attributes:
        camera: intrinsics to use instead of (or where there are no) the dataset's own.
        fps: frame rate for the stamps of datasets without timestamps (Hz).
        max_frames: import at most this many frames (0: all).
        images: image folder (COLMAP: where the model's images are; default ``images``
            next to the model).
    """

    camera: Intrinsics | CameraGuess | None = None
    fps: float = 30.0
    max_frames: int = 0
    images: Path | None = None

    def __post_init__(self) -> None:
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise DatasetError(f'fps must be positive, got {self.fps}.')
        if self.max_frames < 0:
            raise DatasetError(f'max_frames must be >= 0 (0: all), got {self.max_frames}.')

    def stamp_ns(self, index: int) -> int:
        """Stamp of frame ``index`` when the dataset has no timestamps (int ns)."""
        return DEFAULT_START_NS + round(index * 1e9 / self.fps)

    def camera_for(self, width: int, height: int) -> Intrinsics | None:
        """The user's camera for an image of this size (None: none given)."""
        if self.camera is None or isinstance(self.camera, Intrinsics):
            if self.camera is not None and self.camera.size != (width, height):
                raise DatasetError(
                    f'The given camera is {self.camera.width}x{self.camera.height} but the '
                    f'images are {width}x{height}.')
            return self.camera
        try:
            return self.camera(width, height)
        except BadInputError as err:
            raise DatasetError(str(err)) from None


@dataclass
class Dataset:
    """An opened dataset: its frames (lazily) and what is known about its ground truth.

    Attributes:
        frames: the frames, in order (read one at a time).
        count: number of frames (for progress), None if unknown.
        gt_units: ``'metric'`` or ``'relative'`` (scale-free ground truth).
        has_depth: frames carry ground-truth depth.
        has_pose: frames carry ground-truth poses.
        view: (H, W) bool field of view when the dataset defines one.
    """

    frames: Iterator[ImportedFrame]
    count: int | None
    gt_units: str = 'metric'
    has_depth: bool = True
    has_pose: bool = False
    view: np.ndarray | None = None


def numbered(folder: Path, pattern: str) -> list[tuple[int, Path]]:
    """Files of ``folder`` whose name matches ``pattern`` (one group: the frame number),
    sorted by that number."""
    regex = re.compile(pattern)
    found = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = regex.fullmatch(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a one-line DatasetError naming ``what``."""
    if not path.is_dir():
        raise DatasetError(f'{what} {str(path)!r} is not a folder.')
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a one-line DatasetError naming ``what``."""
    if not path.is_file():
        raise DatasetError(f'{what}: {str(path)!r} is missing.')
    return path


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PNG/JPEG (alpha dropped, grey expanded)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f'Cannot read image {str(path)!r}.')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_png16(path: Path) -> np.ndarray:
    """(H, W) uint16 of a 16-bit PNG, as stored."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f'Cannot read depth image {str(path)!r}.')
    if image.dtype != np.uint16 or image.ndim != 2:
        raise DatasetError(f'{path}: expected a 16-bit single-channel PNG, got '
                           f'{image.dtype} with shape {image.shape}.')
    return image


def read_tiff(path: Path) -> np.ndarray:
    """The array of a TIFF file (tifffile, as the datasets' own tools read them)."""
    import tifffile

    try:
        return np.asarray(tifffile.imread(str(path)))
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise DatasetError(f'Cannot read TIFF {str(path)!r}: {err}') from None


def read_numbers(path: Path, what: str) -> np.ndarray:
    """All numbers of a text file (whitespace or comma separated), float64."""
    try:
        text = require_file(path, what).read_text()
        return np.array([float(v) for v in re.split(r'[\s,]+', text.strip()) if v],
                        dtype=np.float64)
    except (OSError, ValueError) as err:
        raise DatasetError(f'{what}: cannot read numbers from {str(path)!r}: {err}') from None


def check_same_size(rgb: np.ndarray, depth: np.ndarray, where: Path | str) -> None:
    """A one-line error when the depth and image sizes differ."""
    if depth.shape != rgb.shape[:2]:
        raise DatasetError(f'{where}: depth is {depth.shape[1]}x{depth.shape[0]} but the '
                           f'image is {rgb.shape[1]}x{rgb.shape[0]}.')


def positive_or_nan(depth: np.ndarray) -> np.ndarray:
    """float32 depth with non-positive and non-finite values set to NaN (invalid)."""
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan))


def camera_matrix(K: np.ndarray, width: int, height: int, where: Path,
                  distortion_model: str = '', distortion: np.ndarray | tuple[float, ...] = ()
                  ) -> Intrinsics:
    """Intrinsics from a 3x3 matrix, with a one-line error naming the file."""
    try:
        return Intrinsics.from_matrix(np.asarray(K, np.float64).reshape(3, 3), width, height,
                                      distortion_model, distortion)
    except (BadInputError, ValueError) as err:
        raise DatasetError(f'{where}: invalid camera matrix: {err}') from None


def limited(frames: Iterator[ImportedFrame], options: ImportOptions) -> Iterator[ImportedFrame]:
    """At most ``options.max_frames`` frames (all when 0)."""
    for index, frame in enumerate(frames):
        if options.max_frames and index >= options.max_frames:
            return
        yield frame


def frame_count(total: int, options: ImportOptions) -> int:
    """Frames that will be imported of ``total``."""
    return min(total, options.max_frames) if options.max_frames else total
