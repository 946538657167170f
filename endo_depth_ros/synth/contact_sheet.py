"""Contact sheet of rendered frames: RGB | depth (turbo, mm) | segmentation, one row each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from endo_depth_ros.errors import BadInputError
from endo_depth_ros.synth.config import SynthConfig
from endo_depth_ros.synth.render import INSTRUMENT, Scene, SynthFrame

#: Colour of instrument pixels in the segmentation column (RGB).
_INSTRUMENT_COLOUR = np.array([40, 220, 90], np.float32)


def save_contact_sheet(frames: Sequence[SynthFrame], path: str | Path, *,
                       dpi: int = 110) -> Path:
    """Save a PNG with one row per frame: image, depth colour map, segmentation overlay.

    Depth uses one colour scale (millimetres, near = red) for all rows, with a colour
    bar; pixels without depth are black. The segmentation column dims the image and
    paints instrument pixels green.

    Args:
        frames: a few frames (4 reads well).
        path: output ``.png``; parent folders are created.
        dpi: resolution of the figure.

    Returns:
        The path written.

    Raises:
        BadInputError: no frames.
    """
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    if not frames:
        raise BadInputError('A contact sheet needs at least one frame.', 'empty')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    valid = np.concatenate([f.depth[np.isfinite(f.depth)] for f in frames]) * 1e3
    vmin, vmax = (np.percentile(valid, [1, 97]) if valid.size else (0.0, 1.0))
    height, width = frames[0].rgb.shape[:2]
    fig_w = 3 * 3.0
    fig_h = len(frames) * 3.0 * height / width + 0.5
    fig, axes = plt.subplots(len(frames), 3, figsize=(fig_w, fig_h), squeeze=False,
                             gridspec_kw={'wspace': 0.03, 'hspace': 0.06})
    cmap = matplotlib.colormaps['turbo_r'].with_extremes(bad='black')
    depth_image = None
    for row, frame in zip(axes, frames, strict=True):
        row[0].imshow(frame.rgb)
        depth_image = row[1].imshow(np.ma.masked_invalid(frame.depth * 1e3), cmap=cmap,
                                    vmin=vmin, vmax=vmax)
        row[2].imshow(segmentation_overlay(frame.rgb, frame.seg))
        row[0].set_ylabel(f'frame {frame.index}', fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ('RGB', 'depth (mm)', 'segmentation'), strict=True):
        ax.set_title(title, fontsize=10)
    if depth_image is not None:
        # A bar under the depth column, in its own axes so the images keep their size.
        cax = axes[-1, 1].inset_axes((0.05, -0.1, 0.9, 0.045))
        bar = fig.colorbar(depth_image, cax=cax, orientation='horizontal')
        bar.ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=dpi, bbox_inches='tight', facecolor='white')
    plt.close(fig)
    return path


def segmentation_overlay(rgb: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Dimmed grey image with instrument pixels painted green, (H, W, 3) uint8."""
    grey = rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.45
    out = np.repeat(grey, 3, axis=2)
    instrument = seg == INSTRUMENT
    out[instrument] = 0.25 * out[instrument] + 0.75 * _INSTRUMENT_COLOUR
    return np.clip(out, 0, 255).astype(np.uint8)


def make_docs_contact_sheet(path: str | Path = 'docs/synth_contact_sheet.png') -> Path:
    """Regenerate the README's contact sheet: 4 frames of the default 320x256 flight with
    an instrument and a circular field of view (seed 0, frames 0, 40, 80, 120)."""
    config = SynthConfig(frames=121, instrument=True, fov_mask=True, seed=0)
    scene = Scene(config)
    return save_contact_sheet([scene.frame(i) for i in (0, 40, 80, 120)], path)
