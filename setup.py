"""ament_python package set-up; the version is read from package.xml (one source)."""

from glob import glob
from pathlib import Path
import xml.etree.ElementTree as ET

from setuptools import find_packages, setup

PACKAGE = 'endo_depth_ros'
HERE = Path(__file__).resolve().parent
VERSION = ET.parse(HERE / 'package.xml').getroot().findtext('version')

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
        # For pip installs: colcon puts console scripts in lib/<pkg> through setup.cfg,
        # pip does not, and `ros2 run` / launch_ros look only there.
        (f'lib/{PACKAGE}', ['scripts/depth_node']),
    ],
    # ROS packages (rclpy, *_msgs) are deliberately absent: a ROS distro provides them in
    # a colcon workspace, requirements.txt provides the wheels for pip installs.
    install_requires=[
        'setuptools',
        'numpy',
        'opencv-python-headless<5',
        'torch',
        'rosbags',
        'transformers',
        'safetensors',
        'onnx',
        'onnxruntime',
        'tqdm',
        'matplotlib',
        'scipy',
        'pyyaml',
    ],
    zip_safe=False,
    maintainer='endo_depth_ros maintainers',
    maintainer_email='maintainers@endo-depth-ros.invalid',
    description='Depth, point clouds and poses from endoscope video for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'depth_node = endo_depth_ros.ros.node:main',
            'endo-depth-synth = endo_depth_ros.cli.synth:main',
            'endo-depth-eval = endo_depth_ros.cli.eval:main',
            'endo-depth-import = endo_depth_ros.cli.import_:main',
            'endo-depth-export = endo_depth_ros.cli.export:main',
            'endo-depth-bench = endo_depth_ros.cli.bench:main',
            'endo-depth-demo = endo_depth_ros.cli.demo:main',
        ],
    },
)
