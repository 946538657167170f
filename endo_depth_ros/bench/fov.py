"""``endo-depth-bench fov``: field-of-view detection on a synthetic endoscope flight.

Renders a flight seen through a soft-edged, off-centre circular view in a noisy,
JPEG-compressed black surround (``SynthConfig.view_circle``), runs
``masks.FieldOfView`` on every frame and prints, per JPEG quality, the IoU with the true
view (first frame, after detection, minimum over the flight), how often the mask changed
after detection, how many detections ran, and the time per update (median, ms).

A second table (``--score-frames``) shows what the mask changes downstream: the same
flight is written as a bag and evaluated with the photometric model with the mask
(``field_of_view.mode`` auto) and without it (off): points of the published cloud outside
the true view, AbsRel and TAE (scored on the true view's ground truth either way).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
import statistics
import tempfile
import time

import cv2
import numpy as np

from endo_depth_ros import bags, evaluation, masks
from endo_depth_ros.bench import parse_size, print_table
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.synth import SynthConfig, render_sequence
from endo_depth_ros.synth.view import apply_endoscope_view, endoscope_view_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the field-of-view benchmark."""
    parser.add_argument('--frames', type=int, default=300, help='flight length (default 300)')
    parser.add_argument('--size', default='320x256', help='WIDTHxHEIGHT (default 320x256)')
    parser.add_argument('--qualities', default='90,70,50',
                        help='comma-separated JPEG qualities (default 90,70,50)')
    parser.add_argument('--noise', type=float, default=4.0,
                        help='surround noise, grey levels (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')
    parser.add_argument('--upscale', metavar='WIDTHxHEIGHT',
                        help='render at --size, upscale (bicubic) to this size, then add the '
                             'view, surround and JPEG there (camera resolutions that would '
                             'take too long to render)')
    parser.add_argument('--score-frames', type=int, default=60,
                        help='frames of the downstream comparison, 0 = skip (default 60)')


def run(args: argparse.Namespace) -> None:
    """Render, detect, print one table."""
    width, height = parse_size(args.size, min_side=32)
    out_w, out_h = parse_size(args.upscale, min_side=32) if args.upscale else (width, height)
    rows: list[dict[str, object]] = []
    for quality in (int(q) for q in args.qualities.split(',')):
        config = SynthConfig(width=out_w, height=out_h, frames=args.frames, seed=args.seed,
                             view_circle=True, jpeg_quality=quality,
                             surround_noise=args.noise)
        truth = endoscope_view_mask(config, out_w, out_h)
        fov = masks.FieldOfView(masks.FieldOfViewConfig(margin_px=0))
        ious, times, changes = [], [], 0
        previous: np.ndarray | None = None
        for rgb in _frames(config, width, height):
            start = time.perf_counter()
            view = fov.update(rgb)
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
            'ms/update, detection frames (mean)': f'{statistics.mean(times[:5]):.1f}',
        })
    print_table(f'Field-of-view detection, {out_w}x{out_h}'
                + (f' (rendered at {width}x{height})' if (out_w, out_h) != (width, height)
                   else '') + ', surround noise '
                f'{args.noise:g} grey levels, soft edge {SynthConfig().view_edge_px:g} px, '
                f'view offset {SynthConfig().view_offset}', rows)
    if args.score_frames > 0:
        _downstream_table(width, height, args.score_frames, args.seed, args.noise)


def _frames(config: SynthConfig, width: int, height: int) -> Iterator[np.ndarray]:
    """The flight's RGB frames at the config's size, rendered at (width, height)."""
    if (width, height) == (config.width, config.height):
        for frame in render_sequence(config):
            yield frame.rgb
        return
    small = replace(config, width=width, height=height, view_circle=False, jpeg_quality=0)
    for frame in render_sequence(small):
        big = cv2.resize(frame.rgb, (config.width, config.height),
                         interpolation=cv2.INTER_CUBIC)
        yield apply_endoscope_view(big, config, frame.index)


def _downstream_table(width: int, height: int, frames: int, seed: int, noise: float) -> None:
    """Cloud junk, AbsRel and TAE with and without the mask, photometric model."""
    config = SynthConfig(width=width, height=height, frames=frames, seed=seed,
                         view_circle=True, jpeg_quality=70, surround_noise=noise)
    truth = endoscope_view_mask(config, width, height)
    intrinsics = config.intrinsics
    rendered = list(render_sequence(config))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / 'flight'
        # Ground truth only inside the true view: both runs are scored on the same pixels.
        bags.write_sequence(bag, [replace(f, depth=np.where(truth, f.depth, np.nan))
                                  for f in rendered])
        for mode in ('auto', 'off'):
            base = PipelineConfig()
            base = replace(base, field_of_view=replace(base.field_of_view, mode=mode))
            pipeline = Pipeline(base)
            outside = total = 0
            for frame in rendered:
                for result in pipeline.process(frame.rgb, intrinsics, frame.stamp_ns):
                    points = result.points
                    if points is None or not len(points):
                        continue
                    u = np.clip(np.round(points[:, 0] / points[:, 2] * intrinsics.fx
                                         + intrinsics.cx).astype(int), 0, width - 1)
                    v = np.clip(np.round(points[:, 1] / points[:, 2] * intrinsics.fy
                                         + intrinsics.cy).astype(int), 0, height - 1)
                    outside += int((~truth[v, u]).sum())
                    total += len(points)
            (run,) = evaluation.evaluate([bag], evaluation.EvalConfig(
                pipeline=base, protocol='sequence-median', contact_frames=0))
            rows.append({'field_of_view.mode': mode, 'frames': frames,
                         'cloud points outside the view': f'{100 * outside / max(total, 1):.1f} %',
                         'AbsRel': f'{run.summary["abs_rel"]:.4f}',
                         'TAE': f'{run.summary["tae"]:.3f}'})
    print_table(f'Downstream of the mask: photometric model, stream alignment, '
                f'sequence-median scoring, {width}x{height}, JPEG 70', rows)
