"""``endo-depth-bench fov``: field-of-view detection on a synthetic endoscope flight.

Renders a flight seen through a soft-edged, off-centre circular view in a noisy,
JPEG-compressed black surround (``SynthConfig.view_circle``), runs
``masks.FieldOfView`` on every frame and prints, per JPEG quality, the IoU with the true
view (first frame, after detection, minimum over the flight), how often the mask changed
after detection, how many detections ran, and the time per update (median, ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from endo_depth_ros import masks
from endo_depth_ros.bench import parse_size, print_table
from endo_depth_ros.synth import SynthConfig, render_sequence
from endo_depth_ros.synth.view import endoscope_view_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the field-of-view benchmark."""
    parser.add_argument('--frames', type=int, default=300, help='flight length (default 300)')
    parser.add_argument('--size', default='320x256', help='WIDTHxHEIGHT (default 320x256)')
    parser.add_argument('--qualities', default='90,70,50',
                        help='comma-separated JPEG qualities (default 90,70,50)')
    parser.add_argument('--noise', type=float, default=4.0,
                        help='surround noise, grey levels (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')


def run(args: argparse.Namespace) -> None:
    """Render, detect, print one table."""
    width, height = parse_size(args.size, min_side=32)
    rows = []
    for quality in (int(q) for q in args.qualities.split(',')):
        config = SynthConfig(width=width, height=height, frames=args.frames, seed=args.seed,
                             view_circle=True, jpeg_quality=quality,
                             surround_noise=args.noise)
        truth = endoscope_view_mask(config, width, height)
        fov = masks.FieldOfView(masks.FieldOfViewConfig(margin_px=0))
        ious, times, changes = [], [], 0
        previous: np.ndarray | None = None
        for frame in render_sequence(config):
            start = time.perf_counter()
            view = fov.update(frame.rgb)
            times.append((time.perf_counter() - start) * 1e3)
            ious.append(0.0 if view is None else masks.iou(view, truth))
            if previous is not None and view is not previous and len(ious) > 5:
                changes += 1
            previous = view
        settled = ious[5:] or ious
        rows.append({
            'JPEG quality': quality, 'frames': len(ious), 'IoU frame 0': f'{ious[0]:.4f}',
            'IoU after detection': f'{ious[min(5, len(ious) - 1)]:.4f}',
            'min IoU (frames 5+)': f'{min(settled):.4f}',
            'mask changes after detection': changes, 'detections': fov.detections,
            'ms/update (median)': f'{statistics.median(times):.2f}',
        })
    print_table(f'Field-of-view detection, {width}x{height}, surround noise '
                f'{args.noise:g} grey levels, soft edge {SynthConfig().view_edge_px:g} px, '
                f'view offset {SynthConfig().view_offset}', rows)
