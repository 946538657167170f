"""``endo-depth-bench geometry``: depth -> point cloud cost, against the model's cost.

Prints, for each image size, the median time of :func:`endo_depth_ros.geometry.make_cloud`
under several configurations, the same as a ratio to the photometric model's
``infer`` time measured in the same run, the one-off cost of computing camera rays per
lens model, and the time to pack the cloud into a ``sensor_msgs/PointCloud2`` (when
rclpy is importable).
"""

from __future__ import annotations

import argparse
from functools import partial
import importlib
from types import ModuleType

import numpy as np

from endo_depth_ros import geometry, models
from endo_depth_ros.bench import add_sizes_argument, median_ms, parse_sizes, print_table
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import ConfigError, EndoDepthError
from endo_depth_ros.geometry import CloudConfig, make_cloud

#: Cloud configurations timed for every size.
CONFIGS: dict[str, CloudConfig] = {
    'xyz': CloudConfig(colour=False),
    'xyz+rgb': CloudConfig(),
    'xyz+rgb organised': CloudConfig(organized=True),
    'xyz+rgb specular+fov masks': CloudConfig(mask_specular=True, fov_mask=True),
    'xyz+rgb stride 2': CloudConfig(stride=2),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the geometry benchmark."""
    add_sizes_argument(parser, '518x518,320x256', 'depth sizes')
    parser.add_argument('--repeats', type=int, default=30,
                        help='timed repeats per measurement (default: %(default)s)')
    parser.add_argument('--model', default='photometric',
                        help="model timed for the ratio column, '' to skip (default: %(default)s)")


def run(args: argparse.Namespace) -> None:
    """Time cloud building, ray computation and PointCloud2 packing; print tables."""
    sizes = parse_sizes(args.sizes)
    if args.repeats < 1:
        raise ConfigError(f'--repeats must be >= 1, got {args.repeats}.')
    model = _load_model(args.model)
    conversions = _ros_conversions()
    rows: list[dict[str, object]] = []
    pack_rows: list[dict[str, object]] = []
    for width, height in sizes:
        intrinsics, depth, rgb = _scene(width, height)
        model_ms = (median_ms(partial(model.infer, rgb), repeats=args.repeats)
                    if model is not None else float('nan'))
        for name, config in CONFIGS.items():
            build = partial(make_cloud, depth, intrinsics, config, rgb=rgb)
            cloud = build()
            ms = median_ms(build, repeats=args.repeats)
            rows.append({
                'size': f'{width}x{height}', 'config': name, 'points': len(cloud),
                'cloud ms': ms, 'model ms': model_ms, 'cloud / model': ms / model_ms,
            })
            if conversions is not None and name in ('xyz+rgb', 'xyz+rgb organised'):
                pack = partial(conversions.cloud_to_pointcloud2, cloud, 0, 'camera')
                pack_rows.append({
                    'size': f'{width}x{height}', 'cloud': name, 'points': len(cloud),
                    'pack ms': median_ms(pack, repeats=args.repeats),
                    'MB': len(cloud) * 16 / 1e6,
                })
    model_name = args.model if model is not None else 'none'
    print_table(f'make_cloud, median of {args.repeats} (model: {model_name})', rows)
    print_table('camera rays, first computation (then cached)', _ray_rows(sizes))
    if conversions is None:
        print('\n(rclpy not importable: PointCloud2 packing not timed)')
    else:
        print_table('PointCloud2 packing (cloud_to_pointcloud2)', pack_rows)


def _load_model(name: str) -> models.DepthModel | None:
    if not name:
        return None
    try:
        return models.load(name)
    except EndoDepthError as err:
        print(f'(model {name!r} unavailable, ratio column is nan: {err})')
        return None


def _ros_conversions() -> ModuleType | None:
    try:
        return importlib.import_module('endo_depth_ros.ros.conversions')
    except ImportError:
        return None


def _scene(width: int, height: int) -> tuple[Intrinsics, np.ndarray, np.ndarray]:
    """A tilted, wavy tissue surface 3..8 cm away with a few holes and highlights."""
    rng = np.random.default_rng(0)
    f = 0.8 * max(width, height)
    intrinsics = Intrinsics(width, height, f, f, (width - 1) / 2, (height - 1) / 2)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = 0.03 + 0.05 * u / width + 0.003 * np.sin(v / 9.0) * np.cos(u / 13.0)
    depth[rng.random((height, width)) < 0.02] = np.nan
    rgb = rng.integers(0, 230, (height, width, 3), dtype=np.uint8)
    rgb[rng.random((height, width)) < 0.01] = 255
    return intrinsics, depth.astype(np.float32), rgb


def _ray_rows(sizes: list[tuple[int, int]]) -> list[dict[str, object]]:
    lenses = {
        'pinhole': ('', ()),
        'plumb_bob': ('plumb_bob', (-0.25, 0.06, 0.002, -0.001, -0.005)),
        'equidistant': ('equidistant', (0.05, -0.01, 0.003, -0.0005)),
    }
    rows: list[dict[str, object]] = []
    for width, height in sizes:
        for name, (model, coefficients) in lenses.items():
            f = 0.8 * max(width, height)
            intrinsics = Intrinsics(width, height, f, f, (width - 1) / 2, (height - 1) / 2,
                                    model, coefficients)

            rows.append({'size': f'{width}x{height}', 'lens': name,
                         'rays ms': median_ms(partial(_fresh_rays, intrinsics),
                                              repeats=3, warmup=0)})
    geometry.clear_ray_cache()
    return rows


def _fresh_rays(intrinsics: Intrinsics) -> None:
    geometry.clear_ray_cache()
    geometry.camera_rays(intrinsics)
