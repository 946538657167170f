"""Video Depth Anything and EndoDAV: official key layout, adapters, streaming, windows, reset."""

from __future__ import annotations

from dataclasses import replace
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from endo_depth_ros import models
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import ConfigError, ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models import video_depth_anything as vda
from endo_depth_ros.pipeline import ModelConfig, Pipeline, PipelineConfig

SIZE = 28  # network input short side: 2x2 patches, milliseconds per step


def random_video_network(seed: int = 0) -> vda.VideoDepthNet:
    """A tiny VDA whose outputs vary (random weights everywhere, positive output bias)."""
    network = vda.build_video_network(vda.tiny_video_config())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith('pos_encoder.pe'):
                continue  # a fixed table, stored by the official checkpoints
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
        network.head.conv3.bias.fill_(1.0)
    return network


def official_checkpoint(tmp_path: Path, network: nn.Module, name: str = 'vda.pth') -> Path:
    path = tmp_path / name
    torch.save(vda.ours_to_official(network.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return official_checkpoint(tmp_path_factory.mktemp('vda'), random_video_network())


@pytest.fixture
def model(checkpoint: Path) -> vda.VideoDepthModel:
    loaded = models.load('vda', checkpoint, device='cpu', input_size=SIZE)
    assert isinstance(loaded, vda.VideoDepthModel)
    return loaded


def frames(count: int, height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------- loading


def test_official_keys_round_trip_and_load_strictly(tmp_path: Path) -> None:
    network = random_video_network()
    ours = network.state_dict()
    official = vda.ours_to_official(ours)
    assert any(k.startswith('head.motion_modules.0.temporal_transformer.') for k in official)
    assert any(k.startswith('pretrained.blocks.0.attn.qkv.') for k in official)
    assert all(k.startswith(('pretrained.', 'head.')) for k in official)
    back = vda.official_to_ours(official)
    assert set(back) == set(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)

    loaded = vda.load_video_network('vda', official_checkpoint(tmp_path, network))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ours.items())
    pixels = torch.randn(3, 3, SIZE, 2 * SIZE)
    with torch.no_grad():
        expected, _ = network(pixels, 3)
        got, states = loaded(pixels, 3)
    torch.testing.assert_close(got, expected)
    assert len(states) == vda.STATES_PER_FRAME


def test_vits_layout_has_the_official_parameter_count() -> None:
    network = vda.build_video_network(vda.video_config('s'), device='meta')
    official = vda.ours_to_official(network.state_dict())
    # video_depth_anything_vits.pth: 28.4 M parameters (DINOv2-S 22.1 M + temporal head).
    count = sum(t.numel() for k, t in official.items() if not k.endswith('pos_encoder.pe'))
    assert 27e6 < count < 30e6
    assert official['head.motion_modules.0.temporal_transformer.proj_in.weight'].shape == (192, 192)
    assert official['head.motion_modules.3.temporal_transformer.transformer_blocks.0.ff.net.0'
                    '.proj.weight'].shape == (512, 64)


@pytest.mark.parametrize(('edit', 'message'), [
    (lambda sd: sd.pop('head.motion_modules.1.temporal_transformer.proj_out.weight'),
     'missing keys.*motion_modules.1.temporal_transformer.proj_out.weight'),
    (lambda sd: sd.__setitem__('head.extra.weight', torch.zeros(1)), 'unexpected keys.*head.extra'),
    (lambda sd: sd.__setitem__('pretrained.blocks.0.mlp.fc1.lora_A', torch.zeros(1, 64)),
     'load it as endodav'),
    (lambda sd: [sd.pop(k) for k in list(sd) if 'motion_modules' in k], 'no motion modules'),
])
def test_bad_checkpoints_are_refused_naming_the_problem(
        tmp_path: Path, edit: object, message: str) -> None:
    state_dict = vda.ours_to_official(random_video_network().state_dict())
    edit(state_dict)  # type: ignore[operator]
    path = tmp_path / 'bad.pth'
    torch.save(state_dict, path)
    with pytest.raises(ModelLoadError, match=message):
        vda.load_video_network('vda', path)


def test_sized_names_check_the_vit_size_and_backends_are_checked(
        checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match='not the vits'):
        models.load('vda-s', checkpoint, device='cpu')
    with pytest.raises(ConfigError, match='torch or onnxruntime'):
        models.load('vda', checkpoint, backend='tensorrt')
    with pytest.raises(ModelLoadError, match='not a readable ONNX model'):
        models.load('vda', checkpoint, backend='onnxruntime')
    for name in ('vda-s', 'vda-metric-l', 'vda', 'endodav'):
        assert name in models.MODEL_NAMES and vda.is_video_name(name)
    assert not vda.is_video_name('dav2-s')


# -------------------------------------------------------------------- EndoDAV


class AdapterLinear(nn.Module):
    """EndoDAV's adapted linear layers as their forward passes compute them (unmerged)."""

    def __init__(self, base: nn.Linear, kind: str, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.base, self.kind, self.t = base, kind, tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, t = self.base.weight, self.base.bias, self.t
        if self.kind == 'ssb':
            return functional.linear(x, t['lora_A'].view(1, -1) * w * t['lora_B'], b)
        out = functional.linear(x, w, b)
        if self.kind == 'lora':
            return out + (x @ t['lora_A'].T @ t['lora_B'].T) * 2.0
        if self.kind == 'dvlora':
            a, bb = t['lora_A'] * t['lora_U'], t['lora_B'] * t['lora_V']
            return out + (x @ a.T @ bb.T) * 1.0
        top = t['weight_u_top'] @ torch.diag(t['lora_index']) @ t['weight_vt_top']
        return out + (x @ t['lora_A'].T @ t['lora_B'].T) * 2.0 + x @ top.T


def adapter_tensors(
        kind: str, out_f: int, in_f: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    def rand(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    r = 4
    if kind == 'ssb':
        return {'lora_A': 1 + rand(in_f, 1), 'lora_B': 1 + rand(out_f, 1)}
    tensors = {'lora_A': rand(r, in_f), 'lora_B': rand(out_f, r)}
    if kind == 'dvlora':
        tensors |= {'lora_U': rand(r, 1, scale=1.0), 'lora_V': rand(out_f, 1, scale=1.0)}
    if kind == 'dash':
        tensors |= {'lora_index': rand(8), 'weight_u_top': rand(out_f, 8),
                    'weight_vt_top': rand(8, in_f),
                    'lora_change_a': rand(8), 'lora_change_bb': rand(8)}
    return tensors


@pytest.mark.parametrize('kind', ['ssb', 'lora', 'dvlora', 'dash'])
def test_endodav_adapters_merge_into_weights_that_equal_the_adapter_forward_pass(
        tmp_path: Path, kind: str) -> None:
    base = random_video_network(seed=1)
    official = vda.ours_to_official(base.state_dict())
    adapted = vda.build_video_network(vda.tiny_video_config())
    adapted.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(2)
    layers = {}  # official prefix -> our module path
    for i in range(len(base.backbone.encoder.layer)):
        for fc in ('fc1', 'fc2'):
            layers[f'pretrained.blocks.{i}.mlp.{fc}'] = f'backbone.encoder.layer.{i}.mlp.{fc}'
    for j in range(vda.MOTION_MODULES):  # EndoDAV's temporal adapters: the ff output layer
        path = f'motion_modules.{j}.temporal_transformer.transformer_blocks.0.ff.net.2'
        layers[f'head.{path}'] = path
    for prefix, path in layers.items():
        linear = adapted.get_submodule(path)
        assert isinstance(linear, nn.Linear)
        tensors = adapter_tensors(kind, linear.out_features, linear.in_features, g)
        official.update({f'{prefix}.{k}': v for k, v in tensors.items()})
        parent, _, leaf = path.rpartition('.')
        setattr(adapted.get_submodule(parent), leaf, AdapterLinear(linear, kind, tensors))
    checkpoint = tmp_path / 'depth_model.pth'
    torch.save(official, checkpoint)

    merged = vda.load_video_network('endodav', checkpoint)
    assert not any('lora' in k for k in merged.state_dict())
    pixels = torch.randn(4, 3, SIZE, 2 * SIZE, generator=g)
    with torch.no_grad():
        expected, _ = adapted(pixels, 4)
        got, _ = merged(pixels, 4)
        plain, _ = base(pixels, 4)
    difference = float((got - expected).norm() / expected.norm())
    assert difference <= 1e-5
    assert float((plain - expected).norm() / expected.norm()) > 1e-3  # the adapters matter


def test_endodav_model_feeds_its_fixed_input_and_its_own_window_schedule(tmp_path: Path) -> None:
    checkpoint = official_checkpoint(tmp_path, random_video_network(), 'depth_model.pth')
    model = models.load('endodav', checkpoint, device='cpu')
    assert isinstance(model, vda.VideoDepthModel)
    assert model.network_size(480, 640) == vda.ENDODAV_INPUT == (224, 280)
    assert model.schedule.keyframes == (6, 12, 24, 25, 26, 27, 28, 29, 30, 31)
    depth = model.infer(frames(1, 48, 60)[0])
    assert depth.shape == (48, 60) and np.isfinite(depth).all()
    with pytest.raises(ModelLoadError, match='multi-scale sigmoid head'):
        state = vda.ours_to_official(random_video_network().state_dict())
        state['head.conv_depth_1.conv.weight'] = torch.zeros(1)
        torch.save(state, tmp_path / 'conv_head.pth')
        vda.load_video_network('endodav', tmp_path / 'conv_head.pth')


def test_preprocessing_reduces_the_input_for_frames_wider_than_16_to_9() -> None:
    assert vda.video_network_size(480, 640, 518) == (518, 686)
    # 1080x2560 (ratio 2.37): input_size int(518 * 1.777 / 2.37) = 388 -> 392.
    assert vda.video_network_size(1080, 2560, 518) == (392, 924)


# ------------------------------------------------------------------ streaming


def official_context(pushes: int) -> list[int]:
    """Frame indices the official ``infer_video_depth_one`` attends to at step ``pushes``."""
    ids: list[int] = []
    for frame in range(pushes):
        if frame == 0:
            ids = [0] * vda.WINDOW
        else:
            ids.append(frame)
            if frame + vda.WINDOW > vda.STREAM_GAP + 1:
                del ids[1]
    return ids[:2] + ids[-(vda.WINDOW - 3):]


def test_streaming_cache_reads_the_frames_of_the_official_stream_in_bounded_memory(
        model: vda.VideoDepthModel) -> None:
    storage_bytes = None
    pointers: list[int] = []
    images = frames(8, 14, 14)
    for step in range(500):
        depth = model.infer(images[step % len(images)])
        assert depth.shape == (14, 14)
        cache = model.cache
        assert cache.context_frames() == official_context(step + 1), step
        if storage_bytes is None:
            storage_bytes = cache.nbytes
            pointers = [t.data_ptr() for t in cache._storage]
        assert cache.nbytes == storage_bytes  # allocated once, on the first frame
        assert [t.data_ptr() for t in cache._storage] == pointers
    assert model.cache_fill == (vda.WINDOW - 1, vda.WINDOW - 1)
    assert model.cache.frames == 500
    assert len(set(model.cache._order)) <= vda.STREAM_GAP + 1


def test_reset_forgets_the_stream_and_a_new_size_starts_one(model: vda.VideoDepthModel) -> None:
    images = frames(6)
    first = model.infer(images[0])
    later = [model.infer(image) for image in images[1:]]
    again = model.infer(images[0])
    assert not np.allclose(again, first, rtol=1e-4)  # the cached frames changed the output
    model.reset()
    assert model.cache.empty and model.cache_fill == (0, vda.WINDOW - 1)
    np.testing.assert_allclose(model.infer(images[0]), first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.infer(images[1]), later[0], rtol=1e-5, atol=1e-6)
    wide = model.infer(frames(1, SIZE, 2 * SIZE)[0])
    assert wide.shape == (SIZE, 2 * SIZE) and model.cache.frames == 1


# ------------------------------------------------------------------- windows


@pytest.mark.parametrize('schedule', [vda.VDA_SCHEDULE, vda.ENDODAV_SCHEDULE])
def test_window_stitching_undoes_each_windows_scale_and_shift(schedule: vda.WindowSchedule) -> None:
    rng = np.random.default_rng(0)
    count = 70
    truth = rng.uniform(0.5, 2.0, (count, 4, 5)).astype(np.float32)
    padded = list(range(count)) + [count - 1] * (vda.padded_length(count) - count)
    stitcher = vda.WindowStitcher(schedule)
    previous: list[int] | None = None
    for k, start in enumerate(vda.window_starts(count)):
        index = padded[start:start + vda.WINDOW]
        if previous is not None:
            index[:vda.OVERLAP] = [previous[i] for i in schedule.keyframes]
        scale, shift = 1.0 + 0.5 * k, 0.1 * k  # each window has its own units
        stitcher.push([truth[i] * scale + shift for i in index])
        previous = index
    assert len(stitcher.aligned) == vda.padded_length(count)
    np.testing.assert_allclose(np.stack(stitcher.aligned[:count]), truth, rtol=1e-5)


def test_fit_scale_shift_solves_the_least_squares_problem() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 500)
    assert vda.fit_scale_shift(x, 3 * x - 0.5) == pytest.approx((3.0, -0.5))
    assert vda.fit_scale_shift(np.ones(10), np.arange(10.0)) == (1.0, 0.0)


def test_infer_video_returns_every_frame_and_leaves_the_stream_alone(
        model: vda.VideoDepthModel) -> None:
    model.infer(frames(1)[0])
    clip = frames(45, SIZE, 36, seed=3)
    depth = model.infer_video(clip)
    assert depth.shape == (45, SIZE, 36) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth >= 0).all() and depth.std() > 0
    assert model.cache.frames == 1
    assert model.infer_video(clip[:1]).shape == (1, SIZE, 36)
    # The first window is the network's raw output for those frames.
    with torch.no_grad():
        padded = np.concatenate([clip[:32]])
        raw, _ = model.net(torch.from_numpy(padded))
    np.testing.assert_allclose(depth[:vda.WINDOW - vda.INTERP], raw.numpy()[:24], rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------- pipeline


def test_pipeline_keeps_the_scale_policy_only_and_resets_the_model_stream(
        model: vda.VideoDepthModel) -> None:
    camera = Intrinsics(fx=20.0, fy=20.0, cx=14.0, cy=14.0, width=SIZE, height=SIZE)
    pipeline = Pipeline(PipelineConfig(), model=model)
    assert pipeline.aligner.config.mode == 'none'
    for i, image in enumerate(frames(5)):
        (out,) = pipeline.process(image, camera, stamp_ns=i)
        assert np.isfinite(out.depth).any()
    assert model.cache.frames == 5
    pipeline.reset()
    assert model.cache.empty
    pipeline.process(frames(1)[0], camera, stamp_ns=10)
    zoom = replace(camera, fx=30.0, fy=30.0)  # a new camera restarts the stream
    pipeline.process(frames(1)[0], zoom, stamp_ns=11)
    assert model.cache.frames == 1
    config = PipelineConfig(model=ModelConfig(video_alignment='aligner'))
    assert Pipeline(config, model=model).aligner.config.mode == 'stream'
    with pytest.raises(ConfigError, match='video_alignment'):
        ModelConfig(video_alignment='bogus')


def test_sinusoidal_frame_encoding_matches_its_formula() -> None:
    table = vda.FramePositionEncoding(8, 4).pe[0]
    assert table[3, 2] == pytest.approx(math.sin(3 * math.exp(2 * -math.log(1e4) / 8)))
    assert table[2, 1] == pytest.approx(math.cos(2.0))


def test_tiny_config_is_a_depth_anything_v2_config() -> None:
    config = vda.tiny_video_config()
    assert config.neck_hidden_sizes == [16, 32, 32, 64]
    assert da.intermediate_layers(2, 64, 4) == [0, 1, 2, 3]


def test_bench_rows_time_streaming_and_windows_against_dav2_s() -> None:
    from endo_depth_ros.bench.models import video_model_rows

    rows = video_model_rows(frames(1, SIZE, 36)[0], repeats=1, clip_frames=3)
    assert [(r['model'], r['mode']) for r in rows] == [
        ('dav2-s', 'per frame'), ('vda-s', 'stream'), ('vda-s', 'window (3 frames)')]
    assert rows[0]['vs dav2-s'] == 1.0
    assert all(float(str(r['ms/frame'])) > 0 for r in rows)


def test_onnx_streaming_step_matches_torch_over_a_stream(
        model: vda.VideoDepthModel, tmp_path: Path) -> None:
    from endo_depth_ros.errors import BadInputError

    path = vda.export_video_onnx(model, tmp_path / 'vda_step.onnx', SIZE, 42)
    exported = models.load('vda', path, backend='onnxruntime', device='cpu')
    assert isinstance(exported, vda.OnnxVideoDepthModel)
    model.reset()
    for step, image in enumerate(frames(40, SIZE, 42, seed=5)):
        reference = model.infer(image)
        got = exported.infer(image)
        # Relative L2, as parity is measured (the random tiny net's outputs reach 1e3).
        assert float(np.linalg.norm(got - reference) / np.linalg.norm(reference)) <= 1e-4, step
    assert exported.cache.context_frames() == model.cache.context_frames()
    exported.reset()
    assert exported.cache.empty
    with pytest.raises(BadInputError, match='takes 42x28 images'):
        exported.infer(frames(1)[0])
    with pytest.raises(ConfigError, match='needs the torch backend'):
        exported.infer_video(frames(2, SIZE, 42))


def test_evaluator_runs_a_video_model_streaming_and_in_windows(
        checkpoint: Path, tmp_path: Path) -> None:
    from endo_depth_ros import bags, evaluation
    from endo_depth_ros.synth import SynthConfig, render_sequence

    bag = tmp_path / 'seq'
    bags.write_sequence(bag, render_sequence(SynthConfig(width=48, height=40, frames=10)))
    base = PipelineConfig(model=ModelConfig(device='cpu', input_size=SIZE))
    config = evaluation.EvalConfig(
        models=(evaluation.ModelSpec('vda', str(checkpoint)),), align_modes=('stream', 'none'),
        video_modes=('stream', 'window'), pipeline=base, protocol='sequence-affine')
    results = evaluation.evaluate([bag], config)
    # Both alignment modes collapse to the one a video model runs (scale policy only).
    assert [(r.model, r.align) for r in results] == [
        ('vda:vda.pth [stream]', 'none'), ('vda:vda.pth [window]', 'none')]
    for result in results:
        assert result.frames_total == 10 and result.summary['tae'] is not None
    assert results[0].summary['abs_rel'] != results[1].summary['abs_rel']
    with pytest.raises(ConfigError, match='Video modes'):
        evaluation.EvalConfig(video_modes=('offline',))
