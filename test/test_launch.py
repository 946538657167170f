"""launch/depth.launch.py: compiles everywhere; builds the right node where launch_ros exists."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'depth.launch.py'
EXPECTED_ARGUMENTS = {'namespace', 'params_file', 'model', 'checkpoint', 'image_topic',
                      'camera_info_topic', 'use_sim_time', 'log_level'}


def _tree() -> ast.Module:
    source = LAUNCH_FILE.read_text()
    compile(source, str(LAUNCH_FILE), 'exec')  # a syntax error fails here
    return ast.parse(source)


def _literal_arguments(tree: ast.Module) -> set[str]:
    """Names in the ARGUMENTS table and in DeclareLaunchArgument('...') calls."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'ARGUMENTS' for t in node.targets):
            names.update(row[0] for row in ast.literal_eval(node.value))
        if (isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument'
                and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return names


def test_launch_file_compiles_and_declares_every_argument() -> None:
    tree = _tree()
    assert _literal_arguments(tree) == EXPECTED_ARGUMENTS
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions


def test_launch_file_remaps_both_image_transports_and_camera_info() -> None:
    source = LAUNCH_FILE.read_text()
    for remapped in ("('image', ", "('image/compressed', ", "('camera_info', "):
        assert remapped in source
    assert "executable='depth_node'" in source and "name='endo_depth'" in source


def test_launch_ends_with_the_node_and_sets_only_the_node_logger_level() -> None:
    tree = _tree()
    node_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and getattr(n.func, 'id', '') == 'Node')
    keywords = {k.arg: k.value for k in node_call.keywords}
    # on_exit: the launch shuts down (and fails if the node failed) when the node exits.
    assert ast.unparse(keywords['on_exit']) == '_on_node_exit'
    source = LAUNCH_FILE.read_text()
    assert 'Shutdown(' in source and 'raise RuntimeError' in source
    # --log-level <node logger>:=<level>, not a global level that turns on rcl/rmw logs.
    assert "node_logger_name(arg(\"namespace\"))}:={arg(\"log_level\")}" in source


def _load_launch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location('depth_launch', LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_builds_the_node_with_parameters_and_remappings(
        tmp_path: Path) -> None:
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (ROS-free venv)')
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchContext

    module = _load_launch_module()
    params = tmp_path / 'depth.yaml'
    params.write_text('/**:\n  ros__parameters: {}\n')
    module.default_params_file = lambda: str(params)
    description = module.generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in declared} == EXPECTED_ARGUMENTS

    context = LaunchContext()
    values = {'namespace': 'scope', 'params_file': str(params), 'model': 'dav2-s',
              'checkpoint': '/w/vits.pth', 'image_topic': '/cam/image_raw',
              'camera_info_topic': '/cam/camera_info', 'use_sim_time': 'true',
              'log_level': 'debug'}
    context.launch_configurations.update(values)
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    (node,) = opaque.execute(context)
    node._perform_substitutions(context)
    assert (node.node_package, node.node_executable) == ('endo_depth_ros', 'depth_node')
    assert node.node_name == '/scope/endo_depth'
    assert dict(node.expanded_remapping_rules) == {
        'image': '/cam/image_raw', 'image/compressed': '/cam/image_raw/compressed',
        'camera_info': '/cam/camera_info'}
    # Parameters: the params file first, then the overrides (written to a YAML file).
    arguments: list[tuple[str, bool]] = node._Node__expanded_parameter_arguments
    assert arguments[0] == (str(params), True)
    overrides: dict[str, Any] = {}
    for path, _is_file in arguments[1:]:
        for section in yaml.safe_load(Path(path).read_text()).values():
            overrides.update(section['ros__parameters'])
    assert overrides == {'use_sim_time': True, 'model.name': 'dav2-s',
                         'model.checkpoint': '/w/vits.pth'}
    from launch.utilities import perform_substitutions
    command = [perform_substitutions(context, part) for part in node.cmd]
    assert command[command.index('--log-level') + 1] == 'scope.endo_depth:=debug'
    assert module.node_logger_name('/a/b/') == 'a.b.endo_depth'
    # The node failing ends the launch with an error; a clean exit ends it quietly.
    from launch.events.process import ProcessExited
    with pytest.raises(RuntimeError, match='exited with code 2'):
        module._on_node_exit(ProcessExited(action=node, name='n', cmd=[], cwd=None, env=None,
                                           pid=1, returncode=2), context)
    (shutdown,) = module._on_node_exit(
        ProcessExited(action=node, name='n', cmd=[], cwd=None, env=None, pid=1, returncode=0),
        context)
    assert type(shutdown).__name__ == 'Shutdown'
