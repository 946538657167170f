"""The streaming step exported to ONNX and run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from endo_depth_ros.errors import BadInputError, ConfigError, ModelLoadError
from endo_depth_ros.models.video_depth_anything.model import VideoDepthModel
from endo_depth_ros.models.video_depth_anything.motion import STATES_PER_FRAME
from endo_depth_ros.models.video_depth_anything.network import PATCH, VideoFrameNet
from endo_depth_ros.models.video_depth_anything.streaming import StreamingCache
from endo_depth_ros.models.video_depth_anything.windows import VDA_SCHEDULE, WINDOW


class StreamStepNet(nn.Module):
    """The streaming step as one graph: ``(rgb, *cache) -> (depth, *states)``.

    ``rgb`` (1, H, W, 3) uint8; each cache input (S_i, Tc, C_i) float32 with Tc = 0
    (first frame) or ``WINDOW - 1``; ``depth`` (1, H, W); each state (S_i, 1, C_i).
    The ring of states stays outside the graph (``StreamingCache``).
    """

    def __init__(self, frame_net: VideoFrameNet) -> None:
        super().__init__()
        self.frame_net = frame_net

    def forward(self, rgb: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        context = list(cache) if cache and cache[0].shape[1] > 0 else None
        depth, states = self.frame_net(rgb, context)
        return (depth, *states)


#: Names of the streaming graph's inputs and outputs.
ONNX_IMAGE = 'image'
ONNX_DEPTH = 'depth'
ONNX_CACHE = tuple(f'cache_{i}' for i in range(STATES_PER_FRAME))
ONNX_STATES = tuple(f'state_{i}' for i in range(STATES_PER_FRAME))


def export_video_onnx(
    model: VideoDepthModel, path: str | Path, height: int, width: int, *, opset: int = 17,
) -> Path:
    """Export a video model's streaming step to ONNX for ``height x width`` images.

    One graph serves every step: the cache inputs' frame axis is dynamic, empty (0
    frames) for the first frame of a stream and ``WINDOW - 1`` frames afterwards.

    Raises:
        ConfigError: size below one patch or opset outside 16..21.
    """
    import copy
    import warnings

    import onnx

    if height < PATCH or width < PATCH:
        raise ConfigError(f'Export size must be at least 14x14 pixels, got {height}x{width}.')
    if not 16 <= opset <= 21:
        raise ConfigError(f'opset must be in 16..21, got {opset}.')
    step = StreamStepNet(copy.deepcopy(model.net).to('cpu').float()).eval()
    rgb = torch.zeros((1, height, width, 3), dtype=torch.uint8)
    with torch.inference_mode():
        _, first = step.frame_net(rgb)
    # Trace with a full cache; the frame axis stays free so that 0 frames work too.
    cache = tuple(s.repeat(1, WINDOW - 1, 1).clone() for s in first)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer warns about every baked-in size
        torch.onnx.export(
            step, (rgb, *cache), str(path), input_names=[ONNX_IMAGE, *ONNX_CACHE],
            output_names=[ONNX_DEPTH, *ONNX_STATES],
            dynamic_axes={name: {1: 'cached_frames'} for name in ONNX_CACHE},
            opset_version=opset, dynamo=False)
    graph = onnx.load(str(path))
    metadata = {'name': model.name, 'output_kind': model.output_kind,
                'image_height': str(height), 'image_width': str(width),
                'video_stream_step': '1'}
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    return path


class OnnxVideoDepthModel(VideoDepthModel):
    """A video model's streaming step run by onnxruntime (``export_video_onnx`` files).

    ``infer`` streams exactly as the torch model (same cache); window mode
    (``infer_video``) needs the torch backend (the export holds the one-frame step).

    Raises:
        ModelLoadError: not a streaming-step export of ``name``.
    """

    backend = 'onnxruntime'

    def __init__(self, path: str | Path, *, name: str, device: str = 'cpu') -> None:
        import onnxruntime

        if device not in ('auto', 'cpu'):
            raise ConfigError(f'The onnxruntime video step runs on the CPU here, not {device!r}.')
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=['CPUExecutionProvider'])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f'{path} is not a readable ONNX model ({err}).'[:300]) from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get('video_stream_step') != '1':
            raise ModelLoadError(f'{path} is not a video streaming-step export '
                                 '(endo-depth-export of a vda-* / endodav model).')
        self.name = name
        self.output_kind = 'metric_depth' if meta.get('output_kind') == 'metric_depth' \
            else 'relative_disparity'
        self.device, self.precision = 'cpu', 'fp32'
        self.schedule = VDA_SCHEDULE
        self._size = (int(meta['image_height']), int(meta['image_width']))
        self.cache = StreamingCache()
        self._stream_size = None
        self._last_size = self._size
        self._empty = {i.name: (i.shape[0], i.shape[2]) for i in self.session.get_inputs()
                       if i.name in ONNX_CACHE}

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self._size

    def _run_step(
        self, frame: np.ndarray, context: list[torch.Tensor] | None,
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        if tuple(frame.shape[:2]) != self._size:
            raise BadInputError(
                f'This ONNX export takes {self._size[1]}x{self._size[0]} images, got '
                f'{frame.shape[1]}x{frame.shape[0]}.', 'image_shape')
        feed: dict[str, np.ndarray] = {ONNX_IMAGE: np.ascontiguousarray(frame[None])}
        for i, name in enumerate(ONNX_CACHE):
            if context is None:
                rows, channels = self._empty[name]
                feed[name] = np.zeros((rows, 0, channels), np.float32)
            else:
                feed[name] = context[i].numpy()
        depth, *states = self.session.run(None, feed)
        return depth[0], [torch.from_numpy(s) for s in states]

    def infer_video(self, frames: np.ndarray) -> np.ndarray:
        raise ConfigError('Window mode (infer_video) needs the torch backend: the ONNX '
                          'export holds the one-frame streaming step.')
