"""Backends and precisions against torch fp32, the compiled-model cache, auto, refusals.

Tiny random Depth Anything V2 networks (0.35 M parameters) at 48x64: each backend's
output must stay within its own error budget (relative L2 against torch fp32).
Budgets are looser than on DAv2-S because random tiny networks with weights of std 0.2
amplify rounding; ``endo-depth-bench models --backends`` reports the real-size errors.
"""

from __future__ import annotations

from pathlib import Path
import sys

from model_helpers import random_network, tiny_torch_model
import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.cli.bench import main as bench_main
from endo_depth_ros.cli.export import main as export_main
from endo_depth_ros.errors import BackendUnavailableError, ConfigError
from endo_depth_ros.models import auto, hardware
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.onnx_runtime import export_onnx
from endo_depth_ros.models.openvino import OpenVinoDepthModel
from endo_depth_ros.models.preprocessing import DepthNet

HEIGHT, WIDTH = 48, 64
IMAGES = np.random.default_rng(5).integers(0, 256, (2, HEIGHT, WIDTH, 3), np.uint8)
#: Relative L2 budget per path on the tiny network.
BUDGET = {'fp32': 1e-4, 'bf16': 6e-2, 'int8-dynamic': 2e-2}
needs_bf16 = pytest.mark.skipif(not hardware.cpu_supports_bf16(),
                                reason='this CPU has no native bf16')


def rel_l2(out: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache per test session (never the user's ~/.cache).
    root = tmp_path_factory.getbasetemp() / 'openvino-cache'
    monkeypatch.setenv('ENDO_DEPTH_OV_CACHE', str(root))


@pytest.fixture(scope='module')
def network() -> torch.nn.Module:
    return random_network(da.tiny_config('dav2'), 3)


@pytest.fixture(scope='module')
def reference(network: torch.nn.Module) -> np.ndarray:
    out = tiny_torch_model(network).infer(IMAGES)
    assert out.std() > 0.01 * np.abs(out).max()  # a non-trivial map
    return out


@pytest.fixture(scope='module')
def checkpoint(network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(da.hf_to_official(network.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def exported(network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_torch_model(network), tmp_path_factory.mktemp('onnx') / 't.onnx',
                       HEIGHT, WIDTH)


def test_openvino_fp32_matches_torch_and_sets_the_f32_hint(
        exported: Path, reference: np.ndarray) -> None:
    model = models.load('dav2', exported, backend='openvino', precision='fp32')
    assert (model.backend, model.precision) == ('openvino', 'fp32')
    assert model._config()['INFERENCE_PRECISION_HINT'] == 'f32'  # type: ignore[attr-defined]
    out = model.infer(IMAGES)
    assert out.shape == (2, HEIGHT, WIDTH) and out.dtype == np.float32
    assert rel_l2(out, reference) < BUDGET['fp32']


@needs_bf16
def test_openvino_bf16_within_budget(exported: Path, reference: np.ndarray) -> None:
    model = models.load('dav2', exported, backend='openvino', precision='bf16')
    assert model.precision == 'bf16'
    error = rel_l2(model.infer(IMAGES), reference)
    assert 0 < error < BUDGET['bf16']


@needs_bf16
def test_torch_bf16_within_budget(checkpoint: Path, reference: np.ndarray) -> None:
    model = models.load('dav2', checkpoint, backend='torch', precision='bf16', input_size=28)
    assert (model.backend, model.precision) == ('torch', 'bf16')
    error = rel_l2(model.infer(IMAGES), reference)
    assert 0 < error < BUDGET['bf16']


def test_openvino_threads_are_unpinned_unless_asked(exported: Path) -> None:
    for pin in (False, True):
        model = OpenVinoDepthModel.from_file(exported, name='dav2', precision='fp32',
                                             pin_threads=pin)
        compiled = model._request(HEIGHT, WIDTH).get_compiled_model()
        assert bool(compiled.get_property('ENABLE_CPU_PINNING')) is pin


def test_second_openvino_load_imports_the_cached_compiled_model(exported: Path) -> None:
    first = OpenVinoDepthModel.from_file(exported, name='dav2', precision='fp32')
    second = OpenVinoDepthModel.from_file(exported, name='dav2', precision='fp32')
    assert first.cache_file(HEIGHT, WIDTH) == second.cache_file(HEIGHT, WIDTH)
    assert first.cache_file(HEIGHT, WIDTH).is_file()
    assert (second.cache_hits, second.cache_misses) == (1, 0)
    np.testing.assert_array_equal(first.infer(IMAGES), second.infer(IMAGES))


def test_cache_key_names_model_shape_precision_version_and_cpu(exported: Path) -> None:
    model = OpenVinoDepthModel.from_file(exported, name='dav2', precision='fp32')
    name = model.cache_file(HEIGHT, WIDTH).name
    assert f'1x{HEIGHT}x{WIDTH}x3_fp32_ov' in name and hardware.cpu_key() in name


def test_openvino_converts_a_torch_checkpoint_once_per_size(
        checkpoint: Path, reference: np.ndarray) -> None:
    first = models.load('dav2', checkpoint, backend='openvino', precision='fp32',
                        input_size=28)
    assert rel_l2(first.infer(IMAGES), reference) < BUDGET['fp32']
    second = models.load('dav2', checkpoint, backend='openvino', precision='fp32',
                         input_size=28)
    second.infer(IMAGES)
    assert (second.cache_hits, second.cache_misses) == (1, 0)  # type: ignore[attr-defined]


def test_direct_conversion_keeps_fused_attention_and_fp32_parity(
        network: torch.nn.Module, reference: np.ndarray) -> None:
    torch_model = tiny_torch_model(network)
    direct = OpenVinoDepthModel.from_torch(torch_model, precision='fp32', converter='direct')
    onnx = OpenVinoDepthModel.from_torch(torch_model, precision='fp32')
    assert rel_l2(direct.infer(IMAGES), reference) < BUDGET['fp32']
    assert direct.cache_file(HEIGHT, WIDTH) != onnx.cache_file(HEIGHT, WIDTH)
    ops = {op.get_type_name() for op in direct._graph(HEIGHT, WIDTH).get_ops()}
    assert 'ScaledDotProductAttention' in ops and 'Softmax' not in ops
    with pytest.raises(ConfigError, match='converter'):
        OpenVinoDepthModel.from_torch(torch_model, converter='jit')


def test_openvino_refuses_another_image_size(exported: Path) -> None:
    model = models.load('dav2', exported, backend='openvino', precision='fp32')
    with pytest.raises(ValueError, match='exported for 48x64 images but got 50x64'):
        model.infer(np.zeros((50, 64, 3), np.uint8))


def test_onnxruntime_dynamic_int8_within_budget(
        exported: Path, reference: np.ndarray, tmp_path: Path) -> None:
    from endo_depth_ros.models.quantize import quantize_dynamic_matmul

    path = quantize_dynamic_matmul(exported, tmp_path / 'int8.onnx')
    model = models.load('dav2', path, backend='onnxruntime')
    assert model.precision == 'int8'
    error = rel_l2(model.infer(IMAGES), reference)
    assert 0 < error < BUDGET['int8-dynamic']


def test_export_int8_calibrated_on_a_bag_writes_an_openvino_ir(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from endo_depth_ros import bags
    from endo_depth_ros.synth import SynthConfig, render_sequence

    bag = tmp_path / 'calibration'
    bags.write_sequence(bag, render_sequence(SynthConfig(width=80, height=60, frames=6)))
    out = tmp_path / 'int8.xml'
    code = export_main(['dav2', '--checkpoint', str(checkpoint), '--height', str(HEIGHT),
                        '--width', str(WIDTH), '--input-size', '28', '--int8',
                        '--calibration', str(bag), '--calibration-frames', '4',
                        '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'calibrated on 4 frames' in printed and 'int8 vs torch fp32 relative L2' in printed
    assert out.is_file() and out.with_suffix('.bin').is_file()
    model = models.load('dav2', out)
    assert (model.backend, model.precision) == ('openvino', 'int8')
    disparity = model.infer(IMAGES[0])
    assert disparity.shape == (HEIGHT, WIDTH) and np.isfinite(disparity).all()


def test_int8_calibration_needs_an_xml_output(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = export_main(['dav2', '--checkpoint', str(checkpoint), '--height', '48', '--width',
                        '64', '--int8', '--calibration', str(tmp_path), '--out',
                        str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and 'OpenVINO IR (.xml)' in err


# ------------------------------------------------------------------ refusals


def test_bf16_refused_on_a_cpu_without_it(
        checkpoint: Path, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, 'cpu_supports_bf16', lambda: False)
    for backend, path in (('torch', checkpoint), ('openvino', exported)):
        with pytest.raises(ConfigError, match="precision 'bf16' needs a CPU with native bf16"):
            models.load('dav2', path, backend=backend, precision='bf16', input_size=28)


def test_openvino_missing_is_refused_and_auto_avoids_it(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailableError, match='needs the openvino package'):
        models.load('dav2', checkpoint, backend='openvino', input_size=28)
    assert not hardware.openvino_available()
    network = da.build_network(da.make_config('dav2-s'), device='meta')
    monkeypatch.setattr(hardware, 'cpu_supports_bf16', lambda: True)
    plan = auto.plan_for_network(network, 'auto', 'cpu', 'auto')
    assert (plan.backend, plan.precision) == ('torch', 'bf16')


def test_gpu_benchmark_refuses_without_cuda(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hardware, 'cuda_available', lambda: False)
    assert bench_main(['gpu']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'needs a CUDA device' in err


def test_fp16_and_cuda_refused_on_the_cpu(checkpoint: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        models.load('dav2', checkpoint, backend='torch', device='cpu', precision='fp16')
    with pytest.raises(BackendUnavailableError, match='CUDA is not available'):
        models.load('dav2', checkpoint, backend='torch', device='cuda')


# ------------------------------------------------------------------ auto


@pytest.mark.parametrize(('bf16', 'openvino', 'expected'), [
    (True, True, ('openvino', 'bf16')),
    (True, False, ('torch', 'bf16')),
    (False, True, ('openvino', 'fp32')),
    (False, False, ('torch', 'fp32')),
])
def test_auto_picks_the_fastest_available_cpu_path(
        bf16: bool, openvino: bool, expected: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, 'cpu_supports_bf16', lambda: bf16)
    monkeypatch.setattr(hardware, 'openvino_available', lambda: openvino)
    network = da.build_network(da.make_config('dav2-s'), device='meta')
    plan = auto.plan_for_network(network, 'auto', 'cpu', 'auto')
    assert (plan.backend, plan.precision) == expected
    assert 'budget' in plan.reason and expected[1] in plan.reason


def test_auto_on_cuda_is_torch_fp16() -> None:
    network = da.build_network(da.make_config('dav2-s'), device='meta')
    plan = auto.plan_for_network(network, 'auto', 'cuda', 'auto')
    assert (plan.backend, plan.precision) == ('torch', 'fp16')


def test_auto_keeps_small_networks_in_torch_fp32(checkpoint: Path,
                                                 reference: np.ndarray) -> None:
    model = models.load('dav2', checkpoint, input_size=28)
    assert (model.backend, model.precision) == ('torch', 'fp32')
    assert 'small network' in model.selection
    assert rel_l2(model.infer(IMAGES), reference) < 1e-5


def test_auto_never_picks_int8_or_an_over_budget_path() -> None:
    assert auto.MEASURED_ERROR['int8'] > auto.ACCURACY_BUDGET
    assert auto.MEASURED_ERROR['bf16'] <= auto.ACCURACY_BUDGET


def test_photometric_works_under_auto() -> None:
    model = models.load('photometric', backend='auto', precision='auto')
    assert model.backend == 'opencv' and 'no backend choice' in model.selection
    assert model.infer(IMAGES[0]).shape == (HEIGHT, WIDTH)


# ------------------------------------------------------------------ input size


def test_auto_resize_never_upsamples_a_small_camera(network: torch.nn.Module) -> None:
    official = DepthNet(network, 518, resize='official')
    automatic = DepthNet(network, 518, resize='auto')
    assert official.network_size(256, 320) == (518, 644)  # upsampled 2x (the authors')
    assert automatic.network_size(256, 320) == (252, 308)  # own short side, patch multiple
    assert automatic.network_size(1080, 1920) == official.network_size(1080, 1920)


def test_load_defaults_to_auto_resize(checkpoint: Path) -> None:
    model = models.load('dav2', checkpoint, input_size=518)
    assert model.network_size(HEIGHT, WIDTH) == (42, 56)
    official = models.load('dav2', checkpoint, input_size=518, input_resize='official')
    assert official.network_size(HEIGHT, WIDTH) == (518, 686)


@needs_bf16
def test_auto_precision_falls_back_to_fp32_where_bf16_exceeds_the_budget(
        network: torch.nn.Module, reference: np.ndarray) -> None:
    budget = 1e-4  # far below bf16 rounding (~1e-2 on this network), so bf16 must fail
    model = OpenVinoDepthModel.from_torch(tiny_torch_model(network), precision='bf16',
                                          budget=budget)
    assert model.precision == 'bf16'  # chosen; checked on the first frame of each size
    out = model.infer(IMAGES)
    assert model.measured_error[(HEIGHT, WIDTH)] > budget
    assert model.precision == 'fp32' and 'over the 1e-04 budget: fp32 instead' in model.selection
    assert rel_l2(out, reference) < BUDGET['fp32']


# ------------------------------------------------------------------ other families


@needs_bf16
def test_auto_runs_a_monodepth2_network_in_openvino_checked_per_size(
        tmp_path: Path) -> None:
    from endo_depth_ros.models import monodepth2 as md

    torch.manual_seed(0)
    net = md.SelfSupervisedDepthNet(18, md.VARIANTS['monodepth2']).eval()
    with torch.no_grad():  # a final layer that spreads the sigmoid: a non-constant map
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(20.0)
    encoder, depth = md.monodepth2_state_dicts(net, 64, 96)
    torch.save(encoder, tmp_path / 'encoder.pth')
    torch.save(depth, tmp_path / 'depth.pth')
    reference = models.load('monodepth2', tmp_path, backend='torch', precision='fp32',
                            device='cpu').infer(IMAGES)
    assert reference.std() > 0.01 * np.abs(reference).mean()
    model = models.load('monodepth2', tmp_path)  # the defaults: backend and precision auto
    assert (model.backend, model.precision) == ('openvino', 'bf16')  # until checked
    out = model.infer(IMAGES)
    error = model.measured_error[(HEIGHT, WIDTH)]  # type: ignore[attr-defined]
    centred = np.linalg.norm(out - reference) / np.linalg.norm(reference - reference.mean())
    assert f'centred rel. L2 {error:.1e}' in model.selection
    if error > auto.ACCURACY_BUDGET:  # bf16 shifts this random network's structure: fp32
        assert model.precision == 'fp32' and 'fp32 instead' in model.selection
    assert centred <= auto.ACCURACY_BUDGET


def test_auto_keeps_unmeasured_families_in_torch() -> None:
    assert auto.TORCH_ONLY_FAMILIES == ('zoedepth',)
    assert all(name in models.MODEL_NAMES for name in auto.TORCH_ONLY_FAMILIES)


# ------------------------------------------------------------------ benchmark


def test_backend_comparison_divides_each_round_by_the_peak_of_that_round() -> None:
    from endo_depth_ros.bench import backends

    captions: list[str] = []
    rows, peaks = backends.compare('dav2-s', [(140, 140)], ['torch'], device='cpu', repeats=2,
                                   frames=1, build=backends.build_cpu_variant,
                                   report=lambda rows, caption: captions.append(caption))
    assert len(peaks) == 2 and all(p.square['bf16'] > 0 and p.achievable_ms['bf16'] > 0
                                   for p in peaks)
    (row,) = rows
    assert float(row['best ms']) <= float(row['ms/frame'])  # type: ignore[arg-type]
    median, bracket = str(row['% bf16 achievable']).split(' ', 1)
    low, high = (float(v) for v in bracket.strip('()').split('-'))
    assert 0 < low <= float(median) <= high
    assert 'in-run 2048^2 matmul' in captions[0] and 'T=101' in captions[0]


def test_model_cost_splits_the_vit_products() -> None:
    from endo_depth_ros.bench import backends

    cost = backends.ModelCost(total=100e9, attention=30e9, linear=2 * 1370 * 384 * 4608 * 12.0,
                              tokens=1370, hidden=384, mlp=1536, heads=6)
    shapes = cost.linear_shapes()
    assert set(shapes) == {(1370, 384, 384), (1370, 384, 1536), (1370, 1536, 384)}
    assert abs(sum(shapes.values()) - cost.linear) < 1e-3 * cost.linear
    assert abs(cost.other - (100e9 - 30e9 - cost.linear)) < 1.0


def test_roofline_columns_divide_each_round_by_its_own_peak() -> None:
    from endo_depth_ros.bench import backends

    cost = backends.ModelCost(total=100e9, attention=0.0, linear=0.0, tokens=1, hidden=1,
                              mlp=1, heads=1)
    # Round 1: peak 1000 GFLOP/s -> ideal 100 ms, took 200 ms (50 %); round 2: the peak
    # halved and the model took 400 ms (also 50 %); round 3: 100 ms at 1000 (100 %).
    peaks = [backends.RoundPeak({'fp32': 1000.0, 'bf16': 1000.0}, {'bf16': 80.0}),
             backends.RoundPeak({'fp32': 500.0, 'bf16': 500.0}, {'bf16': 160.0}),
             backends.RoundPeak({'fp32': 1000.0, 'bf16': 1000.0}, {'bf16': 80.0})]
    columns = backends.roofline_columns(cost, peaks, [200.0, 400.0, 100.0], ('fp32', 'bf16'))
    assert columns['% bf16 peak'] == '50 (50-100)'
    assert columns['% bf16 achievable'] == '40 (40-80)'
    assert backends.round_fractions([50.0, 100.0], [100.0, 200.0]) == [0.5, 0.5]
