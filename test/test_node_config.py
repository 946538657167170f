"""config/depth.yaml documents every node parameter with the code's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip('rclpy')

from endo_depth_ros.errors import ConfigError
from endo_depth_ros.pipeline import PipelineConfig
from endo_depth_ros.ros.parameters import (
    parameter_specs,
    parameters_yaml,
    pipeline_config_from_parameters,
)

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'depth.yaml'
REGENERATE = ("python -c 'from endo_depth_ros.ros.parameters import parameters_yaml; "
              "print(parameters_yaml(), end=\"\")' > config/depth.yaml")


def _flatten(tree: dict[str, object], prefix: str = '') -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _yaml_values() -> dict[str, object]:
    return _flatten(yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters'])


def test_config_file_is_the_generated_documentation_of_the_defaults() -> None:
    assert CONFIG.read_text() == parameters_yaml(), f'out of date; regenerate: {REGENERATE}'


def test_config_file_sets_every_parameter_with_its_default_and_type() -> None:
    values = _yaml_values()
    specs = {spec.name: spec for spec in parameter_specs()}
    assert set(values) == set(specs)
    for name, spec in specs.items():
        assert type(values[name]) is type(spec.default), name
        assert values[name] == spec.default, name


def test_every_parameter_has_a_description() -> None:
    specs = parameter_specs()
    assert len({s.name for s in specs}) == len(specs)
    assert all(s.description for s in specs), [s.name for s in specs if not s.description]


def test_config_file_runs_the_embedded_photometric_default() -> None:
    config = pipeline_config_from_parameters(_yaml_values())
    assert config == PipelineConfig()
    assert config.model.name == 'photometric' and config.alignment.mode == 'stream'


@pytest.mark.parametrize(('name', 'value', 'match'), [
    ('alignment.mode', 'sometimes', 'mode'),
    ('geometry.stride', 0, 'stride'),
    ('odometry.method', 'magic', 'odometry.method'),
    ('model.input_size', 2, 'input_size'),
])
def test_invalid_values_raise_config_error_naming_them(name: str, value: object,
                                                       match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pipeline_config_from_parameters({name: value})
