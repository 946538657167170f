"""Synthetic endoscope video with exact ground truth (depth, poses, segmentation).

A procedural colon-like lumen is ray cast from a camera flying along it, with a
co-located point light, wet-tissue highlights, vignetting and sensor noise, and
optionally the nuisances of real endoscope cameras (``CameraEffects``)::

    from endo_depth_ros.synth import SynthConfig, render_sequence
    for frame in render_sequence(SynthConfig(frames=10, instrument=True)):
        frame.rgb, frame.depth, frame.seg, frame.pose, frame.intrinsics
"""

from endo_depth_ros.synth.camera_effects import CameraEffects
from endo_depth_ros.synth.config import DEFAULT_START_NS, SynthConfig
from endo_depth_ros.synth.render import (
    INSTRUMENT,
    TISSUE,
    RenderedView,
    Scene,
    SynthFrame,
    render_sequence,
)

__all__ = [
    'DEFAULT_START_NS',
    'INSTRUMENT',
    'TISSUE',
    'CameraEffects',
    'RenderedView',
    'Scene',
    'SynthConfig',
    'SynthFrame',
    'render_sequence',
]
