"""``endo-depth-synth``: bags a ROS tool can read, npz frames, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from endo_depth_ros.cli.synth import main
from endo_depth_ros.encodings import decode_image

FRAMES = 4
SIZE = ['--width', '48', '--height', '40']


def _read_all(path: Path) -> dict[str, list]:
    """Every message of a bag through plain rosbags: topic -> [(log time, type, msg)]."""
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for conn, log_time, raw in reader.messages():
            out.setdefault(conn.topic, []).append(
                (log_time, conn.msgtype, reader.deserialize(raw, conn.msgtype)))
    return out


def test_cli_bag_has_five_topics_with_matching_stamps_and_sane_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'flight'
    assert main([str(out), '--frames', str(FRAMES), *SIZE, '--seed', '3', '--instrument',
                 '--fps', '25', '--quiet']) == 0
    assert f'wrote {FRAMES} frames (48x40, seed 3)' in capsys.readouterr().out
    messages = _read_all(out)
    assert {topic: {m[1] for m in msgs} for topic, msgs in messages.items()} == {
        '/endoscope/image_raw': {'sensor_msgs/msg/Image'},
        '/endoscope/camera_info': {'sensor_msgs/msg/CameraInfo'},
        '/endoscope/depth_gt': {'sensor_msgs/msg/Image'},
        '/endoscope/pose_gt': {'geometry_msgs/msg/PoseStamped'},
        '/endoscope/seg_gt': {'sensor_msgs/msg/Image'},
    }
    stamps = {}
    for topic, msgs in messages.items():
        assert len(msgs) == FRAMES
        header_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in msgs]
        assert header_stamps == [log_time for log_time, _, _ in msgs]
        stamps[topic] = header_stamps
        expected_frame = 'world' if topic.endswith('pose_gt') else 'endoscope_optical_frame'
        assert {m.header.frame_id for _, _, m in msgs} == {expected_frame}
    assert len({tuple(s) for s in stamps.values()}) == 1
    assert np.diff(stamps['/endoscope/image_raw']).tolist() == [40_000_000] * (FRAMES - 1)

    def pixels(msg: object) -> np.ndarray:
        return decode_image(msg.height, msg.width, msg.encoding, msg.step,  # type: ignore
                            msg.is_bigendian, msg.data)  # type: ignore

    for (_, _, image), (_, _, depth), (_, _, seg), (_, _, info), (_, _, pose) in zip(
            *(messages[f'/endoscope/{t}'] for t in
              ('image_raw', 'depth_gt', 'seg_gt', 'camera_info', 'pose_gt')), strict=True):
        assert (image.encoding, depth.encoding, seg.encoding) == ('rgb8', '32FC1', 'mono8')
        assert (image.width, image.height) == (info.width, info.height) == (48, 40)
        rgb = pixels(image)
        assert rgb.shape == (40, 48, 3) and 20 < rgb.mean() < 235
        metres = pixels(depth)
        valid = metres[np.isfinite(metres)]
        assert valid.size > 0.9 * metres.size and valid.min() > 0.003 and valid.max() <= 0.3
        labels = pixels(seg)
        assert set(np.unique(labels)) <= {0, 1} and labels.any()
        assert info.distortion_model == 'plumb_bob' and not np.any(info.d)
        assert info.k[0] > 0 and info.k[2] == pytest.approx(23.5)
        q = pose.pose.orientation
        assert np.hypot(np.hypot(q.x, q.y), np.hypot(q.z, q.w)) == pytest.approx(1.0)


def test_cli_sqlite3_storage_writes_a_db3_bag(tmp_path: Path) -> None:
    out = tmp_path / 'flight'
    assert main([str(out), '--frames', '2', *SIZE, '--storage', 'sqlite3', '--quiet']) == 0
    assert len(list(out.glob('*.db3'))) == 1
    messages = _read_all(out)
    assert len(messages) == 5 and all(len(m) == 2 for m in messages.values())


def test_cli_npz_format_writes_one_file_per_frame(tmp_path: Path) -> None:
    out = tmp_path / 'frames'
    assert main([str(out), '--frames', '3', *SIZE, '--format', 'npz', '--fov-mask',
                 '--quiet']) == 0
    files = sorted(out.glob('*.npz'))
    assert [f.name for f in files] == [f'frame_{i:06d}.npz' for i in range(3)]
    with np.load(files[0]) as data:
        assert data['rgb'].shape == (40, 48, 3) and data['depth'].dtype == np.float32
        assert data['K'].shape == (3, 3) and data['pose'].shape == (4, 4)
        assert np.isnan(data['depth'][0, 0]) and (data['rgb'][0, 0] == 0).all()


def test_cli_writes_a_contact_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / 'sheet.png'
    assert main([str(tmp_path / 'b'), '--frames', '4', *SIZE, '--contact-sheet', str(sheet),
                 '--quiet']) == 0
    assert sheet.read_bytes()[:4] == b'\x89PNG'


def test_cli_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / 'b'), '--frames', '2', *SIZE]) == 0
    assert 'frame' in capsys.readouterr().err


@pytest.mark.parametrize(('args', 'message'), [
    (['--width', '0', '--height', '40'], 'width must be a positive integer, got 0'),
    (['--height', '-5', '--width', '48'], 'height must be a positive integer, got -5'),
    (['--frames', '0', *SIZE], 'frames must be a positive integer, got 0'),
    (['--fps', '0', *SIZE], 'fps must be a positive number'),
])
def test_cli_bad_sizes_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], message: str) -> None:
    out = tmp_path / 'b'
    assert main([str(out), *args, '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('endo-depth-synth: error: ') and message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_refuses_existing_output_without_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'b'
    assert main([str(out), '--frames', '1', *SIZE, '--quiet']) == 0
    assert main([str(out), '--frames', '1', *SIZE, '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert 'already exists' in err and '--overwrite' in err and len(err.splitlines()) == 1
    assert main([str(out), '--frames', '2', *SIZE, '--quiet', '--overwrite']) == 0


def test_cli_unwritable_output_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / 'file.txt'
    blocker.write_text('not a folder')
    assert main([str(blocker / 'bag'), '--frames', '1', *SIZE, '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('endo-depth-synth: error: ') and len(err.splitlines()) == 1
    assert 'file.txt' in err


def test_cli_unwritable_contact_sheet_fails_before_rendering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / 'file.txt'
    blocker.write_text('not a folder')
    out = tmp_path / 'b'
    code = main([str(out), '--frames', '1', *SIZE, '--quiet',
                 '--contact-sheet', str(blocker / 'sheet.png')])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith('endo-depth-synth: error: ') and len(err.splitlines()) == 1
    assert not out.exists()
