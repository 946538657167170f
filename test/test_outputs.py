"""No command destroys a user's data: the output policy and every CLI that writes.

Each case is one the outside review reproduced: ``--write-bag`` deleting a params file,
a folder of YAML files, another recording and the input bag itself; ``--out`` overwriting
a report and writing through a symlink; exports and contact sheets replaced silently;
``endo-depth-synth --overwrite`` deleting a folder that only held ``robot.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from endo_depth_ros import bags, outputs
from endo_depth_ros.cli import eval as eval_cli
from endo_depth_ros.cli import synth as synth_cli
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.errors import OutputError
from endo_depth_ros.synth import SynthConfig, render_sequence

SMALL = SynthConfig(width=64, height=48, frames=3)
EVAL_ARGS = ['--model', 'gt', '--frames', '2', '--no-progress']


@pytest.fixture(scope='module')
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('outputs') / 'input_bag'
    bags.write_sequence(path, render_sequence(SMALL))
    return path


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` with its bytes (to prove nothing changed)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*'))
            if p.is_file()}


def _one_error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'{prog}: error: ')
    return err[0]


# --------------------------------------------------------------------------- is_recording


def test_written_bags_and_npz_folders_are_recordings(tmp_path: Path) -> None:
    frames = list(render_sequence(SynthConfig(width=32, height=24, frames=2)))
    bags.write_sequence(tmp_path / 'mcap', frames)
    bags.write_sequence(tmp_path / 'db3', frames, storage='sqlite3')
    bags.write_npz(tmp_path / 'npz', frames)
    for name in ('mcap', 'db3', 'npz'):
        assert outputs.is_recording(tmp_path / name), name


@pytest.mark.parametrize('files', [
    {'robot.yaml': 'a: 1'},
    {'metadata.yaml': 'not: rosbag2'},
    {'metadata.yaml': ': : broken yaml ['},
    {'params.yaml': 'x', 'more.yaml': 'y'},
    {'frame_000000.npz': '', 'notes.txt': 'keep'},
])
def test_folders_that_only_look_like_recordings_are_not(tmp_path: Path,
                                                         files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert not outputs.is_recording(tmp_path)


def test_a_bag_with_an_extra_user_file_or_a_missing_storage_file_is_not_a_recording(
        recording: Path, tmp_path: Path) -> None:
    import shutil

    extra = tmp_path / 'extra'
    shutil.copytree(recording, extra)
    (extra / 'my_notes.txt').write_text('keep')
    assert not outputs.is_recording(extra)
    missing = tmp_path / 'missing'
    shutil.copytree(recording, missing)
    next(missing.glob('*.mcap')).unlink()
    assert not outputs.is_recording(missing)


# --------------------------------------------------------------------------- eval --write-bag


@pytest.mark.parametrize('make_target', [
    pytest.param(lambda p: p.write_text('rate: 30\n'), id='a params file'),
    pytest.param(lambda p: (p.mkdir(), (p / 'a.yaml').write_text('x'),
                            (p / 'b.yaml').write_text('y')), id='a folder of yaml files'),
])
def test_write_bag_never_replaces_what_is_not_a_recording(
        recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        make_target) -> None:
    target = tmp_path / 'target'
    make_target(target)
    before = _snapshot(target)
    for extra in ([], ['--overwrite']):
        code = eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(tmp_path / 'o'),
                              '--write-bag', str(target), *extra])
        assert code == 2
        line = _one_error_line(capsys, 'endo-depth-eval')
        assert 'already exists' in line or 'Refusing to overwrite' in line
        assert _snapshot(target) == before
        assert not (tmp_path / 'o' / 'report.md').exists()


def test_write_bag_replaces_a_recording_only_with_overwrite(
        recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / 'other_recording'
    bags.write_sequence(other, render_sequence(SynthConfig(width=32, height=24, frames=1)))
    before = _snapshot(other)
    code = eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(tmp_path / 'o1'),
                          '--write-bag', str(other)])
    assert code == 2 and '--overwrite' in _one_error_line(capsys, 'endo-depth-eval')
    assert _snapshot(other) == before
    code = eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(tmp_path / 'o2'),
                          '--write-bag', str(other), '--overwrite'])
    assert code == 0
    assert outputs.is_recording(other) and _snapshot(other) != before


def test_write_bag_onto_or_inside_the_input_is_refused_even_with_overwrite(
        recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(recording)
    for target, words in ((recording, 'is the input'),
                          (recording / 'inner', 'inside the input'),
                          (recording.parent, 'contains the input')):
        code = eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(tmp_path / 'o'),
                              '--write-bag', str(target), '--overwrite'])
        assert code == 2
        assert words in _one_error_line(capsys, 'endo-depth-eval')
        assert _snapshot(recording) == before


# --------------------------------------------------------------------------- eval --out


def test_out_with_an_earlier_report_needs_overwrite(
        recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'report'
    assert eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(out)]) == 0
    capsys.readouterr()
    (out / 'my_analysis.txt').write_text('keep me')
    before = _snapshot(out)
    assert eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(out)]) == 2
    assert 'not empty' in _one_error_line(capsys, 'endo-depth-eval')
    assert _snapshot(out) == before
    assert eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(out), '--overwrite']) == 0
    # Only the report's own files are replaced; nothing else in the folder goes.
    assert (out / 'my_analysis.txt').read_text() == 'keep me'


def test_report_files_are_never_written_through_symlinks(
        recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / 'precious.json'
    precious.write_text('{"mine": true}')
    out = tmp_path / 'report'
    out.mkdir()
    (out / 'results.json').symlink_to(precious)
    code = eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(out), '--overwrite'])
    assert code == 2
    assert 'symbolic link' in _one_error_line(capsys, 'endo-depth-eval')
    assert precious.read_text() == '{"mine": true}'
    linked = tmp_path / 'linked_out'
    linked.symlink_to(out)
    assert eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(linked)]) == 2
    assert 'symbolic link' in _one_error_line(capsys, 'endo-depth-eval')


def test_out_inside_the_input_bag_is_refused(
        recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(recording)
    assert eval_cli.main([str(recording), *EVAL_ARGS, '--out', str(recording / 'r')]) == 2
    assert 'inside the input' in _one_error_line(capsys, 'endo-depth-eval')
    assert _snapshot(recording) == before


# --------------------------------------------------------------------------- synth, export


def test_synth_overwrite_never_deletes_a_folder_that_is_not_a_recording(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / 'config'
    folder.mkdir()
    (folder / 'robot.yaml').write_text('joints: 7\n')
    code = synth_cli.main([str(folder), '--frames', '1', '--width', '32', '--height', '24',
                           '--quiet', '--overwrite'])
    assert code == 2
    assert 'Refusing to overwrite' in _one_error_line(capsys, 'endo-depth-synth')
    assert (folder / 'robot.yaml').read_text() == 'joints: 7\n'


def test_synth_contact_sheet_is_not_replaced_without_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / 'sheet.png'
    sheet.write_bytes(b'my figure')
    args = [str(tmp_path / 'bag'), '--frames', '1', '--width', '32', '--height', '24',
            '--quiet', '--contact-sheet', str(sheet)]
    assert synth_cli.main(args) == 2
    assert 'already exists' in _one_error_line(capsys, 'endo-depth-synth')
    assert sheet.read_bytes() == b'my figure' and not (tmp_path / 'bag').exists()
    assert synth_cli.main([*args, '--overwrite']) == 0
    assert sheet.read_bytes()[:4] == b'\x89PNG'


def test_synth_refuses_huge_images_before_allocating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = synth_cli.main([str(tmp_path / 'b'), '--width', '100000', '--height', '100000'])
    assert code == 2
    assert '100000x100000' in _one_error_line(capsys, 'endo-depth-synth')


def test_export_refuses_an_existing_file_the_checkpoint_and_huge_sizes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from endo_depth_ros.cli.export import main as export_main

    checkpoint = tmp_path / 'weights.pth'
    checkpoint.write_bytes(b'not really weights')
    existing = tmp_path / 'model.onnx'
    existing.write_bytes(b'an earlier export')
    base = ['dav2-s', '--checkpoint', str(checkpoint)]
    cases = [
        (['--height', '48', '--width', '64', '--out', str(existing)], 'already exists'),
        (['--height', '48', '--width', '64', '--out', str(checkpoint), '--overwrite'],
         'is the input'),
        (['--height', '100000', '--width', '100000', '--out', str(tmp_path / 'x.onnx')],
         '100000x100000'),
    ]
    for extra, words in cases:
        assert export_main([*base, *extra]) == 2
        assert words in _one_error_line(capsys, 'endo-depth-export')
    assert existing.read_bytes() == b'an earlier export'
    assert checkpoint.read_bytes() == b'not really weights'


# --------------------------------------------------------------------------- library level


def test_output_folder_keeps_files_inside_itself(tmp_path: Path) -> None:
    folder = outputs.OutputFolder(tmp_path / 'out', overwrite=False)
    assert folder.file('results.json') == tmp_path / 'out' / 'results.json'
    for name in ('../escape.txt', '/etc/passwd', ''):
        with pytest.raises(OutputError, match='not a file name inside'):
            folder.file(name)


def test_memory_errors_become_one_line_with_the_size(
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    def allocate(args: argparse.Namespace) -> int:
        raise MemoryError('Unable to allocate 112. GiB for an array with shape '
                          '(100000, 100000, 3) and data type float32')

    assert run_cli('endo-depth-x', argparse.ArgumentParser(), allocate, []) == 2
    line = _one_error_line(capsys, 'endo-depth-x')
    assert 'out of memory' in line and '(100000, 100000, 3)' in line
