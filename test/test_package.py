"""The package installs the way a ROS 2 user expects (colcon-style layout)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'endo_depth_ros'


def _package_xml_version() -> str:
    version = ET.parse(REPO_ROOT / 'package.xml').getroot().findtext('version')
    assert version is not None
    return version


def test_package_xml_is_format_3_ament_python_with_ros_dependencies() -> None:
    root = ET.parse(REPO_ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == PACKAGE
    assert root.findtext('export/build_type') == 'ament_python'
    depends = {e.text for e in root if e.tag.endswith('depend')}
    assert {'rclpy', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'std_msgs', 'diagnostic_msgs',
            'launch', 'launch_ros', 'python3-numpy', 'python3-opencv',
            'python3-pytest'} <= depends


def test_setup_py_reports_the_package_xml_version() -> None:
    result = subprocess.run([sys.executable, 'setup.py', '--version'], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == _package_xml_version()


def test_requirements_pin_every_package_and_keep_opencv_below_5() -> None:
    lines = [line.split('#')[0].strip()
             for line in (REPO_ROOT / 'requirements.txt').read_text().splitlines()]
    pins = [line for line in lines if line]
    assert pins and all(re.fullmatch(r'[A-Za-z0-9_.\-]+==[\w.+]+', p) for p in pins), pins
    opencv = next(p for p in pins if p.startswith('opencv-python-headless=='))
    assert int(opencv.split('==')[1].split('.')[0]) < 5


def test_ros_wheels_stay_out_of_install_requires() -> None:
    setup_text = (REPO_ROOT / 'setup.py').read_text()
    install_requires = setup_text.split('install_requires=[', 1)[1].split(']', 1)[0]
    assert 'ros-' not in install_requires and 'rclpy' not in install_requires


@pytest.fixture(scope='module')
def install_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp('prefix')
    subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
         '--prefix', str(prefix), str(REPO_ROOT)],
        check=True, capture_output=True, env={**os.environ, 'PIP_NO_INPUT': '1'})
    return prefix


def test_install_puts_launch_config_and_ament_marker_where_ros2_looks(
        install_prefix: Path) -> None:
    share = install_prefix / 'share' / PACKAGE
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'depth.launch.py').is_file()
    assert list((share / 'config').glob('*.yaml'))
    assert (install_prefix / 'share/ament_index/resource_index/packages' / PACKAGE).is_file()


def test_install_puts_an_executable_depth_node_in_lib_package(install_prefix: Path) -> None:
    wrapper = install_prefix / 'lib' / PACKAGE / 'depth_node'
    assert wrapper.is_file()
    assert os.access(wrapper, os.X_OK)
    assert 'endo_depth_ros.ros.node' in wrapper.read_text()


def test_installed_ament_index_lets_a_ros_tool_find_the_package(install_prefix: Path) -> None:
    # What `ros2 launch` does first: look the package up in AMENT_PREFIX_PATH.
    code = ('from ament_index_python.packages import get_package_share_directory as g; '
            f'print(g("{PACKAGE}"))')
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True,
        env={**os.environ, 'AMENT_PREFIX_PATH': str(install_prefix)})
    assert Path(result.stdout.strip()) == install_prefix / 'share' / PACKAGE


def _console_scripts() -> list[tuple[str, str]]:
    setup_text = (REPO_ROOT / 'setup.py').read_text()
    entries = re.findall(r"'([\w-]+) = ([\w.]+):main'", setup_text)
    assert len(entries) >= 5
    return entries


@pytest.mark.parametrize(('script', 'module'), _console_scripts())
def test_every_console_script_also_runs_with_python_m(script: str, module: str) -> None:
    # The lib/endo_depth_ros wrappers and the docs run `python -m <module>`.
    path = REPO_ROOT / (module.replace('.', '/') + '.py')
    assert "if __name__ == '__main__':" in path.read_text(), script


@pytest.mark.parametrize(('script', 'module'),
                         [e for e in _console_scripts() if e[0] != 'depth_node'])
def test_every_cli_shows_help(script: str, module: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main(['--help'])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith('usage:'), script
