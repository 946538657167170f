"""endo-depth-import: fixtures in each dataset's own format, written with the libraries the
datasets use (PNG via OpenCV, TIFF via tifffile, text, COLMAP binary via struct), imported
and read back through endo-depth-eval with known answers."""

from __future__ import annotations

import json
from pathlib import Path
import struct

import cv2
import numpy as np
import pytest
import tifffile

from endo_depth_ros import bags, metrics
from endo_depth_ros.cli import eval as eval_cli
from endo_depth_ros.cli import import_ as import_cli
from endo_depth_ros.geometry import pose_from_translation_quaternion, quaternion_to_rotation

W, H = 64, 48


def _texture(seed: int, width: int = W, height: int = H) -> np.ndarray:
    """(H, W, 3) uint8 smooth random texture (something odometry could track)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 230, size=(height // 4, width // 4, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _depth_m(seed: int) -> np.ndarray:
    """(H, W) float32 metres, a tilted plane 20-60 mm away."""
    u = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    v = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    return (0.02 + 0.03 * u + 0.01 * v + 0.002 * seed).astype(np.float32)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _poses(n: int) -> list[np.ndarray]:
    """Camera-to-world poses (metres): a short arc with some rotation."""
    out = []
    for i in range(n):
        angle = 0.05 * i
        q = (0.0, np.sin(angle / 2), 0.0, np.cos(angle / 2))
        out.append(pose_from_translation_quaternion((0.002 * i, -0.001 * i, 0.004 * i), q))
    return out


def _import(fmt: str, src: Path, out: Path, *extra: str) -> int:
    return import_cli.main([fmt, str(src), str(out), '--no-progress', *extra])


def _evaluate(bag: Path, out: Path, *extra: str) -> dict:
    code = eval_cli.main([str(bag), '--model', 'gt', '--align', 'none', '--out', str(out),
                          '--no-progress', '--contact-frames', '1', *extra])
    assert code == 0
    return json.loads((out / 'results.json').read_text())['runs'][0]


def _one_line_error(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'{prog}: error: ')
    return err[0]


# --------------------------------------------------------------------------- C3VD


def _c3vd(folder: Path, n: int = 3) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    poses = _poses(n)
    lines = []
    for i in range(n):
        _write_rgb(folder / f'{i:04d}_color.png', _texture(i))
        mm = _depth_m(i) * 1000.0
        raw = np.round(mm / 100.0 * 65535.0).astype(np.uint16)
        raw[0, 0] = 65535  # clipped at 100 mm: invalid
        raw[0, 1] = 0  # invalid
        tifffile.imwrite(folder / f'{i:04d}_depth.tiff', raw)
        T = poses[i].copy()
        T[:3, 3] *= 1000.0  # the file is in millimetres, column by column
        lines.append(','.join(f'{v:.9f}' for v in T.T.ravel()))
    (folder / 'pose.txt').write_text('\n'.join(lines) + '\n')
    return poses


def test_c3vd_depth_and_poses_round_trip_and_the_oracle_scores_zero(tmp_path: Path) -> None:
    expected = _c3vd(tmp_path / 'cecum_t1_a')
    bag = tmp_path / 'c3vd'
    assert _import('c3vd', tmp_path / 'cecum_t1_a', bag) == 0
    frames = list(bags.read_frames(bag))
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        assert np.isnan(frame.depth_gt[0, :2]).all()
        np.testing.assert_allclose(frame.depth_gt[1:], _depth_m(i)[1:], atol=2e-6)  # 1/65535
        np.testing.assert_allclose(frame.pose_gt, expected[i], atol=1e-9)
        # The dataset's pinhole camera, rescaled from 1350x1080.
        assert frame.intrinsics.size == (W, H)
        assert frame.intrinsics.fy == pytest.approx(769.2436 * H / 1080, rel=1e-6)
    est = np.stack([f.pose_gt for f in frames])
    assert metrics.absolute_trajectory_error(est, np.stack(expected)) < 1e-9
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['gt_units'] == 'metric'
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert run['frames_scored'] == 3


def test_c3vd_with_fewer_poses_than_frames_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _c3vd(tmp_path / 'seq')
    (tmp_path / 'seq' / 'pose.txt').write_text(','.join(map(str, np.eye(4).ravel())) + '\n')
    assert _import('c3vd', tmp_path / 'seq', tmp_path / 'bag') == 2
    assert '1 poses for 3 frames' in _one_line_error(capsys, 'endo-depth-import')
    assert not (tmp_path / 'bag').exists()


# --------------------------------------------------------------------------- SimCol3D


def test_simcol3d_unity_poses_become_optical_frames_in_metres(tmp_path: Path) -> None:
    colon = tmp_path / 'SyntheticColon_I'
    frames_dir = colon / 'Frames_S1'
    frames_dir.mkdir(parents=True)
    (colon / 'cam.txt').write_text('40.0 0 31.5\n0 40.0 23.5\n0 0 1\n')
    positions = [(1.0, 2.0, 3.0), (1.5, 2.0, 4.0)]
    quats = [(0.0, 0.0, 0.0, 1.0), (0.1, 0.2, -0.05, 0.97)]
    (colon / 'SavedPosition_S1.txt').write_text(
        '\n'.join(' '.join(map(str, p)) for p in positions))
    (colon / 'SavedRotationQuaternion_S1.txt').write_text(
        '\n'.join(' '.join(map(str, q)) for q in quats))
    for i in range(2):
        rgba = np.dstack([_texture(i), np.full((H, W), 255, np.uint8)])
        cv2.imwrite(str(frames_dir / f'FrameBuffer_{i:04d}.png'), rgba)
        depth_units = _depth_m(i) / 0.20  # the PNG holds depth / 20 cm, times 255 * 256
        cv2.imwrite(str(frames_dir / f'Depth_{i:04d}.png'),
                    np.round(depth_units * 255 * 256).astype(np.uint16))
    bag = tmp_path / 'simcol'
    assert _import('simcol3d', frames_dir, bag) == 0
    frames = list(bags.read_frames(bag))
    assert [f.intrinsics.fx for f in frames] == [40.0, 40.0]
    np.testing.assert_allclose(frames[0].depth_gt, _depth_m(0), atol=1e-5)
    # Identity Unity rotation: the optical frame is aligned with the (y-flipped) world.
    np.testing.assert_allclose(frames[0].pose_gt[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(frames[0].pose_gt[:3, 3], (0.01, -0.02, 0.03), atol=1e-12)
    R = frames[1].pose_gt[:3, :3]
    assert np.linalg.det(R) == pytest.approx(1.0)  # right-handed
    # Unity's camera looks along its +z: the optical axis is the same direction, y flipped.
    q = np.array(quats[1]) / np.linalg.norm(quats[1])
    unity_forward = quaternion_to_rotation(q)[:, 2]
    np.testing.assert_allclose(R[:, 2], unity_forward * (1, -1, 1), atol=1e-12)
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- Hamlyn


def test_hamlyn_millimetre_pngs_and_intrinsics(tmp_path: Path) -> None:
    seq = tmp_path / 'rectified01'
    for i in range(3):
        rgb = _texture(i)
        (seq / 'image01').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seq / 'image01' / f'{i:010d}.jpg'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        (seq / 'depth01').mkdir(exist_ok=True)
        mm = np.round(_depth_m(i) * 1000).astype(np.uint16)
        mm[0, :5] = 0  # invalid
        cv2.imwrite(str(seq / 'depth01' / f'{i:010d}.png'), mm)
    (seq / 'intrinsics.txt').write_text('50 0 32\n0 51 24\n0 0 1\n')
    bag = tmp_path / 'hamlyn'
    assert _import('hamlyn', seq, bag) == 0
    frames = list(bags.read_frames(bag))
    assert len(frames) == 3 and frames[0].pose_gt is None
    assert (frames[0].intrinsics.fx, frames[0].intrinsics.fy) == (50.0, 51.0)
    assert np.isnan(frames[0].depth_gt[0, :5]).all()
    np.testing.assert_allclose(frames[1].depth_gt[1:], np.round(_depth_m(1)[1:] * 1000) / 1000,
                               atol=1e-7)
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert run['has_gt_pose'] is False


def test_hamlyn_endo_depth_and_motion_layout(tmp_path: Path) -> None:
    """color/ + depth/ paired in file-number order, ScanNet-style 4x4 intrinsics."""
    seq = tmp_path / 'test1'
    (seq / 'color').mkdir(parents=True)
    (seq / 'depth').mkdir()
    (seq / 'intrinsic').mkdir()
    for i in (2, 10):  # numeric, not lexicographic, order
        cv2.imwrite(str(seq / 'color' / f'frame{i}.jpg'), _texture(i))
        cv2.imwrite(str(seq / 'depth' / f'{i}.png'),
                    np.full((H, W), 20 + i, np.uint16))  # mm
    (seq / 'intrinsic' / 'intrinsic_color.txt').write_text(
        '45 0 31.5 0\n0 45 23.5 0\n0 0 1 0\n0 0 0 1\n')
    bag = tmp_path / 'edm'
    assert _import('hamlyn', seq, bag) == 0
    frames = list(bags.read_frames(bag))
    assert [float(np.nanmedian(f.depth_gt)) for f in frames] == pytest.approx([0.022, 0.030])
    assert frames[0].intrinsics.fx == 45.0


# --------------------------------------------------------------------------- SCARED


def _scared_keyframe(folder: Path) -> np.ndarray:
    folder.mkdir(parents=True)
    _write_rgb(folder / 'Left_Image.png', _texture(0))
    z_mm = _depth_m(0) * 1000.0
    xyz = np.dstack([np.zeros_like(z_mm), np.zeros_like(z_mm), z_mm]).astype(np.float32)
    xyz[:4, :4] = 0.0  # unknown points
    tifffile.imwrite(folder / 'left_depth_map.tiff', xyz, photometric='rgb')
    storage = cv2.FileStorage(str(folder / 'endoscope_calibration.yaml'),
                              cv2.FILE_STORAGE_WRITE)
    storage.write('M1', np.array([[60.0, 0, 31.0], [0, 61.0, 23.0], [0, 0, 1]]))
    storage.write('D1', np.array([[-0.1, 0.01, 0.0, 0.0, 0.0]]))
    storage.release()
    return z_mm


def test_scared_keyframe_point_image_becomes_z_depth_with_distortion(tmp_path: Path) -> None:
    z_mm = _scared_keyframe(tmp_path / 'keyframe_1')
    bag = tmp_path / 'scared'
    assert _import('scared', tmp_path / 'keyframe_1', bag) == 0
    (frame,) = bags.read_frames(bag)
    assert frame.intrinsics.distortion_model == 'plumb_bob'
    assert frame.intrinsics.distortion[:2] == pytest.approx((-0.1, 0.01))
    assert np.isnan(frame.depth_gt[:4, :4]).all()
    np.testing.assert_allclose(frame.depth_gt[4:], z_mm[4:] / 1000.0, rtol=1e-6)
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)


def test_scared_video_with_interpolated_points_and_poses(tmp_path: Path) -> None:
    key = tmp_path / 'keyframe_2'
    _scared_keyframe(key)
    data = key / 'data'
    (data / 'scene_points').mkdir(parents=True)
    (data / 'frame_data').mkdir()
    writer = cv2.VideoWriter(str(data / 'rgb.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 10,
                             (W, 2 * H))
    if not writer.isOpened():
        pytest.skip('this OpenCV build cannot write mp4 files')
    poses = _poses(3)
    for i in range(3):
        writer.write(cv2.cvtColor(np.vstack([_texture(i), _texture(i + 10)]),
                                  cv2.COLOR_RGB2BGR))
        z = _depth_m(i) * 1000.0
        left = np.dstack([np.zeros_like(z), np.zeros_like(z), z])
        stacked = np.vstack([left, left * 1.1]).astype(np.float32)  # left on top of right
        tifffile.imwrite(data / 'scene_points' / f'scene_points{i:06d}.tiff', stacked,
                         photometric='rgb')
        T = poses[i].copy()
        T[:3, 3] *= 1000.0
        # camera-pose maps keyframe points into this frame: world-to-camera, in mm.
        (data / 'frame_data' / f'frame_data{i:06d}.json').write_text(
            json.dumps({'camera-pose': np.linalg.inv(T).tolist()}))
    writer.release()
    bag = tmp_path / 'scared_video'
    assert _import('scared', key, bag) == 0
    frames = list(bags.read_frames(bag))
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(frame.depth_gt, _depth_m(i), rtol=1e-6)
        np.testing.assert_allclose(frame.pose_gt, poses[i], atol=1e-12)
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- EndoSynth


def _endosynth(folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        np.savez(folder / f'{i:06d}.npz', rgb=_texture(i), depth=_depth_m(i).astype(np.float16),
                 seg=np.zeros((H, W), np.uint8))


def test_endosynth_needs_the_camera_and_then_scores_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _endosynth(tmp_path / 'samples')
    assert _import('endosynth', tmp_path / 'samples', tmp_path / 'nocam') == 2
    assert '--fx/--fy/--cx/--cy' in _one_line_error(capsys, 'endo-depth-import')
    bag = tmp_path / 'endosynth'
    assert _import('endosynth', tmp_path / 'samples', bag, '--fx', '50', '--fy', '50', '--cx',
                   '31.5', '--cy', '23.5') == 0
    frames = list(bags.read_frames(bag))
    assert frames[0].intrinsics.cx == 31.5
    np.testing.assert_allclose(frames[1].depth_gt, _depth_m(1).astype(np.float16), rtol=0)
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)


def test_eval_reads_endosynth_samples_directly_given_intrinsics(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _endosynth(tmp_path / 'samples')
    code = eval_cli.main([str(tmp_path / 'samples'), '--model', 'gt', '--out',
                          str(tmp_path / 'e1'), '--no-progress'])
    assert code == 2
    assert '--fx/--fy/--cx/--cy or --camera-info' in _one_line_error(capsys, 'endo-depth-eval')
    info = tmp_path / 'camera.yaml'
    info.write_text(f'image_width: {W}\nimage_height: {H}\ncamera_name: endo\n'
                    'camera_matrix: {rows: 3, cols: 3, data: [50, 0, 31.5, 0, 50, 23.5, 0, 0, 1]}\n'
                    'distortion_model: plumb_bob\n'
                    'distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n')
    run = _evaluate(tmp_path / 'samples', tmp_path / 'e2', '--camera-info', str(info))
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    run = _evaluate(tmp_path / 'samples', tmp_path / 'e3', '--fx', '50', '--fy', '50',
                    '--cx', '31.5', '--cy', '23.5')
    assert run['frames_scored'] == 2
    assert eval_cli.main([str(tmp_path / 'samples'), '--fx', '50', '--out',
                          str(tmp_path / 'e4'), '--no-progress']) == 2
    assert 'missing --fy, --cx, --cy' in _one_line_error(capsys, 'endo-depth-eval')


# --------------------------------------------------------------------------- COLMAP


def _colmap_scene(n_images: int = 3) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """World-to-camera poses (R|t as 4x4), 3D points, and the pinhole K (COLMAP convention)."""
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-0.8, 0.8, 150), rng.uniform(-0.6, 0.6, 150),
                              rng.uniform(1.1, 3.1, 150)])
    K = np.array([[40.0, 0, 32.0], [0, 40.0, 24.0], [0, 0, 1]])
    world_to_cam = [np.linalg.inv(T) for T in _poses(n_images)]
    return world_to_cam, points, K


def _rotation_to_wxyz(R: np.ndarray) -> np.ndarray:
    w = np.sqrt(max(1.0 + np.trace(R), 1e-12)) / 2
    return np.array([w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w),
                     (R[1, 0] - R[0, 1]) / (4 * w)])


def _observations(Tcw: np.ndarray, points: np.ndarray, K: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cam = points @ Tcw[:3, :3].T + Tcw[:3, 3]
    uv = cam @ K.T
    xy = uv[:, :2] / uv[:, 2:]
    ids = np.arange(len(points))
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    return xy[inside], ids[inside], cam[inside, 2]


def _colmap_project(root: Path, binary: bool) -> tuple[list[np.ndarray], dict[str, dict]]:
    """Write a COLMAP project; returns the camera-to-world poses and per image the expected
    sparse depths {(row, col): z}."""
    world_to_cam, points, K = _colmap_scene()
    model = root / 'sparse' / '0'
    model.mkdir(parents=True)
    expected: dict[str, dict] = {}
    images = []
    for i, Tcw in enumerate(world_to_cam):
        name = f'frame_{i:03d}.png'
        _write_rgb(root / 'images' / name, _texture(i))
        xy, ids, z = _observations(Tcw, points, K)
        depth: dict[tuple[int, int], float] = {}
        for (x, y), d in zip(xy, z, strict=True):
            key = (int(np.floor(y)), int(np.floor(x)))
            depth[key] = min(d, depth.get(key, np.inf))
        expected[name] = depth
        images.append((i + 1, _rotation_to_wxyz(Tcw[:3, :3]), Tcw[:3, 3], name, xy, ids))
    if binary:
        with (model / 'cameras.bin').open('wb') as f:
            f.write(struct.pack('<Q', 1))
            f.write(struct.pack('<iiQQ', 1, 1, W, H))  # model 1 = PINHOLE
            f.write(struct.pack('<4d', 40.0, 40.0, 32.0, 24.0))
        with (model / 'images.bin').open('wb') as f:
            f.write(struct.pack('<Q', len(images)))
            for image_id, q, t, name, xy, ids in images:
                f.write(struct.pack('<i7di', image_id, *q, *t, 1))
                f.write(name.encode() + b'\x00')
                f.write(struct.pack('<Q', len(xy) + 1))
                for (x, y), pid in zip(xy, ids, strict=True):
                    f.write(struct.pack('<ddq', x, y, pid))
                f.write(struct.pack('<ddq', 5.0, 5.0, -1))  # an unmatched keypoint
        with (model / 'points3D.bin').open('wb') as f:
            f.write(struct.pack('<Q', len(points)))
            for pid, p in enumerate(points):
                f.write(struct.pack('<Q3d3BdQ', pid, *p, 200, 100, 100, 0.5, 1))
                f.write(struct.pack('<ii', 1, 0))
    else:
        (model / 'cameras.txt').write_text(
            '# Camera list\n1 PINHOLE 64 48 40.0 40.0 32.0 24.0\n')
        lines = ['# Image list with two lines of data per image:']
        for image_id, q, t, name, xy, ids in images:
            lines.append(' '.join(map(str, [image_id, *q, *t, 1, name])))
            lines.append(' '.join(f'{x} {y} {pid}' for (x, y), pid in zip(xy, ids, strict=True))
                         + ' 5.0 5.0 -1')
        (model / 'images.txt').write_text('\n'.join(lines) + '\n')
        (model / 'points3D.txt').write_text('# 3D point list\n' + '\n'.join(
            f'{pid} {p[0]} {p[1]} {p[2]} 200 100 100 0.5 1 0' for pid, p in enumerate(points)))
    return [np.linalg.inv(T) for T in world_to_cam], expected


@pytest.mark.parametrize('binary', [False, True], ids=['text', 'binary'])
def test_colmap_poses_and_sparse_depth_are_scale_free_ground_truth(
        tmp_path: Path, binary: bool, capsys: pytest.CaptureFixture[str]) -> None:
    poses, expected = _colmap_project(tmp_path / 'project', binary)
    bag = tmp_path / 'colmap'
    assert _import('colmap', tmp_path / 'project', bag) == 0
    assert bags.read_recording_info(bag).gt_units == 'relative'
    frames = list(bags.read_frames(bag))
    assert len(frames) == 3
    for frame, pose, depth in zip(frames, poses, expected.values(), strict=True):
        np.testing.assert_allclose(frame.pose_gt, pose, atol=1e-9)
        assert np.count_nonzero(np.isfinite(frame.depth_gt)) == len(depth) > 20  # sparse
        for (row, col), z in depth.items():
            assert frame.depth_gt[row, col] == pytest.approx(z, rel=1e-6)
        # COLMAP's (0.5, 0.5) pixel centre is this package's (0, 0).
        assert (frame.intrinsics.cx, frame.intrinsics.cy) == (31.5, 23.5)
    assert metrics.absolute_trajectory_error(np.stack([f.pose_gt for f in frames]),
                                             np.stack(poses)) < 1e-9
    # Sparse, scale-free ground truth through the evaluator: AbsRel 0, no metre labels,
    # its own depth range (1.1-3.1 units, far outside the 0.15 m default).
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['gt_units'] == 'relative'
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert run['frames_scored'] == 3
    assert 1.0 < run['depth_range'][0] < run['depth_range'][1] < 3.2
    table = capsys.readouterr().out
    assert ' u ' in table and 'mm' not in table
    # Metric scoring of scale-free ground truth is refused in one line.
    assert eval_cli.main([str(bag), '--model', 'gt', '--protocol', 'none', '--out',
                          str(tmp_path / 'e2'), '--no-progress']) == 2
    assert 'no unit (scale-free)' in _one_line_error(capsys, 'endo-depth-eval')


def test_scale_free_ground_truth_marked_metric_fails_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _colmap_project(tmp_path / 'project', binary=False)
    bag = tmp_path / 'colmap'
    assert _import('colmap', tmp_path / 'project', bag) == 0
    code = eval_cli.main([str(bag), '--model', 'gt', '--gt-units', 'metric', '--out',
                          str(tmp_path / 'e'), '--no-progress'])
    assert code == 2
    line = _one_line_error(capsys, 'endo-depth-eval')
    assert 'no ground-truth depth pixel is in the evaluation range 0.001-0.15 m' in line
    assert '--gt-units relative' in line


def test_colmap_trajectory_is_reported_relative_to_the_path(tmp_path: Path) -> None:
    """--gt-units relative on any bag: ATE as a fraction of the path, not in metres."""
    _c3vd(tmp_path / 'seq', n=6)
    bag = tmp_path / 'c3vd'
    assert _import('c3vd', tmp_path / 'seq', bag) == 0
    code = eval_cli.main([str(bag), '--model', 'gt', '--gt-units', 'relative', '--out',
                          str(tmp_path / 'e'), '--no-progress'])
    assert code == 0
    run = json.loads((tmp_path / 'e' / 'results.json').read_text())['runs'][0]
    assert run['gt_units'] == 'relative'
    if run['metrics']['ate'] is not None:
        steps = np.linalg.norm(np.diff(np.array(run['trajectory']['gt_m']), axis=0), axis=1)
        assert run['metrics']['ate_rel'] == pytest.approx(run['metrics']['ate'] / steps.sum())


# --------------------------------------------------------------------------- failures


def test_import_failures_are_one_line_errors(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _import('c3vd', tmp_path / 'missing', tmp_path / 'out') == 2
    assert 'does not exist' in _one_line_error(capsys, 'endo-depth-import')
    (tmp_path / 'empty').mkdir()
    assert _import('hamlyn', tmp_path / 'empty', tmp_path / 'out') == 2
    assert 'no image folder' in _one_line_error(capsys, 'endo-depth-import')
    assert _import('colmap', tmp_path / 'empty', tmp_path / 'out') == 2
    assert 'no COLMAP model' in _one_line_error(capsys, 'endo-depth-import')
    _colmap_project(tmp_path / 'project', binary=True)
    (tmp_path / 'project' / 'images' / 'frame_001.png').unlink()
    assert _import('colmap', tmp_path / 'project', tmp_path / 'out') == 2
    assert "'frame_001.png' is not in" in _one_line_error(capsys, 'endo-depth-import')
    (tmp_path / 'project' / 'sparse' / '0' / 'points3D.bin').write_bytes(b'\x05')
    assert _import('colmap', tmp_path / 'project', tmp_path / 'out') == 2
    assert 'malformed' in _one_line_error(capsys, 'endo-depth-import')
    # An existing output is never replaced without --overwrite, nor written inside the input.
    _c3vd(tmp_path / 'seq')
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'taken' / 'notes.txt').write_text('mine')
    assert _import('c3vd', tmp_path / 'seq', tmp_path / 'taken') == 2
    assert 'already exists' in _one_line_error(capsys, 'endo-depth-import')
    assert _import('c3vd', tmp_path / 'seq', tmp_path / 'seq' / 'bag') == 2
    assert 'inside the input' in _one_line_error(capsys, 'endo-depth-import')
    assert (tmp_path / 'taken' / 'notes.txt').read_text() == 'mine'


def test_recorded_field_of_view_is_used_by_the_evaluator(tmp_path: Path) -> None:
    """A mask given at import time restricts every metric (here: to the left half)."""
    _c3vd(tmp_path / 'seq')
    mask = np.zeros((H, W), np.uint8)
    mask[:, : W // 2] = 255
    cv2.imwrite(str(tmp_path / 'mask.png'), mask)
    bag = tmp_path / 'c3vd'
    assert _import('c3vd', tmp_path / 'seq', bag, '--mask', str(tmp_path / 'mask.png')) == 0
    info = bags.read_recording_info(bag)
    assert info.view is not None
    assert info.view[:, : W // 2].all() and not info.view[:, W // 2:].any()
    # A model that is right only inside the view scores 0 there.
    run = _evaluate(bag, tmp_path / 'eval')
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
