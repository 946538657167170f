"""Which topics of a recording are the image, its camera and its ground truth."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
import re

from endo_depth_ros.bags.access import RecordingReader
from endo_depth_ros.bags.layout import (
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    ODOMETRY_TYPE,
    POSE_TYPE,
    BagTopics,
)
from endo_depth_ros.bags.npz import is_npz_folder, npz_topics
from endo_depth_ros.errors import BagError, ConfigError


def detect_topics(path: str | Path, **overrides: str | None) -> BagTopics:
    """Find the image, camera info and ground-truth topics of a recording.

    Topics are recognised by message type, then by name: the colour image is the
    ``Image``/``CompressedImage`` topic whose name does not mention depth, segmentation,
    masks or disparity (``image_raw``/``image_rect_color``/``image_color`` preferred); the
    depth is an ``Image`` topic whose name mentions depth (``*_gt``/``ground_truth``
    preferred); the pose a ``PoseStamped`` or ``Odometry`` topic (ground truth preferred);
    segmentation an ``Image`` topic named ``seg*``/``mask``/``label``. Camera info and
    ground truth in the image's namespace win ties.

    Args:
        path: rosbag2 directory, ``.mcap``/``.db3`` file, ROS 1 ``.bag`` or npz folder.
        **overrides: ``image``, ``camera_info``, ``depth``, ``pose``, ``seg``: a topic
            name to use instead of the detected one, ``''`` to ignore that topic, or
            ``None`` to detect it.

    Raises:
        ConfigError: an unknown override key.
        BagError: missing or corrupt recording, no image topic, or an override naming a
            topic that is absent or of the wrong type.
    """
    valid_keys = {f.name for f in fields(BagTopics)}
    unknown = sorted(set(overrides) - valid_keys)
    if unknown:
        raise ConfigError(f'Unknown topic override(s) {unknown}; expected {sorted(valid_keys)}.')
    path = Path(path)
    if is_npz_folder(path):
        return npz_topics(path, overrides)
    with RecordingReader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
    return _choose_topics(path, types, overrides)


def _choose_topics(path: Path, types: dict[str, str],
                   overrides: dict[str, str | None]) -> BagTopics:
    allowed = {
        'image': (IMAGE_TYPE, COMPRESSED_TYPE),
        'camera_info': (CAMERA_INFO_TYPE,),
        'depth': (IMAGE_TYPE,),
        'pose': (POSE_TYPE, ODOMETRY_TYPE),
        'seg': (IMAGE_TYPE,),
        'right_image': (IMAGE_TYPE, COMPRESSED_TYPE),
        'right_camera_info': (CAMERA_INFO_TYPE,),
        'kinematics': (POSE_TYPE,),
    }
    chosen: dict[str, str | None] = {}
    for key, wanted in overrides.items():
        if wanted is None:
            continue
        if wanted == '':
            chosen[key] = None
            continue
        if wanted not in types:
            raise BagError(f'{path}: topic {wanted!r} (given for {key}) is not in the bag; '
                           f'it has {sorted(types)}.')
        if types[wanted] not in allowed[key]:
            raise BagError(f'{path}: topic {wanted!r} (given for {key}) is a '
                           f'{types[wanted]}, expected {" or ".join(allowed[key])}.')
        chosen[key] = wanted
    if 'image' not in chosen:
        candidates = [t for t, ty in types.items() if ty in allowed['image']
                      and not _AUX_IMAGE.search(t) and not _RIGHT_NAME.search(t)]
        chosen['image'] = _best(candidates, _IMAGE_PREFERENCE)
    image = chosen['image']
    if image is None:
        images = sorted(t for t, ty in types.items() if ty in allowed['image'])
        raise BagError(f'{path}: no colour image topic (sensor_msgs/msg/Image or '
                       f'CompressedImage) found; image topics: {images}, all topics: '
                       f'{sorted(types)}. Name one explicitly (image=... / --image-topic).')
    namespace = image.rsplit('/', 1)[0]
    taken = {image, *(t for t in chosen.values() if t)}

    def pick(key: str, match: re.Pattern[str] | None, prefer: tuple[str, ...]) -> None:
        if key in chosen:
            return
        candidates = [t for t, ty in types.items() if ty in allowed[key] and t not in taken
                      and (match is None or match.search(t))]
        best = _best(candidates, prefer, namespace)
        chosen[key] = best
        if best is not None:
            taken.add(best)

    pick('camera_info', None, ('camera_info',))
    pick('depth', _DEPTH_NAME, ('depth_gt', 'gt', 'ground_truth', 'depth'))
    pick('seg', _SEG_NAME, ('seg_gt', 'seg', 'mask', 'label'))
    pick('kinematics', _KINEMATICS_NAME, ('kinematics',))
    pick('pose', None, ('pose_gt', 'gt', 'ground_truth', 'groundtruth', 'pose'))
    # The right camera of a stereo pair: an image topic named right, its camera_info.
    if 'right_image' not in chosen:
        candidates = [t for t, ty in types.items() if ty in allowed['right_image']
                      and _RIGHT_NAME.search(t) and not _AUX_IMAGE.search(t) and t not in taken]
        chosen['right_image'] = _best(candidates, _IMAGE_PREFERENCE)
    right = chosen['right_image']
    if right is not None and 'right_camera_info' not in chosen:
        candidates = [t for t, ty in types.items() if ty == CAMERA_INFO_TYPE and t not in taken]
        chosen['right_camera_info'] = _best(candidates, ('camera_info',),
                                            right.rsplit('/', 1)[0])
    return BagTopics(image=image, camera_info=chosen['camera_info'], depth=chosen['depth'],
                     pose=chosen['pose'], seg=chosen['seg'], right_image=right,
                     right_camera_info=chosen.get('right_camera_info'),
                     kinematics=chosen['kinematics'])


_AUX_IMAGE = re.compile(r'depth|disp|seg|mask|label|gt\b|ground_?truth|normal|flow|'
                        r'field_of_view|fov',
                        re.IGNORECASE)
_DEPTH_NAME = re.compile(r'depth', re.IGNORECASE)
_SEG_NAME = re.compile(r'seg|mask|label', re.IGNORECASE)
_RIGHT_NAME = re.compile(r'right', re.IGNORECASE)
_KINEMATICS_NAME = re.compile(r'kinematic', re.IGNORECASE)
_IMAGE_PREFERENCE = ('image_raw', 'image_rect_color', 'image_color', 'image_rect', 'image',
                     'rgb', 'color')


def _best(candidates: list[str], prefer: tuple[str, ...], namespace: str | None = None
          ) -> str | None:
    """The candidate in ``namespace`` whose name matches the earliest preference."""
    if not candidates:
        return None

    def rank(topic: str) -> tuple[int, int, int, str]:
        name = topic.lower()
        pref = next((i for i, p in enumerate(prefer) if p in name), len(prefer))
        same_ns = 0 if namespace is not None and topic.startswith(namespace + '/') else 1
        return same_ns, pref, topic.count('/'), topic

    return min(candidates, key=rank)
