"""Video Depth Anything (VDA) and EndoDAV: Depth Anything with a temporal DPT head.

Modules: ``motion`` (motion modules), ``network`` (the network and its input size),
``streaming`` (the cache), ``windows`` (overlapped windows), ``checkpoints`` (official
layouts, EndoDAV adapters), ``model`` (``VideoDepthModel``), ``onnx_step`` (streaming export).

The network is the Depth Anything V2 network of ``depth_anything.py`` (the same
transformers DINOv2 backbone, reassemble/fusion neck and output head) with four
*motion modules* inserted into the neck, as the official ``DPTHeadTemporal``:
after reassemble stages 3 and 4 and after fusion layers 4 and 3. A motion module is
a residual temporal transformer: GroupNorm -> linear -> one block of two temporal
self-attentions (each pixel attends over the frames at its position, sinusoidal
frame-position encoding added to the attention input) and a GEGLU feed-forward ->
linear.

Two ways to run it, as its authors do:

- *window* (``run_windows``, the official ``infer_video_depth``): windows of
  ``WINDOW`` = 32 frames with a stride of 22; the first ``OVERLAP`` = 10 inputs of a
  window are keyframes of the previous window, the first two of which fit a scale and
  shift (least squares) that carries the new window into the previous one's units,
  and ``INTERP`` = 8 overlapping frames are blended linearly;
- *streaming* (``StreamingCache`` + ``VideoDepthNet.forward(..., cache)``, the official
  ``video_depth_stream.py``): one frame in, its depth out; the attention of the new
  frame reads the *cached* normalised attention inputs of 31 earlier frames (the
  first frame, the frame 41 steps back and the last 29), so no frame is ever
  recomputed. The cache lives outside the network, in preallocated storage.

EndoDAV (Zanue/EndoDAV) checkpoints are this network with low-rank adapters in the
ViT MLPs (and optionally in the motion modules' feed-forward output); they are merged
into plain weights at load time. EndoDAV feeds a fixed 224x280 input and uses its own
keyframes and overlap fit (``ENDODAV_SCHEDULE``).
"""

from endo_depth_ros.models.video_depth_anything.checkpoints import (
    ENDODAV_SCALING,
    VideoSpec,
    is_video_name,
    load_video_network,
    merge_endodav,
    official_to_ours,
    ours_to_official,
    parse_video_name,
)
from endo_depth_ros.models.video_depth_anything.model import (
    VideoDepthModel,
    load_video_model,
)
from endo_depth_ros.models.video_depth_anything.motion import (
    ATTENTION_BLOCKS,
    GEGLU,
    MOTION_HEADS,
    MOTION_MODULES,
    STATES_PER_FRAME,
    FeedForward,
    FramePositionEncoding,
    MotionModule,
    TemporalAttention,
    TemporalBlock,
    TemporalTransformer,
)
from endo_depth_ros.models.video_depth_anything.network import (
    ENDODAV_INPUT,
    MAX_RATIO,
    PATCH,
    VideoDepthNet,
    VideoFrameNet,
    build_video_network,
    tiny_video_config,
    video_config,
    video_network_size,
)
from endo_depth_ros.models.video_depth_anything.onnx_step import (
    ONNX_CACHE,
    ONNX_DEPTH,
    ONNX_IMAGE,
    ONNX_STATES,
    OnnxVideoDepthModel,
    StreamStepNet,
    export_video_onnx,
)
from endo_depth_ros.models.video_depth_anything.streaming import (
    StreamingCache,
)
from endo_depth_ros.models.video_depth_anything.windows import (
    ENDODAV_SCHEDULE,
    INTERP,
    OVERLAP,
    STREAM_GAP,
    VDA_SCHEDULE,
    WINDOW,
    WindowSchedule,
    WindowStitcher,
    fit_scale_shift,
    padded_length,
    window_starts,
)

__all__ = [
    'ATTENTION_BLOCKS',
    'ENDODAV_INPUT',
    'ENDODAV_SCALING',
    'ENDODAV_SCHEDULE',
    'GEGLU',
    'INTERP',
    'MAX_RATIO',
    'MOTION_HEADS',
    'MOTION_MODULES',
    'ONNX_CACHE',
    'ONNX_DEPTH',
    'ONNX_IMAGE',
    'ONNX_STATES',
    'OVERLAP',
    'PATCH',
    'STATES_PER_FRAME',
    'STREAM_GAP',
    'VDA_SCHEDULE',
    'WINDOW',
    'FeedForward',
    'FramePositionEncoding',
    'MotionModule',
    'OnnxVideoDepthModel',
    'StreamStepNet',
    'StreamingCache',
    'TemporalAttention',
    'TemporalBlock',
    'TemporalTransformer',
    'VideoDepthModel',
    'VideoDepthNet',
    'VideoFrameNet',
    'VideoSpec',
    'WindowSchedule',
    'WindowStitcher',
    'build_video_network',
    'export_video_onnx',
    'fit_scale_shift',
    'is_video_name',
    'load_video_model',
    'load_video_network',
    'merge_endodav',
    'official_to_ours',
    'ours_to_official',
    'padded_length',
    'parse_video_name',
    'tiny_video_config',
    'video_config',
    'video_network_size',
    'window_starts',
]
