"""Loading errors in one line naming the file, and the metric scale (``max_depth``).

Every bad checkpoint kind gives a one-line ``ModelLoadError`` in the library, exit 2 with
that line in endo-depth-export / endo-depth-eval, and exit 2 without a traceback in the
node. ``max_depth`` is explicit: asked for, read from a folder or an export, or assumed
with a warning.
"""

from __future__ import annotations

from pathlib import Path
import shutil
import warnings

from model_helpers import random_network
import numpy as np
import onnx
import pytest
import torch

from endo_depth_ros import bags, models
from endo_depth_ros.cli import eval as eval_cli
from endo_depth_ros.cli import export as export_cli
from endo_depth_ros.errors import ConfigError, ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.onnx_runtime import export_onnx, read_metadata
from endo_depth_ros.pipeline import ModelConfig
from endo_depth_ros.synth import SynthConfig, render_sequence

NOT_A_CHECKPOINT = 'is not a PyTorch/safetensors checkpoint'


def _bad_file(kind: str, folder: Path) -> Path:
    """A file (or folder) of ``kind`` that is not a checkpoint."""
    path = folder / f'{kind}.pth'
    if kind == 'random_bytes':
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    elif kind == 'text':
        path.write_text('depth anything weights\nsecond line\n')
    elif kind == 'pickled_module':
        torch.save(torch.nn.Linear(3, 2), path)
    elif kind == 'truncated':
        torch.save({'w': torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'passwd':  # the system's /etc/passwd where present, else the same format
        source = Path('/etc/passwd')
        path = folder / 'passwd'
        if source.is_file():
            shutil.copyfile(source, path)
        else:
            path.write_text('root:x:0:0:root:/root:/bin/bash\n')
    elif kind == 'directory':
        path = folder / 'weights_dir'
        path.mkdir()
        (path / 'notes.txt').write_text('no config.json here')
    elif kind == 'onnx':
        path = folder / 'model.onnx'
        graph = onnx.helper.make_graph([], 'empty', [], [])
        onnx.save(onnx.helper.make_model(graph), path)
    elif kind == 'safetensors_garbage':
        path = folder / 'model.safetensors'
        path.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}x')
    return path


BAD_KINDS = ('random_bytes', 'text', 'pickled_module', 'truncated', 'empty', 'passwd',
             'directory', 'onnx', 'safetensors_garbage')


@pytest.mark.parametrize('kind', BAD_KINDS)
def test_every_non_checkpoint_is_one_line_naming_the_file(kind: str, tmp_path: Path) -> None:
    path = _bad_file(kind, tmp_path)
    with pytest.raises(ModelLoadError) as info:
        models.load('dav2-s', path, device='cpu', backend='torch')
    message = str(info.value)
    assert message.startswith(f'{path} {NOT_A_CHECKPOINT}'), message
    assert '\n' not in message and '\x1b' not in message
    assert len(message) < len(str(path)) + 250
    assert 'weights_only' not in message  # torch's advice is not the cause


def test_pickled_module_names_the_pickled_class(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r'torch\.nn\.modules\.linear\.Linear'):
        models.load('dav2', _bad_file('pickled_module', tmp_path), device='cpu')


def test_onnx_given_to_torch_points_to_onnxruntime(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="use backend 'onnxruntime'"):
        models.load('dav2', _bad_file('onnx', tmp_path), device='cpu', backend='torch')


def test_an_onnx_file_without_our_metadata_is_one_line_under_auto(tmp_path: Path) -> None:
    path = _bad_file('onnx', tmp_path)
    with pytest.raises(ModelLoadError, match='lacks the endo_depth_ros metadata') as info:
        models.load('dav2', path, device='cpu')
    assert str(info.value).startswith(str(path)) and '\n' not in str(info.value)


def test_a_pickle_without_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelLoadError, match=f'{NOT_A_CHECKPOINT}: it holds a list'):
        models.load('dav2', path, device='cpu')


@pytest.mark.parametrize('kind', ['passwd', 'directory', 'pickled_module'])
def test_export_cli_exits_2_with_the_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = _bad_file(kind, tmp_path)
    out = tmp_path / 'x.onnx'
    code = export_cli.main(['dav2-s', '--checkpoint', str(path), '--height', '48', '--width',
                            '64', '--out', str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f'endo-depth-export: error: {err[0].split("error: ", 1)[1]}']
    assert f'{path} {NOT_A_CHECKPOINT}' in err[0]
    assert not out.exists()


@pytest.fixture(scope='module')
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('loading') / 'seq'
    bags.write_sequence(path, render_sequence(SynthConfig(width=64, height=48, frames=2)))
    return path


@pytest.mark.parametrize('kind', ['passwd', 'random_bytes'])
def test_eval_cli_exits_2_with_the_line(
    kind: str, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = _bad_file(kind, tmp_path)
    code = eval_cli.main([str(bag), '--model', 'dav2-s', '--checkpoint', str(path),
                          '--out', str(tmp_path / 'out'), '--no-progress'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith('endo-depth-eval: error: '), err
    assert f'{path} {NOT_A_CHECKPOINT}' in err[0]


def test_node_exits_2_with_the_line_and_no_traceback(tmp_path: Path) -> None:
    pytest.importorskip('rclpy')
    from ros_harness import REPO_ROOT, NodeProcess

    path = _bad_file('passwd', tmp_path)
    args = ['-m', 'endo_depth_ros.ros.node', '--ros-args', '--params-file',
            str(REPO_ROOT / 'config' / 'depth.yaml'), '-r', '__ns:=/t_loading',
            '-p', 'model.name:=dav2-s', '-p', f'model.checkpoint:={path}']
    with NodeProcess(args) as node:
        code = node.wait(timeout=120)
        stderr = node.stderr
    assert code == 2, stderr
    assert f'{path} {NOT_A_CHECKPOINT}' in stderr, stderr
    assert 'Traceback' not in stderr, stderr


# ------------------------------------------------------------------------- max_depth


@pytest.fixture(scope='module')
def metric_network() -> torch.nn.Module:
    return random_network(da.tiny_config('dav2', metric=True), seed=4)


@pytest.fixture(scope='module')
def metric_pth(metric_network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('metric') / 'metric_official.pth'
    torch.save(da.hf_to_official(metric_network.state_dict()), path)
    return path


IMAGE = np.random.default_rng(3).integers(0, 256, (42, 56, 3), np.uint8)


def _metric(path: Path, **kwargs: object) -> models.DepthModel:
    return models.load('dav2-metric', path, device='cpu', input_size=28, **kwargs)


def test_max_depth_scales_the_output_exactly(metric_pth: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # an explicit value never warns
        at_20 = _metric(metric_pth, max_depth=20.0)
        at_80 = _metric(metric_pth, max_depth=80.0)
        at_half = _metric(metric_pth, max_depth=0.5)
    assert (at_20.max_depth, at_80.max_depth, at_half.max_depth) == (20.0, 80.0, 0.5)
    near_20, near_80 = at_20.infer(IMAGE), at_80.infer(IMAGE)
    np.testing.assert_allclose(near_80, 4 * near_20, rtol=1e-5)
    np.testing.assert_allclose(at_half.infer(IMAGE), near_20 / 40, rtol=1e-5)
    assert near_80.min() >= 0 and near_80.max() <= 80 * (1 + 1e-6)


def test_a_pth_without_max_depth_assumes_20_with_a_warning(metric_pth: Path) -> None:
    with pytest.warns(da.MaxDepthAssumedWarning, match='assuming 20 m'):
        model = _metric(metric_pth)
    assert model.max_depth == da.DEFAULT_MAX_DEPTH


def test_a_folder_keeps_its_max_depth_without_warning(
    metric_network: torch.nn.Module, tmp_path: Path,
) -> None:
    folder = tmp_path / 'outdoor'
    network = random_network(da.tiny_config('dav2', metric=True), seed=4)
    da.set_max_depth(network.config, 0.25)  # fractional metres survive save_pretrained
    network.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        model = _metric(folder)
    assert model.max_depth == 0.25
    overridden = _metric(folder, max_depth=80)
    np.testing.assert_allclose(overridden.infer(IMAGE), model.infer(IMAGE) * 320, rtol=1e-5)


@pytest.mark.parametrize('value', [0.0, -1.0, 1e6, float('nan')])
def test_out_of_range_max_depth_is_refused(metric_pth: Path, value: float) -> None:
    with pytest.raises(ConfigError, match='max_depth'):
        _metric(metric_pth, max_depth=value)


def test_max_depth_for_a_relative_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'relative.pth'
    torch.save(da.hf_to_official(random_network(da.tiny_config('dav2')).state_dict()), path)
    with pytest.raises(ConfigError, match='metric models only'):
        models.load('dav2', path, device='cpu', max_depth=20.0)


def test_onnx_export_stores_max_depth(metric_pth: Path, tmp_path: Path) -> None:
    torch_model = _metric(metric_pth, max_depth=80.0)
    path = export_onnx(torch_model, tmp_path / 'metric.onnx', 42, 56)
    assert read_metadata(path)['max_depth'] == '80.0'
    exported = models.load('dav2-metric', path, backend='onnxruntime', device='cpu')
    assert exported.max_depth == 80.0
    np.testing.assert_allclose(exported.infer(IMAGE), torch_model.infer(IMAGE), atol=80e-4)
    with pytest.raises(ConfigError, match='exported with max_depth 80'):
        models.load('dav2-metric', path, backend='onnxruntime', device='cpu', max_depth=20.0)


def test_export_cli_takes_max_depth(
    metric_pth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / 'm.onnx'
    code = export_cli.main(['dav2-metric', '--checkpoint', str(metric_pth), '--height', '42',
                            '--width', '56', '--input-size', '28', '--max-depth', '0.3',
                            '--out', str(out)])
    assert code == 0, capsys.readouterr().err
    assert 'max_depth 0.3 m' in capsys.readouterr().out
    assert read_metadata(out)['max_depth'] == '0.3'


def test_model_config_passes_max_depth_m(metric_pth: Path) -> None:
    config = ModelConfig(name='dav2-metric', checkpoint=str(metric_pth), device='cpu',
                         input_size=28, max_depth_m=80.0)
    assert config.load().max_depth == 80.0
    with pytest.raises(ConfigError, match='max_depth_m'):
        ModelConfig(max_depth_m=-1.0)



def test_diagnostics_report_the_metric_scale(metric_pth: Path) -> None:
    pytest.importorskip('rclpy')
    from endo_depth_ros.ros.node import standalone_node

    model = _metric(metric_pth, max_depth=80.0)
    with standalone_node(model=model) as node:
        values = {kv.key: kv.value for kv in node.diagnostics_status().values}
    assert values['model.max_depth_m'] == '80'
