"""Recordings on disk: rosbag2 (MCAP, sqlite3) and npz folders, written and read back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from endo_depth_ros import bags
from endo_depth_ros.bags.messages import camera_info_msg, header_msg, image_msg, pose_msg
from endo_depth_ros.errors import BagError, ConfigError, OutputError
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence

CONFIG = SynthConfig(width=48, height=40, frames=5, instrument=True)


@pytest.fixture(scope='module')
def frames() -> list[SynthFrame]:
    return list(render_sequence(CONFIG))


@pytest.fixture(scope='module')
def bag(tmp_path_factory: pytest.TempPathFactory, frames: list[SynthFrame]) -> Path:
    path = tmp_path_factory.mktemp('bags') / 'flight'
    bags.write_sequence(path, frames)
    return path


def _assert_same(read: list[bags.BagFrame], written: list[SynthFrame]) -> None:
    assert len(read) == len(written)
    for r, w in zip(read, written, strict=True):
        assert r.stamp_ns == w.stamp_ns
        assert r.frame_id == bags.CAMERA_FRAME
        assert np.array_equal(r.rgb, w.rgb)
        assert r.depth_gt is not None and r.seg_gt is not None and r.pose_gt is not None
        assert np.array_equal(r.depth_gt, w.depth, equal_nan=True)
        assert np.array_equal(r.seg_gt, w.seg)
        np.testing.assert_allclose(r.pose_gt, w.pose, atol=1e-12)
        np.testing.assert_array_equal(r.intrinsics.K, w.intrinsics.K)
        assert not r.intrinsics.is_distorted


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_written_bag_reads_back_frame_for_frame(tmp_path: Path, frames: list[SynthFrame],
                                                storage: str) -> None:
    path = tmp_path / 'bag'
    assert bags.write_sequence(path, frames, storage=storage) == len(frames)
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert len(list(path.glob(f'*{suffix}'))) == 1
    _assert_same(list(bags.read_frames(path)), frames)


def test_storage_file_itself_can_be_read(bag: Path, frames: list[SynthFrame]) -> None:
    mcap = next(bag.glob('*.mcap'))
    _assert_same(list(bags.read_frames(mcap)), frames)


def test_npz_folder_round_trip_keeps_endosynth_keys(tmp_path: Path,
                                                    frames: list[SynthFrame]) -> None:
    path = tmp_path / 'npz'
    assert bags.write_npz(path, frames) == len(frames)
    files = sorted(path.glob('*.npz'))
    assert len(files) == len(frames)
    with np.load(files[0]) as data:
        assert set(data.files) == {'rgb', 'depth', 'seg', 'K', 'pose', 'stamp'}
    assert bags.detect_topics(path) == bags.BagTopics(
        image='rgb', camera_info='K', depth='depth', pose='pose', seg='seg')
    _assert_same(list(bags.read_frames(path)), frames)


def test_detect_topics_finds_all_five_written_topics(bag: Path) -> None:
    assert bags.detect_topics(bag) == bags.BagTopics(
        image=bags.TOPIC_IMAGE, camera_info=bags.TOPIC_CAMERA_INFO, depth=bags.TOPIC_DEPTH,
        pose=bags.TOPIC_POSE, seg=bags.TOPIC_SEG)


def test_empty_override_drops_a_topic_and_its_ground_truth(bag: Path) -> None:
    topics = bags.detect_topics(bag, depth='', seg='')
    assert topics.depth is None and topics.seg is None
    frame = next(bags.read_frames(bag, topics))
    assert frame.depth_gt is None and frame.seg_gt is None and frame.pose_gt is not None


@pytest.mark.parametrize(('overrides', 'error', 'message'), [
    ({'image': '/nope'}, BagError, "topic '/nope' \\(given for image\\) is not in the bag"),
    ({'image': bags.TOPIC_POSE}, BagError, 'is a geometry_msgs/msg/PoseStamped, expected'),
    ({'colour': '/x'}, ConfigError, r"Unknown topic override\(s\) \['colour'\]"),
])
def test_bad_topic_overrides_are_rejected(bag: Path, overrides: dict, error: type,
                                          message: str) -> None:
    with pytest.raises(error, match=message):
        bags.detect_topics(bag, **overrides)


def test_start_stop_stride_select_images_by_index(bag: Path) -> None:
    assert [f.index for f in bags.read_frames(bag, start=1, stop=5, stride=2)] == [1, 3]
    assert [f.index for f in bags.read_frames(bag, start=3)] == [3, 4]
    assert list(bags.read_frames(bag, start=7)) == []


def test_bad_frame_selection_is_a_config_error(bag: Path) -> None:
    with pytest.raises(ConfigError, match='stride >= 1'):
        list(bags.read_frames(bag, stride=0))


def test_missing_bag_raises_bag_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match='does not exist'):
        bags.detect_topics(tmp_path / 'absent')


def test_corrupt_mcap_raises_bag_error(tmp_path: Path) -> None:
    path = tmp_path / 'broken.mcap'
    path.write_bytes(b'\x89MCAP0\r\n' + b'garbage' * 20)
    with pytest.raises(BagError, match='Cannot read bag'):
        bags.detect_topics(path)


def test_truncated_bag_raises_bag_error(tmp_path: Path, bag: Path) -> None:
    copy = tmp_path / 'cut'
    copy.mkdir()
    (copy / 'metadata.yaml').write_bytes((bag / 'metadata.yaml').read_bytes())
    data = next(bag.glob('*.mcap'))
    (copy / data.name).write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagError, match=r'cut'):
        list(bags.read_frames(copy))


def test_folder_that_is_no_recording_raises_bag_error(tmp_path: Path) -> None:
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(BagError, match='neither a rosbag2 directory'):
        bags.detect_topics(tmp_path)


def _write_custom_bag(path: Path, frames: list[SynthFrame]) -> None:
    """A camera driver's bag: compressed images, one camera info, 16-bit depth on every
    second frame, no pose or segmentation."""
    store = bags.typestore()
    types = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection('/cam/color/image_raw/compressed', bags.COMPRESSED_TYPE,
                                      typestore=store)
        info = writer.add_connection('/cam/color/camera_info', bags.CAMERA_INFO_TYPE,
                                     typestore=store)
        depth = writer.add_connection('/cam/aligned_depth/image_raw', bags.IMAGE_TYPE,
                                      typestore=store)
        for i, f in enumerate(frames):
            header = header_msg(types, f.stamp_ns, 'cam')
            if i == 0:
                msg = camera_info_msg(types, header, f.intrinsics)
                writer.write(info, f.stamp_ns, store.serialize_cdr(msg, msg.__msgtype__))
            png = cv2.imencode('.png', cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))[1]
            msg = types[bags.COMPRESSED_TYPE](header=header, format='rgb8; png compressed bgr8',
                                              data=png.ravel())
            writer.write(image, f.stamp_ns, store.serialize_cdr(msg, msg.__msgtype__))
            if i % 2 == 0:
                mm = np.where(np.isfinite(f.depth), np.rint(f.depth * 1e3), 0).astype(np.uint16)
                msg = image_msg(types, header, mm, '16UC1')
                writer.write(depth, f.stamp_ns + 1, store.serialize_cdr(msg, msg.__msgtype__))


def test_foreign_bag_topics_are_detected_and_paired_by_stamp(
        tmp_path: Path, frames: list[SynthFrame]) -> None:
    path = tmp_path / 'driver'
    _write_custom_bag(path, frames)
    topics = bags.detect_topics(path)
    assert topics == bags.BagTopics(
        image='/cam/color/image_raw/compressed', camera_info='/cam/color/camera_info',
        depth='/cam/aligned_depth/image_raw', pose=None, seg=None)
    read = list(bags.read_frames(path, topics))
    assert [f.index for f in read] == list(range(len(frames)))
    for r, w in zip(read, frames, strict=True):
        assert np.array_equal(r.rgb, w.rgb)
        assert r.intrinsics.size == w.intrinsics.size
        assert r.pose_gt is None and r.seg_gt is None
        if r.index % 2 == 0:
            assert r.depth_gt is not None
            valid = np.isfinite(w.depth)
            np.testing.assert_allclose(r.depth_gt[valid], w.depth[valid], atol=5e-4)
        else:
            assert r.depth_gt is None


def test_bag_without_image_topic_raises_bag_error(tmp_path: Path,
                                                  frames: list[SynthFrame]) -> None:
    store = bags.typestore()
    path = tmp_path / 'poses_only'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/pose', bags.POSE_TYPE, typestore=store)
        msg = pose_msg(store.types, header_msg(store.types, 1, 'world'), frames[0].pose)
        writer.write(conn, 1, store.serialize_cdr(msg, msg.__msgtype__))
    with pytest.raises(BagError, match='no colour image topic'):
        bags.detect_topics(path)


def test_bag_without_camera_info_needs_explicit_intrinsics(
        tmp_path: Path, bag: Path, frames: list[SynthFrame]) -> None:
    topics = bags.detect_topics(bag, camera_info='')
    with pytest.raises(BagError, match='no camera_info topic'):
        list(bags.read_frames(bag, topics))
    read = list(bags.read_frames(bag, topics, intrinsics=frames[0].intrinsics))
    assert read[0].intrinsics == frames[0].intrinsics


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path,
                                                  frames: list[SynthFrame]) -> None:
    path = tmp_path / 'bag'
    bags.write_sequence(path, frames[:1])
    with pytest.raises(OutputError, match='already exists'):
        bags.write_sequence(path, frames)
    assert bags.write_sequence(path, frames, overwrite=True) == len(frames)
    assert len(list(bags.read_frames(path))) == len(frames)


def test_overwrite_refuses_folders_that_are_not_recordings(tmp_path: Path,
                                                           frames: list[SynthFrame]) -> None:
    (tmp_path / 'thesis.tex').write_text('keep me')
    with pytest.raises(OutputError, match='Refusing to overwrite'):
        bags.write_npz(tmp_path, frames, overwrite=True)
    assert (tmp_path / 'thesis.tex').exists()


def test_unknown_storage_is_a_config_error(tmp_path: Path, frames: list[SynthFrame]) -> None:
    with pytest.raises(ConfigError, match="Unknown bag storage 'rosbag1'"):
        bags.write_sequence(tmp_path / 'b', frames, storage='rosbag1')
