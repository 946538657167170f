"""Reading recordings: frames with their camera and ground truth, paired by stamp."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endo_depth_ros import encodings
from endo_depth_ros.bags.access import RecordingReader, describe_error, deserialize, read_messages
from endo_depth_ros.bags.layout import (
    COMPRESSED_TYPE,
    DEFAULT_SYNC_TOLERANCE_NS,
    IMAGE_TYPE,
    NS_PER_S,
    TOPIC_GT_INFO,
    TOPIC_VIEW,
    BagFrame,
    BagTopics,
    CameraGuess,
    camera_for_image,
    check_units,
)
from endo_depth_ros.bags.npz import is_npz_folder, load_npz, npz_files, read_npz
from endo_depth_ros.bags.topics import detect_topics
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, BagError, ConfigError
from endo_depth_ros.geometry import pose_from_translation_quaternion
from endo_depth_ros.scale import baseline_from_projection

#: An image waits for its ground truth while at most this many later images are read.
_PAIRING_WINDOW = 32


@dataclass(frozen=True)
class RecordingInfo:
    """What a recording says about its ground truth and optics (importers write it).

    Attributes:
        gt_units: ``'metric'`` (depth and poses in metres) or ``'relative'`` (an unknown
            unit: SfM reconstructions, normalised depth).
        view: (H, W) bool field of view of the endoscope, or None when not recorded.
    """

    gt_units: str = 'metric'
    view: np.ndarray | None = None


def read_recording_info(path: str | Path) -> RecordingInfo:
    """The ``TOPIC_GT_INFO`` and ``TOPIC_VIEW`` messages of a recording (defaults if absent).

    npz folders give them as the arrays ``gt_units`` (a string) and ``view`` (bool) of
    their first frame.

    Raises:
        BagError: unreadable recording or an invalid message.
    """
    path = Path(path)
    if is_npz_folder(path):
        data = load_npz(npz_files(path)[0])
        units = str(data['gt_units']) if 'gt_units' in data else 'metric'
        view = np.asarray(data['view'], dtype=bool) if 'view' in data else None
        return RecordingInfo(check_units(units, path), view)
    units, view = 'metric', None
    with RecordingReader(path) as reader:
        wanted = [c for c in reader.connections if c.topic in (TOPIC_GT_INFO, TOPIC_VIEW)]
        if not wanted:  # (an empty selection would mean every connection to rosbags)
            return RecordingInfo()
        seen: set[str] = set()
        for conn, _log_time, raw in read_messages(reader, wanted, path):
            if conn.topic in seen:
                continue
            seen.add(conn.topic)
            msg = deserialize(reader, raw, conn, path)
            if conn.topic == TOPIC_GT_INFO:
                units = _units_from_yaml(str(getattr(msg, 'data', '')), path)
            else:
                view = _decode_mono(msg, path) > 0
            if len(seen) == len(wanted):
                break
    return RecordingInfo(units, view)


def _units_from_yaml(text: str, path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise BagError(f'{path}: {TOPIC_GT_INFO} is not YAML: {describe_error(err)}') from None
    if not isinstance(data, dict):
        raise BagError(f'{path}: {TOPIC_GT_INFO} must be a YAML mapping, got {text[:60]!r}.')
    return check_units(str(data.get('depth_units', 'metric')), path)


def read_frames(
    path: str | Path,
    topics: BagTopics | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    intrinsics: Intrinsics | CameraGuess | None = None,
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
        yield from read_npz(path, start, stop, stride, intrinsics)
        return
    if topics.camera_info is None and intrinsics is None:
        raise BagError(f'{path}: no camera_info topic; pass the camera intrinsics '
                       '(--fx/--fy/--cx/--cy or --camera-info FILE.yaml).')
    yield from _read_bag(path, topics, start, stop, stride, intrinsics, sync_tolerance_ns)


@dataclass
class _Pending:
    index: int
    stamp_ns: int
    rgb: np.ndarray
    frame_id: str
    waiting: int  # images read since this one


def _read_bag(path: Path, topics: BagTopics, start: int, stop: int | None, stride: int,
              fallback: Intrinsics | CameraGuess | None, tolerance: int) -> Iterator[BagFrame]:
    extra = {'depth': topics.depth, 'pose': topics.pose, 'seg': topics.seg,
             'right': topics.right_image, 'right_info': topics.right_camera_info,
             'kinematics': topics.kinematics}
    expected = [k for k, t in extra.items() if t is not None]
    wanted = {t: k for k, t in extra.items() if t is not None}
    wanted[topics.image] = 'image'
    if topics.camera_info is not None:
        wanted[topics.camera_info] = 'camera_info'
    with RecordingReader(path) as reader:
        have = {c.topic for c in reader.connections}
        for topic, kind in wanted.items():
            if topic not in have:
                raise BagError(f'{path}: {kind} topic {topic!r} is not in the bag.')
        connections = [c for c in reader.connections if c.topic in wanted]
        # Messages by stamp; each selected image waits until its partners are in (or
        # until _PAIRING_WINDOW more images went by), then becomes a frame.
        truth: dict[str, dict[int, Any]] = {
            k: {} for k in ('depth', 'pose', 'seg', 'camera_info', *extra)}
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

        for conn, _log_time, raw in read_messages(reader, connections, path):
            kind = wanted[conn.topic]
            msg = deserialize(reader, raw, conn, path)
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
            fallback: Intrinsics | CameraGuess | None, path: Path, tolerance: int) -> BagFrame:
    height, width = p.rgb.shape[:2]
    info = (_match(truth['camera_info'], p.stamp_ns, 0) or latest_info
            or (None if fallback is None else camera_for_image(fallback, width, height, path)))
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
    right, baseline = _decode_right(truth, p, path, tolerance)
    kin_msg = _match(truth['kinematics'], p.stamp_ns, tolerance)
    kinematics = None if kin_msg is None else (_stamp_ns(kin_msg), _decode_pose(kin_msg))
    return BagFrame(index=p.index, stamp_ns=p.stamp_ns, rgb=p.rgb, intrinsics=info,
                    frame_id=p.frame_id, depth_gt=depth, pose_gt=pose, seg_gt=seg,
                    right_rgb=right, baseline_m=baseline, kinematics=kinematics)


def _decode_right(truth: dict[str, dict[int, Any]], p: _Pending, path: Path,
                  tolerance: int) -> tuple[np.ndarray | None, float]:
    """The right image paired with ``p`` and the baseline of its camera_info."""
    msg = _match(truth['right'], p.stamp_ns, tolerance)
    info = _match(truth['right_info'], p.stamp_ns, tolerance)
    if msg is None or info is None:
        return None, 0.0
    stamp = _stamp_ns(msg)
    rgb, _ = _decode_rgb(msg, COMPRESSED_TYPE if hasattr(msg, 'format') else IMAGE_TYPE,
                         path, stamp)
    try:
        baseline = baseline_from_projection(info.p)
    except BadInputError as err:
        raise BagError(f'{path}: right camera_info at stamp {stamp} ns: {err}') from None
    return rgb, baseline


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


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
