"""endo-depth-export: checkpoint in, verified ONNX file out; one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.cli.export import main
from endo_depth_ros.models import depth_anything as da


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = da.build_network(da.tiny_config('dav2'))
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_official.pth'
    torch.save(da.hf_to_official(network.state_dict()), path)
    return path


def test_export_writes_a_verified_onnx_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / 'sub' / 'tiny.onnx'
    code = main(['dav2', '--checkpoint', str(checkpoint), '--height', '48', '--width', '64',
                 '--input-size', '28', '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert 'network input 28x42' in printed
    assert 'max relative difference' in printed
    model = models.load('dav2', out, backend='onnxruntime', device='cpu')
    assert model.infer(np.zeros((48, 64, 3), np.uint8)).shape == (48, 64)


def test_photometric_export_is_a_one_line_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(['photometric', '--checkpoint', str(checkpoint), '--height', '48',
                 '--width', '64', '--out', str(tmp_path / 'p.onnx')])
    assert code == 2
    assert capsys.readouterr().err.startswith("endo-depth-export: error: 'photometric'")


def test_missing_checkpoint_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(['dav2-s', '--checkpoint', str(tmp_path / 'none.pth'), '--height', '48',
                 '--width', '64', '--out', str(tmp_path / 'x.onnx')])
    assert code == 2
    assert 'none.pth' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_missing_size_is_a_usage_error(checkpoint: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(['dav2', '--checkpoint', str(checkpoint), '--out', 'x.onnx'])
    assert info.value.code == 2


def test_input_size_below_one_patch_is_a_one_line_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(['dav2', '--checkpoint', str(checkpoint), '--height', '48', '--width', '64',
                 '--input-size', '3', '--out', str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ('endo-depth-export: error: --input-size must be at least 14 '
                   '(one ViT patch), got 3.')
    assert not (tmp_path / 'x.onnx').exists()
