"""monodepth2 family and SC-SfMLearner: official layouts load strictly, output formulas, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.cli.export import main as export_main
from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models import monodepth2 as md
from endo_depth_ros.models.frame_network import count_parameters, lanczos_matrix
from endo_depth_ros.models.resnet import ResNetEncoder

#: Plain torch fp32 (``auto`` would pick OpenVINO/bf16): these tests check the torch network.
TORCH_FP32: dict[str, str] = {'device': 'cpu', 'backend': 'torch', 'precision': 'fp32'}
#: torchvision's ResNet parameter counts minus the 1000-class ``fc`` layer.
TORCHVISION_TRUNK_PARAMETERS = {18: 11_689_512 - 513_000, 50: 25_557_032 - 2_049_000}


def _random_net(variant: str, num_layers: int = 18, seed: int = 0) -> md.SelfSupervisedDepthNet:
    torch.manual_seed(seed)
    net = md.SelfSupervisedDepthNet(num_layers, md.VARIANTS[variant])
    with torch.no_grad():  # non-trivial batch-norm statistics, as a trained network has
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return net.eval()


def _write_folder(net: md.SelfSupervisedDepthNet, folder: Path, size: tuple[int, int] = (64, 96),
                  ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    encoder, depth = md.monodepth2_state_dicts(net, *size)
    torch.save(encoder, folder / 'encoder.pth')
    torch.save(depth, folder / 'depth.pth')
    return folder


@pytest.fixture(scope='module')
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder(_random_net('monodepth2'), tmp_path_factory.mktemp('md') / 'weights_19')


@pytest.mark.parametrize('num_layers', [18, 50])
def test_resnet_trunk_has_torchvision_names_and_sizes(num_layers: int) -> None:
    encoder = ResNetEncoder(num_layers)
    assert count_parameters(encoder) == TORCHVISION_TRUNK_PARAMETERS[num_layers]
    keys = set(encoder.state_dict())
    assert {'conv1.weight', 'bn1.running_var', 'layer2.0.downsample.0.weight',
            'layer4.1.bn2.num_batches_tracked'} <= keys
    features = encoder(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(encoder.channels)
    assert [f.shape[-2:] for f in features] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]


def test_monodepth2_folder_loads_strictly_and_matches_the_network(folder: Path) -> None:
    net = _random_net('monodepth2')
    model = models.load('monodepth2', folder, **TORCH_FP32)
    assert model.output_kind == 'relative_disparity'
    assert model.network_size(480, 640) == (64, 96)  # the training size stored in encoder.pth
    loaded = model.net.network  # type: ignore[attr-defined]
    assert count_parameters(loaded) == count_parameters(net)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = net((x - 0.45) / 0.225)
        # The CPU runner keeps conv weights channels_last: same maths, other kernels.
        torch.testing.assert_close(loaded((x - 0.45) / 0.225), expected, rtol=1e-5, atol=1e-5)
    out = model.infer(np.full((50, 70, 3), 128, np.uint8))
    assert out.shape == (50, 70) and out.dtype == np.float32


def test_encoder_file_inside_the_folder_is_accepted(folder: Path) -> None:
    model = models.load('monodepth2', folder / 'encoder.pth', **TORCH_FP32)
    assert model.network_size(10, 10) == (64, 96)


def test_resnet50_is_read_from_the_tensors(tmp_path: Path) -> None:
    net = _random_net('af-sfmlearner', num_layers=50)
    model = models.load('af-sfmlearner', _write_folder(net, tmp_path / 'r50'), **TORCH_FP32)
    loaded = model.net.network  # type: ignore[attr-defined]
    assert loaded.encoder.channels[-1] == 2048
    assert count_parameters(loaded.encoder) == TORCHVISION_TRUNK_PARAMETERS[50]


@pytest.mark.parametrize(('variant', 'low', 'high'), [
    ('monodepth2', 1 / 100, 1 / 0.1), ('af-sfmlearner', 1 / 150, 1 / 0.1),
    ('sc-sfmlearner', 0.01, 10.01)])
def test_sigmoid_maps_to_each_variants_disparity_range(variant: str, low: float, high: float,
                                                       ) -> None:
    net = _random_net(variant)
    assert net.variant.disparity_range() == pytest.approx((low, high))
    head = net.decoder.decoder[10].conv
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        head.weight.zero_()
        for bias, expected in ((40.0, high), (-40.0, low), (0.0, (low + high) / 2)):
            head.bias.fill_(bias)
            assert torch.allclose(net(x), torch.full((1, 1, 64, 64), expected), rtol=1e-5)


def test_variants_differ_only_in_normalisation_and_range(folder: Path) -> None:
    mono = models.load('monodepth2', folder, **TORCH_FP32)
    af = models.load('af-sfmlearner', folder, **TORCH_FP32)
    assert mono.net.normalise and not af.net.normalise  # type: ignore[attr-defined]
    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    af_net = af.net.network  # type: ignore[attr-defined]
    with torch.no_grad():
        sigmoid = af_net.decoder(af_net.encoder(x))[0, 0].numpy()
    np.testing.assert_allclose(af.infer(rgb), 1 / 150 + (10 - 1 / 150) * sigmoid, rtol=1e-5)
    assert not np.allclose(mono.infer(rgb), af.infer(rgb))


def test_sc_sfmlearner_checkpoint_loads_strictly(tmp_path: Path) -> None:
    net = _random_net('sc-sfmlearner')
    path = tmp_path / 'dispnet_model_best.pth.tar'
    checkpoint = md.sc_sfmlearner_checkpoint(net)
    assert 'encoder.encoder.conv1.weight' in checkpoint['state_dict']
    assert 'decoder.decoder.13.conv.weight' in checkpoint['state_dict']
    torch.save(checkpoint, path)
    model = models.load('sc-sfmlearner', path, **TORCH_FP32, input_size=64)
    assert model.network_size(480, 640) == (64, 96)  # aspect kept, multiples of 32
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.net.network(x), net(x),  # type: ignore[attr-defined]
                                   rtol=1e-5, atol=1e-5)  # channels_last kernels


def test_sc_sfmlearner_dataparallel_prefix_is_removed(tmp_path: Path) -> None:
    state = md.sc_sfmlearner_checkpoint(_random_net('sc-sfmlearner'))['state_dict']
    torch.save({'module.' + k: v for k, v in state.items()}, tmp_path / 'dispnet.pth.tar')
    models.load('sc-sfmlearner', tmp_path / 'dispnet.pth.tar', **TORCH_FP32, input_size=64)


def test_folder_without_training_size_is_refused(tmp_path: Path) -> None:
    folder = _write_folder(_random_net('monodepth2'), tmp_path / 'm')
    encoder = torch.load(folder / 'encoder.pth', weights_only=True)
    del encoder['height']
    torch.save(encoder, folder / 'encoder.pth')
    with pytest.raises(ModelLoadError, match='lacks the training size'):
        models.load('monodepth2', folder, device='cpu')


def test_folder_without_decoder_is_refused(tmp_path: Path) -> None:
    folder = _write_folder(_random_net('monodepth2'), tmp_path / 'm')
    (folder / 'depth.pth').unlink()
    with pytest.raises(ModelLoadError, match=r'depth\.pth is missing'):
        models.load('monodepth2', folder, device='cpu')


def test_wrong_tensors_are_listed(tmp_path: Path) -> None:
    folder = _write_folder(_random_net('monodepth2'), tmp_path / 'm')
    depth = torch.load(folder / 'depth.pth', weights_only=True)
    depth['extra.weight'] = torch.zeros(1)
    del depth['decoder.0.conv.conv.bias']
    torch.save(depth, folder / 'depth.pth')
    with pytest.raises(ModelLoadError, match=r'missing keys \[1\]: decoder\.decoder\.0\.conv\.conv'
                                             r'\.bias; unexpected keys \[1\]: decoder\.extra'):
        models.load('monodepth2', folder, device='cpu')


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / 'dispnet.pth.tar'
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ModelLoadError, match='is not a PyTorch/safetensors checkpoint') as info:
        models.load('sc-sfmlearner', path, device='cpu')
    assert '\n' not in str(info.value)


def test_lanczos_resize_matches_pillow_float_resize() -> None:
    image_module = pytest.importorskip('PIL.Image')
    rng = np.random.default_rng(0)
    plane = rng.random((37, 53)).astype(np.float32)
    for out_h, out_w in ((16, 20), (64, 96), (37, 40)):
        pil = image_module.fromarray(plane).resize((out_w, out_h), image_module.LANCZOS)
        ours = lanczos_matrix(37, out_h) @ plane @ lanczos_matrix(53, out_w).T
        np.testing.assert_allclose(ours, np.asarray(pil), atol=2e-6)


def test_onnx_export_matches_torch(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / 'md.onnx'
    assert export_main(['monodepth2', '--checkpoint', str(folder), '--height', '50',
                        '--width', '70', '--out', str(out), '--no-verify']) == 0
    torch_model = models.load('monodepth2', folder, **TORCH_FP32)
    onnx_model = models.load('monodepth2', out, backend='onnxruntime', device='cpu')
    rgb = np.random.default_rng(2).integers(0, 256, (50, 70, 3), np.uint8)
    expected = torch_model.infer(rgb)
    assert np.abs(onnx_model.infer(rgb) - expected).max() <= 1e-4 * np.abs(expected).max()
    with pytest.raises(ModelLoadError, match="exported from 'monodepth2', not 'af-sfmlearner'"):
        models.load('af-sfmlearner', out, backend='onnxruntime', device='cpu')
