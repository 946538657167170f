"""Endoscope recordings on disk: ROS 2 bags (via rosbags, no ROS needed) and npz folders.

Writing: :func:`write_sequence` stores frames (e.g. from :mod:`endo_depth_ros.synth`) as a
rosbag2 (MCAP or sqlite3) with the topics a real endoscope driver plus a ground-truth
source would publish::

    /endoscope/image_raw     sensor_msgs/msg/Image       rgb8
    /endoscope/camera_info   sensor_msgs/msg/CameraInfo  same stamp and frame_id
    /endoscope/depth_gt      sensor_msgs/msg/Image       32FC1, metres, NaN invalid
    /endoscope/pose_gt       geometry_msgs/msg/PoseStamped  optical frame in ``world``
    /endoscope/seg_gt        sensor_msgs/msg/Image       mono8, 0 tissue / 1 instrument

:func:`write_npz` stores the same frames as one ``.npz`` per frame (keys ``rgb``,
``depth``, ``seg``, ``K``, ``pose``, ``stamp``; EndoSynth's layout plus camera and pose).

Reading: :func:`detect_topics` finds the topics by message type and name, and
:func:`read_frames` yields frames with the image, intrinsics and whatever ground truth
exists, pairing messages by header stamp. Both accept a rosbag2 directory, a single
``.mcap``/``.db3`` file, a ROS 1 ``.bag`` or an npz folder. Pixel layouts are decoded
by :mod:`endo_depth_ros.encodings` (shared with the ROS node).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
import re
import sqlite3
from typing import Any, Protocol, Self
import zipfile

import numpy as np

from endo_depth_ros import encodings, outputs
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, BagError, ConfigError
from endo_depth_ros.geometry import (
    PointCloud,
    pose_from_translation_quaternion,
    pose_to_translation_quaternion,
)

#: Topics written by :func:`write_sequence`.
TOPIC_IMAGE = '/endoscope/image_raw'
TOPIC_CAMERA_INFO = '/endoscope/camera_info'
TOPIC_DEPTH = '/endoscope/depth_gt'
TOPIC_POSE = '/endoscope/pose_gt'
TOPIC_SEG = '/endoscope/seg_gt'
#: Frame ids (REP-103 optical frame of the endoscope; ground-truth world).
CAMERA_FRAME = 'endoscope_optical_frame'
WORLD_FRAME = 'world'
#: Storage back ends of rosbag2 that :func:`write_sequence` can write.
STORAGES = ('mcap', 'sqlite3')

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
POSE_TYPE = 'geometry_msgs/msg/PoseStamped'
POINT_CLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'
ODOMETRY_TYPE = 'nav_msgs/msg/Odometry'

_NS_PER_S = 1_000_000_000
#: Ground truth is paired with an image when their stamps differ by at most this (ns).
DEFAULT_SYNC_TOLERANCE_NS = 1_000_000
#: An image waits for its ground truth while at most this many later images are read.
_PAIRING_WINDOW = 32


class FrameLike(Protocol):
    """What :func:`write_sequence` needs from a frame (``synth.SynthFrame`` has it)."""

    @property
    def stamp_ns(self) -> int: ...
    @property
    def rgb(self) -> np.ndarray: ...
    @property
    def depth(self) -> np.ndarray: ...
    @property
    def seg(self) -> np.ndarray: ...
    @property
    def pose(self) -> np.ndarray: ...
    @property
    def intrinsics(self) -> Intrinsics: ...


@dataclass(frozen=True)
class BagTopics:
    """Topic names of one recording (``None``: not present / not used).

    For npz folders the "topics" are the array keys (``rgb``, ``K``, ``depth``, ...).
    """

    image: str
    camera_info: str | None = None
    depth: str | None = None
    pose: str | None = None
    seg: str | None = None


@dataclass(frozen=True, eq=False)
class BagFrame:
    """One image of a recording with its calibration and optional ground truth.

    Attributes:
        index: position of the image in the recording (before start/stride selection).
        stamp_ns: header stamp of the image, int nanoseconds.
        rgb: (H, W, 3) uint8.
        intrinsics: camera of this image.
        frame_id: the image's header frame id.
        depth_gt: (H, W) float32 metres (REP-118 z-depth), NaN invalid, or None.
        pose_gt: (4, 4) float64 ``T_world_camera``, or None.
        seg_gt: (H, W) uint8 labels, or None.
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    intrinsics: Intrinsics
    frame_id: str
    depth_gt: np.ndarray | None = None
    pose_gt: np.ndarray | None = None
    seg_gt: np.ndarray | None = None


# --------------------------------------------------------------------------- writing


def typestore() -> Any:
    """The rosbags type store used for writing (the newest ROS 2 release it knows)."""
    from rosbags.typesys import Stores, get_typestore

    for name in ('ROS2_KILTED', 'ROS2_JAZZY', 'ROS2_HUMBLE'):
        store = getattr(Stores, name, None)
        if store is not None:
            return get_typestore(store)
    raise BagError('rosbags knows none of the ROS 2 releases Kilted, Jazzy or Humble.')


class BagWriter:
    """A rosbag2 written message by message from arrays (rosbags; no ROS needed).

    Each ``write_*`` method converts arrays to one message stamped ``stamp_ns`` (header
    and log time) in ``frame_id`` and appends it to ``topic``; a topic's connection is
    added on its first message, or up front with ``topics``. Use as a context manager::

        with BagWriter(path) as bag:
            bag.write_image(TOPIC_IMAGE, stamp_ns, rgb, 'rgb8')

    Args:
        path: the bag directory to create (rosbag2 layout: ``metadata.yaml`` plus
            ``<name>_0.mcap`` or ``.db3``).
        storage: ``'mcap'`` (default) or ``'sqlite3'``.
        overwrite: replace an existing bag or npz folder at ``path``.
        topics: ``(topic, msgtype)`` connections to add now, in this order, so that they
            exist even if no message is written to them.

    Raises:
        ConfigError: unknown ``storage``.
        OutputError: ``path`` exists and ``overwrite`` is False, or it is not a recording
            (see ``endo_depth_ros.outputs``).
        OSError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path, *, storage: str = 'mcap', overwrite: bool = False,
                 topics: Iterable[tuple[str, str]] = ()) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ConfigError(f'Unknown bag storage {storage!r}; expected one of {STORAGES}.')
        self.path = Path(path)
        outputs.prepare_recording_output(self.path, overwrite=overwrite)
        self._store = typestore()
        self._types = self._store.types
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        for topic, msgtype in topics:
            self._connection(topic, msgtype)

    def write_image(self, topic: str, stamp_ns: int, array: np.ndarray, encoding: str,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/Image`` of ``array`` (e.g. (H, W, 3) uint8 ``'rgb8'``, ``'mono8'``)."""
        self._write(topic, stamp_ns, _image(self._types, self._header(stamp_ns, frame_id),
                                            array, encoding))

    def write_depth(self, topic: str, stamp_ns: int, depth: np.ndarray,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/Image`` 32FC1 of depth (H, W) float32 metres, NaN invalid."""
        self.write_image(topic, stamp_ns, encodings.depth_to_encoding(depth, '32FC1'), '32FC1',
                         frame_id)

    def write_camera_info(self, topic: str, stamp_ns: int, intrinsics: Intrinsics,
                          frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/CameraInfo`` of ``intrinsics`` (pinhole written as plumb_bob, D = 0)."""
        self._write(topic, stamp_ns, _camera_info(
            self._types, self._header(stamp_ns, frame_id), intrinsics))

    def write_pose(self, topic: str, stamp_ns: int, T: np.ndarray,
                   frame_id: str = WORLD_FRAME) -> None:
        """``geometry_msgs/PoseStamped`` of a 4x4 ``T_frame_camera`` (metres)."""
        self._write(topic, stamp_ns, _pose(self._types, self._header(stamp_ns, frame_id), T))

    def write_cloud(self, topic: str, stamp_ns: int, cloud: PointCloud,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/PointCloud2``: x, y, z (and rgb as 0x00RRGGBB) float32, 16-byte points."""
        self._write(topic, stamp_ns, _cloud(self._types, self._header(stamp_ns, frame_id),
                                            cloud))

    def close(self) -> None:
        """Finish the bag (writes ``metadata.yaml``)."""
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        return _header(self._types, stamp_ns, frame_id)

    def _connection(self, topic: str, msgtype: str) -> Any:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._store)
        return self._connections[topic]

    def _write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        self._writer.write(self._connection(topic, msg.__msgtype__), int(stamp_ns),
                           self._store.serialize_cdr(msg, msg.__msgtype__))


def write_sequence(
    path: str | Path,
    frames: Iterable[FrameLike],
    *,
    storage: str = 'mcap',
    overwrite: bool = False,
) -> int:
    """Write frames as a rosbag2 directory with image, camera info and ground-truth topics.

    Args:
        path: the bag directory to create (rosbag2 layout: ``metadata.yaml`` plus
            ``<name>_0.mcap`` or ``.db3``).
        frames: frames with ``stamp_ns``, ``rgb``, ``depth``, ``seg``, ``pose`` and
            ``intrinsics`` (e.g. ``synth.render_sequence(config)``); consumed lazily.
        storage: ``'mcap'`` (default) or ``'sqlite3'``.
        overwrite: replace an existing bag or npz folder at ``path``.

    Returns:
        The number of frames written.

    Raises:
        ConfigError: unknown ``storage``.
        OutputError: ``path`` exists and ``overwrite`` is False, or it is not a recording
            (see ``endo_depth_ros.outputs``).
        OSError: the directory cannot be created or written.
    """
    count = 0
    topics = ((TOPIC_IMAGE, IMAGE_TYPE), (TOPIC_CAMERA_INFO, CAMERA_INFO_TYPE),
              (TOPIC_DEPTH, IMAGE_TYPE), (TOPIC_POSE, POSE_TYPE), (TOPIC_SEG, IMAGE_TYPE))
    with BagWriter(path, storage=storage, overwrite=overwrite, topics=topics) as bag:
        for frame in frames:
            stamp = int(frame.stamp_ns)
            bag.write_image(TOPIC_IMAGE, stamp, frame.rgb, 'rgb8')
            bag.write_camera_info(TOPIC_CAMERA_INFO, stamp, frame.intrinsics)
            bag.write_depth(TOPIC_DEPTH, stamp, frame.depth)
            bag.write_pose(TOPIC_POSE, stamp, frame.pose)
            bag.write_image(TOPIC_SEG, stamp, np.asarray(frame.seg, np.uint8), 'mono8')
            count += 1
    return count


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


def _header(types: dict[str, Any], stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = divmod(int(stamp_ns), _NS_PER_S)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def _image(types: dict[str, Any], header: Any, array: np.ndarray, encoding: str) -> Any:
    data, step = encodings.encode_image(array, encoding)
    return types[IMAGE_TYPE](header=header, height=array.shape[0], width=array.shape[1],
                             encoding=encoding, is_bigendian=0, step=step, data=data)


def _camera_info(types: dict[str, Any], header: Any, intrinsics: Intrinsics) -> Any:
    f = encodings.intrinsics_to_fields(intrinsics)
    model, d = f['distortion_model'], f['d']
    if model in ('', 'none'):
        # A pinhole camera is written the way ROS calibration tools do: plumb_bob, D = 0.
        model, d = 'plumb_bob', np.zeros(5)
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO_TYPE](
        header=header, height=f['height'], width=f['width'], distortion_model=model,
        d=np.asarray(d, np.float64), k=f['k'], r=f['r'], p=f['p'], binning_x=0, binning_y=0,
        roi=roi)


def _pose(types: dict[str, Any], header: Any, T: np.ndarray) -> Any:
    t, q = pose_to_translation_quaternion(T)
    point = types['geometry_msgs/msg/Point'](x=float(t[0]), y=float(t[1]), z=float(t[2]))
    quaternion = types['geometry_msgs/msg/Quaternion'](
        x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return types[POSE_TYPE](
        header=header, pose=types['geometry_msgs/msg/Pose'](position=point,
                                                             orientation=quaternion))


def _cloud(types: dict[str, Any], header: Any, cloud: PointCloud) -> Any:
    # The layout of ros.conversions.cloud_to_pointcloud2 (which builds rclpy messages).
    points = np.asarray(cloud.points, dtype='<f4').reshape(-1, 3)
    packed = np.zeros((points.shape[0], 4), dtype='<f4')
    packed[:, :3] = points
    names = ['x', 'y', 'z']
    if cloud.colors is not None:
        rgb = np.asarray(cloud.colors, dtype=np.uint32).reshape(-1, 3)
        # PCL's packed colour: 0x00RRGGBB in the bytes of a float32.
        packed.view('<u4')[:, 3] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        names.append('rgb')
    point_field = types['sensor_msgs/msg/PointField']
    point_fields = [point_field(name=n, offset=4 * i, datatype=point_field.FLOAT32, count=1)
                    for i, n in enumerate(names)]
    return types[POINT_CLOUD_TYPE](
        header=header, height=cloud.height, width=cloud.width, fields=point_fields,
        is_bigendian=False, point_step=16, row_step=16 * cloud.width,
        data=packed.view(np.uint8).ravel(), is_dense=cloud.is_dense)


# --------------------------------------------------------------------------- reading


def is_npz_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder of ``.npz`` frames (and not a rosbag2 directory)."""
    path = Path(path)
    return (path.is_dir() and not (path / 'metadata.yaml').exists()
            and any(path.glob('*.npz')))


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
        return _npz_topics(path, overrides)
    with _open_reader(path) as reader:
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
                      and not _AUX_IMAGE.search(t)]
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
    pick('pose', None, ('pose_gt', 'gt', 'ground_truth', 'groundtruth', 'pose'))
    return BagTopics(image=image, camera_info=chosen['camera_info'], depth=chosen['depth'],
                     pose=chosen['pose'], seg=chosen['seg'])


_AUX_IMAGE = re.compile(r'depth|disp|seg|mask|label|gt\b|ground_?truth|normal|flow',
                        re.IGNORECASE)
_DEPTH_NAME = re.compile(r'depth', re.IGNORECASE)
_SEG_NAME = re.compile(r'seg|mask|label', re.IGNORECASE)
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


def read_frames(
    path: str | Path,
    topics: BagTopics | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    intrinsics: Intrinsics | None = None,
    sync_tolerance_ns: int = DEFAULT_SYNC_TOLERANCE_NS,
) -> Iterator[BagFrame]:
    """Yield the frames of a recording with intrinsics and ground truth, in order.

    Ground truth (depth, pose, segmentation) is paired with an image by header stamp
    (within ``sync_tolerance_ns``); a frame without a match gets ``None`` there. Camera
    info is paired by stamp too, else the latest one received is used (a camera info at
    its own rate).

    Args:
        path: rosbag2 directory, ``.mcap``/``.db3`` file, ROS 1 ``.bag`` or npz folder.
        topics: the topics to read (default: :func:`detect_topics`).
        start, stop, stride: select images ``start, start + stride, ...`` before ``stop``
            (indices into the recording's images; ``stop=None``: to the end).
        intrinsics: camera to use when the recording has no camera info.
        sync_tolerance_ns: largest stamp difference for pairing ground truth.

    Raises:
        ConfigError: negative ``start``/``stop`` or ``stride`` < 1.
        BagError: missing/corrupt recording, no image topic, no camera info (and no
            ``intrinsics``), or a message that cannot be decoded (the message says
            which topic and stamp).
    """
    if start < 0 or (stop is not None and stop < 0) or stride < 1:
        raise ConfigError(
            f'Frame selection must have start >= 0, stop >= 0 and stride >= 1; got '
            f'start={start}, stop={stop}, stride={stride}.')
    path = Path(path)
    if topics is None:
        topics = detect_topics(path)
    if is_npz_folder(path):
        yield from _read_npz(path, start, stop, stride, intrinsics)
        return
    if topics.camera_info is None and intrinsics is None:
        raise BagError(f'{path}: no camera_info topic; pass the camera intrinsics explicitly.')
    yield from _read_bag(path, topics, start, stop, stride, intrinsics, sync_tolerance_ns)


@dataclass
class _Pending:
    index: int
    stamp_ns: int
    rgb: np.ndarray
    frame_id: str
    waiting: int  # images read since this one


def _read_bag(path: Path, topics: BagTopics, start: int, stop: int | None, stride: int,
              fallback: Intrinsics | None, tolerance: int) -> Iterator[BagFrame]:
    extra = {'depth': topics.depth, 'pose': topics.pose, 'seg': topics.seg}
    expected = [k for k, t in extra.items() if t is not None]
    wanted = {t: k for k, t in extra.items() if t is not None}
    wanted[topics.image] = 'image'
    if topics.camera_info is not None:
        wanted[topics.camera_info] = 'camera_info'
    with _open_reader(path) as reader:
        have = {c.topic for c in reader.connections}
        for topic, kind in wanted.items():
            if topic not in have:
                raise BagError(f'{path}: {kind} topic {topic!r} is not in the bag.')
        connections = [c for c in reader.connections if c.topic in wanted]
        # Messages by stamp; each selected image waits until its partners are in (or
        # until _PAIRING_WINDOW more images went by), then becomes a frame.
        truth: dict[str, dict[int, Any]] = {
            k: {} for k in ('depth', 'pose', 'seg', 'camera_info')}
        pending: list[_Pending] = []
        latest_info: Intrinsics | None = None
        image_index = -1

        def ready(p: _Pending) -> bool:
            if p.waiting > _PAIRING_WINDOW:
                return True
            if any(_match(truth[k], p.stamp_ns, tolerance) is None for k in expected):
                return False
            # A camera info stamped like the image, or any once a later image arrived.
            return (topics.camera_info is None or p.stamp_ns in truth['camera_info']
                    or (p.waiting > 0 and latest_info is not None))

        for conn, _log_time, raw in _messages(reader, connections, path):
            kind = wanted[conn.topic]
            msg = _deserialize(reader, raw, conn, path)
            stamp = _stamp_ns(msg)
            if kind == 'image':
                image_index += 1
                for p in pending:
                    p.waiting += 1
                if _selected(image_index, start, stop, stride):
                    rgb, frame_id = _decode_rgb(msg, conn.msgtype, path, stamp)
                    pending.append(_Pending(image_index, stamp, rgb, frame_id, 0))
                # Older messages can only belong to images already handled.
                _forget(truth, min([stamp, *(p.stamp_ns for p in pending)]) - tolerance)
            elif kind == 'camera_info':
                latest_info = _decode_info(msg, path, stamp)
                truth['camera_info'][stamp] = latest_info
            else:
                truth[kind][stamp] = msg
            while pending and ready(pending[0]):
                yield _finish(pending.pop(0), truth, latest_info, fallback, path, tolerance)
            if stop is not None and image_index >= stop - 1 and not pending:
                return
        while pending:
            yield _finish(pending.pop(0), truth, latest_info, fallback, path, tolerance)


def _selected(index: int, start: int, stop: int | None, stride: int) -> bool:
    return index >= start and (stop is None or index < stop) and (index - start) % stride == 0


def _match(by_stamp: dict[int, Any], stamp: int, tolerance: int) -> Any:
    """The entry stamped ``stamp`` or the nearest within ``tolerance`` (None: none)."""
    if stamp in by_stamp:
        return by_stamp[stamp]
    if tolerance <= 0 or not by_stamp:
        return None
    nearest = min(by_stamp, key=lambda s: abs(s - stamp))
    return by_stamp[nearest] if abs(nearest - stamp) <= tolerance else None


def _forget(truth: dict[str, dict[int, Any]], before_ns: int) -> None:
    """Drop messages stamped before ``before_ns`` (keeps memory bounded on long bags)."""
    for by_stamp in truth.values():
        for stale in [s for s in by_stamp if s < before_ns]:
            del by_stamp[stale]


def _finish(p: _Pending, truth: dict[str, dict[int, Any]], latest_info: Intrinsics | None,
            fallback: Intrinsics | None, path: Path, tolerance: int) -> BagFrame:
    info = _match(truth['camera_info'], p.stamp_ns, 0) or latest_info or fallback
    if info is None:
        raise BagError(f'{path}: no camera_info before image {p.index} '
                       f'(stamp {p.stamp_ns} ns); pass the camera intrinsics explicitly.')
    height, width = p.rgb.shape[:2]
    try:
        encodings.check_size(info, width, height)
    except BadInputError as err:
        raise BagError(f'{path}: image {p.index} (stamp {p.stamp_ns} ns): {err}') from None
    depth_msg = _match(truth['depth'], p.stamp_ns, tolerance)
    pose_msg = _match(truth['pose'], p.stamp_ns, tolerance)
    seg_msg = _match(truth['seg'], p.stamp_ns, tolerance)
    depth = None if depth_msg is None else _decode_depth(depth_msg, path)
    seg = None if seg_msg is None else _decode_mono(seg_msg, path)
    pose = None if pose_msg is None else _decode_pose(pose_msg)
    return BagFrame(index=p.index, stamp_ns=p.stamp_ns, rgb=p.rgb, intrinsics=info,
                    frame_id=p.frame_id, depth_gt=depth, pose_gt=pose, seg_gt=seg)


# --------------------------------------------------------------------------- decoding


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def _decode_rgb(msg: Any, msgtype: str, path: Path, stamp: int) -> tuple[np.ndarray, str]:
    try:
        if msgtype == COMPRESSED_TYPE:
            array = encodings.decode_compressed(msg.format, msg.data)
            if array.ndim == 2:
                encoding = 'mono8' if array.dtype == np.uint8 else 'mono16'
                array = encodings.to_rgb(array, encoding)
            return array, msg.header.frame_id
        array = encodings.decode_image(msg.height, msg.width, msg.encoding, msg.step,
                                       msg.is_bigendian, msg.data)
        return np.array(encodings.to_rgb(array, msg.encoding)), msg.header.frame_id
    except BadInputError as err:
        raise BagError(f'{path}: image at stamp {stamp} ns cannot be decoded: {err}') from None


def _decode_depth(msg: Any, path: Path) -> np.ndarray:
    try:
        array = encodings.decode_image(msg.height, msg.width, msg.encoding, msg.step,
                                       msg.is_bigendian, msg.data)
        return encodings.depth_from_encoding(array, msg.encoding)
    except BadInputError as err:
        raise BagError(
            f'{path}: depth at stamp {_stamp_ns(msg)} ns cannot be decoded: {err}') from None


def _decode_mono(msg: Any, path: Path) -> np.ndarray:
    try:
        array = encodings.decode_image(msg.height, msg.width, msg.encoding, msg.step,
                                       msg.is_bigendian, msg.data)
    except BadInputError as err:
        raise BagError(f'{path}: segmentation at stamp {_stamp_ns(msg)} ns cannot be '
                       f'decoded: {err}') from None
    if array.ndim != 2 or array.dtype != np.uint8:
        raise BagError(f'{path}: segmentation must be mono8/8UC1, got {msg.encoding!r}.')
    return np.array(array)


def _decode_info(msg: Any, path: Path, stamp: int) -> Intrinsics:
    try:
        return encodings.intrinsics_from_fields(msg.width, msg.height, msg.k, msg.d,
                                                msg.distortion_model)
    except BadInputError as err:
        raise BagError(f'{path}: camera_info at stamp {stamp} ns: {err}') from None


def _decode_pose(msg: Any) -> np.ndarray:
    pose = msg.pose.pose if hasattr(msg, 'twist') else msg.pose  # Odometry or PoseStamped
    p, o = pose.position, pose.orientation
    return pose_from_translation_quaternion((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))


# --------------------------------------------------------------------------- rosbags access


class _Reader:
    """Context manager around rosbags' AnyReader turning its failures into BagError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: Any = None

    def __enter__(self) -> Any:
        from rosbags.highlevel import AnyReader

        path = self.path
        if not path.exists():
            raise BagError(f'Bag {str(path)!r} does not exist.')
        if path.is_dir() and not (path / 'metadata.yaml').exists():
            raise BagError(f'{str(path)!r} is neither a rosbag2 directory (no metadata.yaml) '
                           'nor an npz folder (no .npz files).')
        try:
            self.reader = AnyReader([path], default_typestore=typestore())
            self.reader.open()
        except _READ_ERRORS as err:
            raise BagError(f'Cannot read bag {str(path)!r}: {_describe(err)}') from None
        return self.reader

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()


def _open_reader(path: Path) -> _Reader:
    return _Reader(path)


def _messages(reader: Any, connections: list[Any], path: Path) -> Iterator[tuple[Any, int, Any]]:
    try:
        yield from reader.messages(connections=connections)
    except _READ_ERRORS as err:
        raise BagError(f'Bag {str(path)!r} is corrupt: {_describe(err)}') from None


def _deserialize(reader: Any, raw: Any, conn: Any, path: Path) -> Any:
    try:
        return reader.deserialize(raw, conn.msgtype)
    except _READ_ERRORS as err:
        raise BagError(f'{path}: cannot decode a {conn.msgtype} message on {conn.topic}: '
                       f'{_describe(err)}') from None


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error
    from rosbags.serde import SerdeError

    return (AnyReaderError, Reader1Error, Reader2Error, SerdeError, sqlite3.Error, OSError,
            ValueError, KeyError, IndexError, EOFError)


_READ_ERRORS = _read_errors()


# --------------------------------------------------------------------------- npz folders


def _npz_files(path: Path) -> list[Path]:
    return sorted(path.glob('*.npz'))


def _npz_topics(path: Path, overrides: dict[str, str | None]) -> BagTopics:
    first = _npz_files(path)[0]
    keys = set(_load_npz(first))
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


def _load_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BagError(f'Cannot read npz frame {str(file)!r}: {_describe(err)}') from None


def _read_npz(path: Path, start: int, stop: int | None, stride: int,
              fallback: Intrinsics | None) -> Iterator[BagFrame]:
    files = _npz_files(path)
    for index in range(start, len(files) if stop is None else min(stop, len(files)), stride):
        data = _load_npz(files[index])
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
            intrinsics = fallback
        else:
            raise BagError(f'{files[index]}: no "K" array; pass the camera intrinsics.')
        depth = data.get('depth')
        seg = data.get('seg')
        pose = data.get('pose')
        stamp = int(data['stamp']) if 'stamp' in data else index * _NS_PER_S // 30
        yield BagFrame(
            index=index, stamp_ns=stamp, rgb=rgb, intrinsics=intrinsics, frame_id=CAMERA_FRAME,
            depth_gt=None if depth is None else encodings.depth_from_encoding(
                np.asarray(depth, np.float32), '32FC1'),
            pose_gt=None if pose is None else np.asarray(pose, np.float64).reshape(4, 4),
            seg_gt=None if seg is None else np.asarray(seg, np.uint8))
