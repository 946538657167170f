"""Adapter merging: merged weights reproduce the adapter forward pass."""

from __future__ import annotations

import pytest
import torch

from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models.adapters import (
    AdapterRule,
    find_adapters,
    merge_adapters,
)


def _adapted_linear_state(rank: int = 3, dv: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {
        'blocks.0.fc.weight': torch.randn(7, 5, generator=gen),
        'blocks.0.fc.bias': torch.randn(7, generator=gen),
        'blocks.0.fc.lora_A': torch.randn(rank, 5, generator=gen),
        'blocks.0.fc.lora_B': torch.randn(7, rank, generator=gen),
        'blocks.0.norm.weight': torch.randn(5, generator=gen),
    }
    if dv:
        state['blocks.0.fc.lora_U'] = torch.randn(rank, 1, generator=gen)
        state['blocks.0.fc.lora_V'] = torch.randn(7, 1, generator=gen)
    return state


def _adapter_forward(state: dict[str, torch.Tensor], x: torch.Tensor, scale: float) -> torch.Tensor:
    """The reference adapter layers' forward pass: base linear + low-rank branch."""
    p = 'blocks.0.fc.'
    out = torch.nn.functional.linear(x, state[p + 'weight'], state[p + 'bias'])
    a, b = state[p + 'lora_A'], state[p + 'lora_B']
    if p + 'lora_U' in state:
        a, b = a * state[p + 'lora_U'], b * state[p + 'lora_V']
    return out + (x @ a.T @ b.T) * scale


@pytest.mark.parametrize('dv', [False, True])
def test_merged_weights_reproduce_the_adapter_forward_pass(dv: bool) -> None:
    state = _adapted_linear_state(dv=dv)
    merged = merge_adapters(state, scaling=0.75)
    assert set(merged) == {'blocks.0.fc.weight', 'blocks.0.fc.bias', 'blocks.0.norm.weight'}
    x = torch.randn(11, 5)
    reference = _adapter_forward(state, x, 0.75)
    plain = torch.nn.functional.linear(x, merged['blocks.0.fc.weight'], merged['blocks.0.fc.bias'])
    assert (plain - reference).norm() / reference.norm() <= 1e-6
    assert merged['blocks.0.norm.weight'] is state['blocks.0.norm.weight']
    assert 'blocks.0.fc.lora_A' in state  # the input is not modified


def test_scaling_can_depend_on_the_layer_and_rank() -> None:
    state = _adapted_linear_state(rank=4, dv=False)
    seen: list[tuple[str, int]] = []

    def scaling(prefix: str, rank: int) -> float:
        seen.append((prefix, rank))
        return 1.0 / rank

    merged = merge_adapters(state, scaling=scaling)
    assert seen == [('blocks.0.fc', 4)]
    x = torch.randn(2, 5)
    reference = _adapter_forward(state, x, 0.25)
    plain = torch.nn.functional.linear(x, merged['blocks.0.fc.weight'], merged['blocks.0.fc.bias'])
    assert torch.allclose(plain, reference, atol=1e-5)


def test_find_adapters_names_each_kind() -> None:
    state = _adapted_linear_state(dv=True)
    state.update({k.replace('blocks.0', 'blocks.1'): v
                  for k, v in _adapted_linear_state(dv=False).items()})
    assert find_adapters(state) == {'blocks.0.fc': 'dv-lora', 'blocks.1.fc': 'lora'}


def test_incomplete_adapter_is_refused() -> None:
    state = _adapted_linear_state(dv=False)
    del state['blocks.0.fc.lora_B']
    with pytest.raises(ModelLoadError, match=r"x.pth: incomplete adapter at 'blocks.0.fc'"):
        merge_adapters(state, scaling=1.0, source='x.pth')


def test_adapter_without_base_weight_is_refused() -> None:
    state = _adapted_linear_state()
    del state['blocks.0.fc.weight']
    with pytest.raises(ModelLoadError, match=r'has no blocks\.0\.fc\.weight'):
        merge_adapters(state, scaling=1.0)


def test_misshaped_adapter_is_refused() -> None:
    state = _adapted_linear_state()
    state['blocks.0.fc.lora_V'] = torch.zeros(6, 1)
    with pytest.raises(ModelLoadError, match=r'lora_V \(6, 1\) \(expected \(7, 1\)\)'):
        merge_adapters(state, scaling=1.0)


def test_custom_rules_extend_the_merge() -> None:
    def merge_scale_shift(weight, tensors, scale):  # type: ignore[no-untyped-def]
        return weight * tensors['ssf_scale'][:, None]

    rule = AdapterRule('ssf', ('ssf_scale',), merge_scale_shift)
    state = {'fc.weight': torch.ones(3, 2), 'fc.ssf_scale': torch.tensor([1.0, 2.0, 3.0])}
    merged = merge_adapters(state, scaling=1.0, rules=(rule,))
    assert set(merged) == {'fc.weight'}
    assert torch.equal(merged['fc.weight'], torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
