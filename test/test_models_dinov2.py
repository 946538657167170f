"""DINOv2 position embeddings are resized as the official code, in torch, folders and ONNX.

The reference below is written from the rule's description (bicubic, a = -0.75, no
antialiasing, sampling positions given by the scale ``(grid + 0.1) / sqrt(N)``, border
pixels repeated), independently of torch's interpolation.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from model_helpers import random_network, tiny_torch_model
import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.dinov2 import resize_position_embeddings
from endo_depth_ros.models.onnx_runtime import export_onnx


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 neighbours at fractional offset t."""
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0
    return [kernel(t + 1), kernel(t), kernel(1 - t), kernel(2 - t)]


def _resize_axis(grid: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    grid = np.moveaxis(grid, axis, 0)
    n = grid.shape[0]
    out = np.zeros((out_len, *grid.shape[1:]))
    for i in range(out_len):
        src = (i + 0.5) / scale - 0.5  # half-pixel centres, step 1 / scale
        base = math.floor(src)
        for k, w in enumerate(_cubic_weights(src - base)):
            out[i] += w * grid[min(max(base - 1 + k, 0), n - 1)]
    return np.moveaxis(out, 0, axis)


def reference_resize(embeddings: np.ndarray, grid_h: int, grid_w: int) -> np.ndarray:
    """(1, 1 + N, C) -> (1, 1 + grid_h * grid_w, C), per the official description."""
    side = round(math.sqrt(embeddings.shape[1] - 1))
    patch = embeddings[0, 1:].reshape(side, side, -1).astype(np.float64)
    patch = _resize_axis(patch, 0, grid_h, (grid_h + 0.1) / side)
    patch = _resize_axis(patch, 1, grid_w, (grid_w + 0.1) / side)
    return np.concatenate([embeddings[0, :1], patch.reshape(grid_h * grid_w, -1)])[None]


@pytest.mark.parametrize(('grid_h', 'grid_w'), [(19, 25), (37, 49), (20, 20), (5, 9), (9, 5)])
def test_resize_matches_the_official_rule(grid_h: int, grid_w: int) -> None:
    embeddings = torch.randn(1, 1 + 37 * 37, 6, generator=torch.Generator().manual_seed(3))
    ours = resize_position_embeddings(embeddings, grid_h, grid_w).numpy()
    expected = reference_resize(embeddings.numpy(), grid_h, grid_w)
    assert ours.shape == (1, 1 + grid_h * grid_w, 6)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_resize_to_a_target_size_would_differ() -> None:
    # Guards the test above: transformers' size-based rule is measurably different.
    embeddings = torch.randn(1, 1 + 37 * 37, 6, generator=torch.Generator().manual_seed(3))
    patch = embeddings[:, 1:].reshape(1, 37, 37, 6).permute(0, 3, 1, 2)
    by_size = torch.nn.functional.interpolate(patch, size=(19, 25), mode='bicubic')
    by_size = by_size.permute(0, 2, 3, 1).reshape(1, -1, 6).numpy()
    expected = reference_resize(embeddings.numpy(), 19, 25)[:, 1:]
    assert np.abs(by_size - expected).max() > 1e-2


@pytest.fixture(scope='module')
def tiny() -> torch.nn.Module:
    return random_network(da.tiny_config('dav2'), seed=5)


def test_network_embeddings_follow_the_official_rule(tiny: torch.nn.Module) -> None:
    embeddings = tiny.backbone.embeddings
    table = embeddings.position_embeddings.detach()
    tokens = torch.zeros(1, 1 + 3 * 5, table.shape[-1])
    ours = embeddings.interpolate_pos_encoding(tokens, 42, 70).detach().numpy()
    np.testing.assert_allclose(ours, reference_resize(table.numpy(), 3, 5), atol=2e-5)


def test_square_pretraining_grid_is_kept_unchanged(tiny: torch.nn.Module) -> None:
    embeddings = tiny.backbone.embeddings
    table = embeddings.position_embeddings
    tokens = torch.zeros(1, table.shape[1], table.shape[-1])
    assert embeddings.interpolate_pos_encoding(tokens, 98, 98) is table


def test_rule_survives_save_pretrained(tiny: torch.nn.Module, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / 'folder')
    model = models.load('dav2', tmp_path / 'folder', device='cpu', input_size=28)
    reloaded = model.net.network  # type: ignore[attr-defined]
    x = torch.randn(1, 3, 42, 70, generator=torch.Generator().manual_seed(1))
    # The CPU runner keeps conv weights channels_last: compare like with like.
    reference = copy.deepcopy(tiny).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference(pixel_values=x).predicted_depth
        actual = reloaded(pixel_values=x).predicted_depth
    torch.testing.assert_close(actual, expected)
    assert type(reloaded.backbone.embeddings).__name__.startswith('Official')


def test_onnx_export_keeps_the_official_rule(tiny: torch.nn.Module, tmp_path: Path) -> None:
    torch_model = tiny_torch_model(tiny)
    height, width = 36, 60  # network input 28 x 42: a 2 x 3 token grid
    path = export_onnx(torch_model, tmp_path / 'tiny.onnx', height, width)
    onnx_model = models.load('dav2', path, backend='onnxruntime', device='cpu')
    rgb = np.random.default_rng(2).integers(0, 256, (height, width, 3), np.uint8)
    expected = torch_model.infer(rgb)
    actual = onnx_model.infer(rgb)
    scale = float(np.abs(expected).max())
    assert float(np.abs(actual - expected).max()) / scale < 1e-4


class _PositionEmbeddings(torch.nn.Module):
    """The resize alone, as a graph (input: the pre-training table)."""

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        return resize_position_embeddings(table, 37, 49)


def test_openvino_computes_the_same_embeddings(tmp_path: Path) -> None:
    # OpenVINO's bicubic Resize given scales samples differently (6 % here): the resize
    # must reach every runtime as plain matrix products.
    import onnxruntime as ort
    import openvino as ov

    table = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(4))
    path = tmp_path / 'embeddings.onnx'
    torch.onnx.export(_PositionEmbeddings(), (table,), str(path), dynamo=False)
    expected = reference_resize(table.numpy(), 37, 49)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    by_ort = session.run(None, {session.get_inputs()[0].name: table.numpy()})[0]
    compiled = ov.Core().compile_model(str(path), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    by_openvino = compiled(table.numpy())[0]
    for out in (by_ort, by_openvino):
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=2e-5)
