"""Random-weight Depth Anything networks shared by the model tests (no weights exist here)."""

from __future__ import annotations

import torch

from endo_depth_ros.models import depth_anything as da


def random_network(config: object, seed: int = 0) -> torch.nn.Module:
    """A network whose outputs vary (the default init makes tiny heads nearly constant)."""
    network = da.build_network(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in network.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return network


def tiny_torch_model(network: torch.nn.Module, name: str = 'dav2') -> da.TorchDepthModel:
    """``network`` as a relative-disparity CPU model with a 28-pixel input (fast)."""
    return da.TorchDepthModel(network, name=name, output_kind='relative_disparity',
                              device='cpu', input_size=28)
