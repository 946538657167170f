"""Launch the endo_depth node: ``ros2 launch endo_depth_ros depth.launch.py``.

Arguments (``ros2 launch endo_depth_ros depth.launch.py --show-args``):
  namespace          namespace of the node and its relative topics ('' : none)
  params_file        parameters YAML (default: the installed config/depth.yaml)
  model              model.name override ('' keeps the params file's value)
  checkpoint         model.checkpoint override ('' keeps the params file's value)
  image_topic        input images (image/compressed follows as <image_topic>/compressed)
  camera_info_topic  input camera info
  use_sim_time       'true' when replaying a bag with --clock
  log_level          level of the node's logger only (debug, info, warn, error, fatal);
                     rcl/rmw keep theirs

The launch ends when the node exits; when the node fails (exit code 2 on a bad parameter)
the launch fails too (exit code 1), so a supervisor sees it instead of a launch idling on.

Example, next to a bag replay::

    ros2 bag play demo_bag --clock &
    ros2 launch endo_depth_ros depth.launch.py use_sim_time:=true
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

PACKAGE = 'endo_depth_ros'

#: (name, default, description) of every launch argument except params_file.
ARGUMENTS = (
    ('namespace', '', 'namespace of the node and of its relative topics'),
    ('model', '', "depth model (model.name); '' keeps the params file's value"),
    ('checkpoint', '', "model weights (model.checkpoint); '' keeps the params file's value"),
    ('image_topic', '/endoscope/image_raw',
     'input image topic (image/compressed is remapped to <image_topic>/compressed)'),
    ('camera_info_topic', '/endoscope/camera_info', 'input camera_info topic'),
    ('use_sim_time', 'false', "use /clock time (set 'true' for bag replays with --clock)"),
    ('log_level', 'info',
     "the node's logging level: debug, info, warn, error or fatal (rcl and rmw keep theirs)"),
)


def default_params_file() -> str:
    """The installed ``share/endo_depth_ros/config/depth.yaml``."""
    return os.path.join(get_package_share_directory(PACKAGE), 'config', 'depth.yaml')


def _is_true(text: str) -> bool:
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def node_logger_name(namespace: str, name: str = 'endo_depth') -> str:
    """The rclpy logger of a node: ``'/a/b'``, ``'endo_depth'`` -> ``'a.b.endo_depth'``."""
    parts = [p for p in namespace.split('/') if p]
    return '.'.join([*parts, name])


def _node(context: LaunchContext) -> list[Node]:
    """The node, built once the arguments are known (empty overrides are left out)."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides: dict[str, object] = {'use_sim_time': _is_true(arg('use_sim_time'))}
    if arg('model'):
        overrides['model.name'] = arg('model')
    if arg('checkpoint'):
        overrides['model.checkpoint'] = arg('checkpoint')
    image_topic = arg('image_topic')
    return [Node(
        package=PACKAGE,
        executable='depth_node',
        name='endo_depth',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[arg('params_file'), overrides],
        remappings=[
            ('image', image_topic),
            ('image/compressed', f'{image_topic.rstrip("/")}/compressed'),
            ('camera_info', arg('camera_info_topic')),
        ],
        # The node's logger (and its children) only: a global level would also turn on
        # hundreds of rcl/rmw debug lines a second.
        arguments=['--ros-args', '--log-level',
                   f'{node_logger_name(arg("namespace"))}:={arg("log_level")}'],
        on_exit=_on_node_exit,
    )]


def _on_node_exit(event: ProcessExited, _context: LaunchContext) -> list[Shutdown]:
    """End the launch with the node; a failed node makes the launch fail too (exit 1)."""
    if event.returncode != 0:
        # launch turns an exception into an error line, a shutdown and exit code 1.
        raise RuntimeError(f'the endo_depth node exited with code {event.returncode}')
    return [Shutdown(reason='the endo_depth node exited')]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and start the node."""
    arguments = [DeclareLaunchArgument('params_file', default_value=default_params_file(),
                                       description='parameters YAML of the node')]
    arguments += [DeclareLaunchArgument(name, default_value=default, description=text)
                  for name, default, text in ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
