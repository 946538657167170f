"""Public endoscopy datasets, in their own formats, to standard bags.

One module per dataset (``scared``, ``hamlyn``, ``c3vd``, ``simcol3d``, ``endosynth``,
``colmap``), each with ``open_dataset(src, options) -> Dataset`` yielding frames in the
package's conventions (metres, REP-103 optical poses, NaN for unknown depth).
:func:`import_dataset` writes them with the topics ``endo-depth-eval`` reads
(``bags.TOPIC_*``): image, camera info, depth and pose ground truth where the dataset has
them, ``/endoscope/ground_truth_info`` (``depth_units: metric|relative``) and, when known,
the field of view ``/endoscope/field_of_view``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import shutil
from types import ModuleType

import cv2
import numpy as np

from endo_depth_ros import bags, outputs
from endo_depth_ros.datasets import c3vd, colmap, endosynth, hamlyn, scared, simcol3d
from endo_depth_ros.datasets.common import Dataset, ImportedFrame, ImportOptions
from endo_depth_ros.errors import DatasetError

#: Importers by format name.
FORMATS: dict[str, ModuleType] = {
    'scared': scared, 'hamlyn': hamlyn, 'c3vd': c3vd, 'simcol3d': simcol3d,
    'endosynth': endosynth, 'colmap': colmap,
}

__all__ = ['FORMATS', 'Dataset', 'ImportOptions', 'ImportedFrame', 'import_dataset',
           'open_dataset', 'read_view_mask']


def open_dataset(fmt: str, src: str | Path, options: ImportOptions) -> Dataset:
    """Open ``src`` as a dataset of format ``fmt`` (frames are read lazily).

    Raises:
        DatasetError: unknown format, or missing / malformed files (one line).
    """
    if fmt not in FORMATS:
        raise DatasetError(f'Unknown dataset format {fmt!r}; expected one of '
                           f'{", ".join(FORMATS)}.')
    src = Path(src)
    if not src.exists():
        raise DatasetError(f'{str(src)!r} does not exist.')
    dataset: Dataset = FORMATS[fmt].open_dataset(src, options)
    return dataset


def read_view_mask(path: str | Path) -> np.ndarray:
    """(H, W) bool field of view from an image file (non-zero = inside)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f'Cannot read the field-of-view mask {str(path)!r}.')
    return mask > 0


def import_dataset(
    fmt: str,
    src: str | Path,
    out: str | Path,
    options: ImportOptions | None = None,
    *,
    overwrite: bool = False,
    storage: str = 'mcap',
    view: np.ndarray | None = None,
    progress: Callable[[int | None], Callable[[], object]] | None = None,
) -> int:
    """Convert a dataset to a bag that ``endo-depth-eval`` reads.

    Args:
        fmt: one of ``FORMATS``.
        src: the dataset folder (what each module's docstring describes).
        out: the bag to write (a new rosbag2 folder; an old recording with ``overwrite``).
        options: camera, frame rate, frame limit, image folder.
        overwrite: replace an existing recording at ``out``.
        storage: ``'mcap'`` or ``'sqlite3'``.
        view: (H, W) bool field of view to record (overrides the dataset's).
        progress: called once with the frame count; returns a function called per frame.

    Returns:
        The number of frames written.

    Raises:
        DatasetError: bad dataset; OutputError: ``out`` may not be written; BagError.
    """
    options = options or ImportOptions()
    outputs.check_recording_output(out, overwrite=overwrite, inputs=[src])
    dataset = open_dataset(fmt, src, options)
    view = dataset.view if view is None else view
    topics = [(bags.TOPIC_IMAGE, bags.IMAGE_TYPE), (bags.TOPIC_CAMERA_INFO, bags.CAMERA_INFO_TYPE),
              (bags.TOPIC_GT_INFO, bags.STRING_TYPE)]
    if dataset.has_depth:
        topics.append((bags.TOPIC_DEPTH, bags.IMAGE_TYPE))
    if dataset.has_pose:
        topics.append((bags.TOPIC_POSE, bags.POSE_TYPE))
    if view is not None:
        topics.append((bags.TOPIC_VIEW, bags.IMAGE_TYPE))
    step = progress(dataset.count) if progress is not None else None
    # Only once the writer has prepared ``out`` is the folder ours to remove: a refusal
    # raised while preparing it must leave whatever is there untouched.
    bag = bags.BagWriter(out, storage=storage, overwrite=overwrite, topics=topics)
    try:
        with bag:
            count = _write(dataset, bag, view, step)
        if count == 0:
            raise DatasetError(f'{src}: no frame was imported.')
    except BaseException:
        # A half-written or empty bag would later read as a recording: remove what we made.
        shutil.rmtree(out, ignore_errors=True)
        raise
    return count


def _write(dataset: Dataset, bag: bags.BagWriter, view: np.ndarray | None,
           step: Callable[[], object] | None) -> int:
    count = 0
    for frame in dataset.frames:
        stamp = frame.stamp_ns
        if count == 0:
            bag.write_string(bags.TOPIC_GT_INFO, stamp, bags.gt_info_yaml(dataset.gt_units))
            if view is not None:
                if view.shape != frame.rgb.shape[:2]:
                    raise DatasetError(
                        f'The field-of-view mask is {view.shape[1]}x{view.shape[0]} but '
                        f'the images are {frame.rgb.shape[1]}x{frame.rgb.shape[0]}.')
                bag.write_image(bags.TOPIC_VIEW, stamp, view.astype(np.uint8) * 255,
                                'mono8')
        bag.write_image(bags.TOPIC_IMAGE, stamp, frame.rgb, 'rgb8')
        bag.write_camera_info(bags.TOPIC_CAMERA_INFO, stamp, frame.intrinsics)
        if dataset.has_depth and frame.depth is not None:
            bag.write_depth(bags.TOPIC_DEPTH, stamp, frame.depth)
        if dataset.has_pose and frame.pose is not None:
            bag.write_pose(bags.TOPIC_POSE, stamp, frame.pose)
        count += 1
        if step is not None:
            step()
    return count
