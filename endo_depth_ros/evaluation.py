"""Offline evaluation: replay bags through the node's ``Pipeline`` and score the outputs.

For each bag, depth model and temporal alignment mode, every frame of the bag goes
through the same ``endo_depth_ros.pipeline.Pipeline`` the live node runs (model ->
odometry -> temporal alignment -> geometry), deterministically, then
``score_records`` (shared with the live replay in ``endo_depth_ros.ros.replay``)
computes the papers' metrics with ``endo_depth_ros.metrics``:

- per-frame depth errors after the scoring ``protocol``, averaged over frames (frames
  without a valid ground-truth pixel are dropped and counted);
- TAE on depths aligned once per sequence (the protocol's own fit when it is a sequence
  protocol, one median scale for ``median``): per-frame scaling would hide exactly the
  frame-to-frame scale flicker TAE measures;
- ATE (Sim(3) Umeyama, monocular scale) and RPE of the odometry against ground-truth poses.

The model name ``gt`` is an oracle that returns the bag's ground-truth depth as metric
depth, to isolate alignment and odometry errors from the network's.

Video models (``vda-*``, ``endodav``) run in each of ``video_modes``: ``stream`` (what
the node runs: one streaming step per frame) or ``window`` (the authors' offline
windows over the whole selection, computed first; the pipeline then takes those
depths frame by frame and the window's cost is shared out evenly over the frames'
model time). Their table rows read ``name [stream]`` / ``name [window]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
from dataclasses import dataclass, field, replace
import math
from pathlib import Path
import time
from typing import Protocol

import numpy as np

from endo_depth_ros import bags, metrics, models, outputs
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, BagError, ConfigError, ModelLoadError
from endo_depth_ros.models import DepthModel
from endo_depth_ros.models.base import OutputKind
from endo_depth_ros.pipeline import (
    FrameResult,
    ModelConfig,
    Pipeline,
    PipelineConfig,
    alignment_for_model,
    is_video_model,
)
from endo_depth_ros.resolution import upsample_depth
from endo_depth_ros.scale import StereoPair


class Progress(Protocol):
    """A progress display (``tqdm`` instances qualify)."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


#: Called once per run with a description and the number of frames (None if unknown).
ProgressFactory = Callable[[str, 'int | None'], Progress]


@contextlib.contextmanager
def progress_bar(progress: ProgressFactory | None, description: str,
                 total: int | None) -> Iterator[Progress | None]:
    """The display ``progress`` makes for one run (None without a factory), closed after."""
    bar = None if progress is None else progress(description, total)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()

#: Name of the ground-truth oracle model.
ORACLE = 'gt'
#: Temporal alignment modes that can be compared (``AlignmentConfig.mode``).
ALIGN_MODES = ('none', 'stream', 'window')
#: How video models run: streaming (live) or the authors' offline windows.
VIDEO_MODES = ('stream', 'window')
#: Largest clip (bytes of RGB) window mode holds in memory at once.
MAX_WINDOW_CLIP_BYTES = 4 << 30


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a registry name (or ``gt``) and an optional checkpoint."""

    name: str
    checkpoint: str = ''

    @property
    def label(self) -> str:
        """Name shown in tables: the model name, plus the checkpoint's file name if any."""
        if self.checkpoint:
            return f'{self.name}:{Path(self.checkpoint).name}'
        return self.name


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how to score it.

    Attributes:
        models: models to compare (``gt`` = ground-truth oracle).
        align_modes: temporal alignment modes to compare (``'none'|'stream'|'window'``).
        protocol: scoring alignment, one of ``metrics.PROTOCOLS``.
        min_depth, max_depth: evaluation range (metres).
        start: first bag frame used.
        frames: at most this many frames (after ``start`` and ``stride``); 0 = all.
        stride: use every ``stride``-th frame.
        pipeline: base pipeline configuration; ``model`` and ``alignment.mode`` are
            replaced per run.
        topics: topic overrides for ``bags.detect_topics`` (``image``, ``camera_info``,
            ``depth``, ``pose``).
        contact_frames: frames kept for the contact sheet.
        gt_units: ``'metric'``, ``'relative'`` (scale-free ground truth: no metre units,
            trajectory errors relative to the path length, protocol ``none`` refused) or
            ``'auto'`` (what the recording says, ``bags.read_recording_info``).
        range_from_gt: with scale-free ground truth, score over the ground truth's own
            depth range instead of ``min_depth``/``max_depth`` (set when the user gave none).
        camera: intrinsics for recordings without camera info, or a function of the
            image (width, height) returning them (``--fx/--fy/--cx/--cy``).
        video_modes: how video models run (``'stream'``, ``'window'``); ignored by
            per-frame models.
    """

    models: tuple[ModelSpec, ...] = (ModelSpec('photometric'),)
    align_modes: tuple[str, ...] = ('stream',)
    protocol: str = 'median'
    min_depth: float = metrics.DEFAULT_MIN_DEPTH
    max_depth: float = metrics.DEFAULT_MAX_DEPTH
    start: int = 0
    frames: int = 0
    stride: int = 1
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    topics: dict[str, str] = field(default_factory=dict)
    contact_frames: int = 4
    gt_units: str = 'auto'
    range_from_gt: bool = False
    camera: Intrinsics | bags.CameraGuess | None = None
    video_modes: tuple[str, ...] = ('stream',)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError('At least one model must be evaluated.')
        if not self.video_modes or any(m not in VIDEO_MODES for m in self.video_modes):
            raise ConfigError(
                f'Video modes must be some of {VIDEO_MODES}, got {self.video_modes!r}.')
        if not self.align_modes:
            raise ConfigError('At least one alignment mode must be evaluated.')
        for mode in self.align_modes:
            if mode not in ALIGN_MODES:
                raise ConfigError(
                    f'Unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}.')
        if self.protocol not in metrics.PROTOCOLS:
            raise ConfigError(
                f'Unknown scoring protocol {self.protocol!r}; expected one of {metrics.PROTOCOLS}.')
        if not (math.isfinite(self.min_depth) and math.isfinite(self.max_depth)
                and 0 < self.min_depth < self.max_depth):
            raise ConfigError(
                f'Need 0 < min_depth < max_depth, got min_depth={self.min_depth}, '
                f'max_depth={self.max_depth}.')
        if self.start < 0:
            raise ConfigError(f'start must be >= 0, got {self.start}.')
        if self.frames < 0:
            raise ConfigError(f'frames must be >= 0 (0 = all), got {self.frames}.')
        if self.stride < 1:
            raise ConfigError(f'stride must be >= 1, got {self.stride}.')
        if self.contact_frames < 0:
            raise ConfigError(f'contact_frames must be >= 0, got {self.contact_frames}.')
        if self.gt_units not in ('auto', *bags.GT_UNITS):
            raise ConfigError(f'gt_units must be auto, metric or relative, got {self.gt_units!r}.')
        check_protocol_for_units(self.protocol, self.gt_units)

    @property
    def stop(self) -> int | None:
        """Index (exclusive) of the last bag frame to read, or None for all."""
        return None if self.frames == 0 else self.start + self.frames * self.stride


def check_protocol_for_units(protocol: str, gt_units: str, where: str = '') -> None:
    """Refuse metric scoring (protocol ``none``) of scale-free ground truth.

    Raises:
        ConfigError: ``protocol`` is ``none`` and ``gt_units`` is ``relative``.
    """
    if protocol == 'none' and gt_units == 'relative':
        prefix = f'{where}: ' if where else ''
        raise ConfigError(f'{prefix}the ground truth has no unit (scale-free), so --protocol '
                          'none cannot score it; use median, sequence-median, sequence-affine '
                          'or sequence-mad.')


def units_label(gt_units: str) -> str:
    """How depths and distances of ground truth in ``gt_units`` are labelled."""
    return 'm' if gt_units == 'metric' else 'units'


@dataclass
class FrameRecord:
    """One frame's output and ground truth, as scored.

    Attributes:
        index: frame index in the bag.
        stamp_ns: frame stamp (ns).
        depth: (H, W) float32 predicted (temporally aligned) depth, metres; None when the
            frame produced no output (dropped by the live node).
        gt_depth: (H, W) float32 ground-truth depth (metres) or None.
        gt_pose: 4x4 ``T_world_camera`` ground truth or None.
        est_pose: 4x4 ``T_odom_camera`` odometry estimate when valid, else None.
        runtime_ms: processing time of the frame (ms), None if unknown.
        latency_ms: live mode: publication time minus the frame's (sim) stamp (ms).
        fallback: the aligner could not align this frame to its buffer.
        rgb: (H, W, 3) uint8 input image (kept for the contact sheet), or None.
        timings_ms: per-stage timings (``pipeline.STAGES``).
        view: (H, W) bool field of view the pipeline used (None: every pixel); every
            metric is computed inside it.
    """

    index: int
    stamp_ns: int
    depth: np.ndarray | None
    gt_depth: np.ndarray | None = None
    gt_pose: np.ndarray | None = None
    est_pose: np.ndarray | None = None
    runtime_ms: float | None = None
    latency_ms: float | None = None
    fallback: bool = False
    rgb: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    view: np.ndarray | None = None


@dataclass
class Sample:
    """A frame kept for the contact sheet (all arrays at the image size)."""

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    gt_depth: np.ndarray | None
    view: np.ndarray | None = None


@dataclass
class RunResult:
    """Scores of one (bag, model, alignment mode) run.

    ``summary`` holds the headline numbers (``None`` when not computable):
    ``abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3`` (frame means; metres where a unit
    applies), ``tae`` (×100), ``ate`` (m, Sim(3)), ``ate_se3`` (m), ``traj_scale``,
    ``rpe_trans`` (m), ``rpe_rot`` (deg), ``rpe_rot_identity`` (deg: RPE rotation of a
    trajectory that never rotates, the baseline a rotation estimate must beat), ``ate_rel``
    and ``rpe_rel`` (ATE / ground-truth path length, RPE / mean ground-truth step; the
    trajectory scores of scale-free ground truth), truth-referenced temporal consistency
    (``ratio_error_gap1/5/10/20``, ``ratio_static_gapK``, ``scale_drift_max``,
    ``scale_drift_end``, ``abs_rel_seq``; see ``_score_truth_consistency``),
    ``ms_per_frame``, ``fps``, and in live mode
    ``latency_p50_ms``, ``latency_p95_ms``, ``drop_rate``, ``output_rate_hz``.
    ``per_frame`` holds lists aligned with ``per_frame['index']`` (TAE per pair is
    stored at the later frame of the pair, NaN/None elsewhere).
    """

    bag: str
    model: str
    align: str
    protocol: str
    mode: str = 'offline'
    output_kind: str = ''
    frames_total: int = 0
    frames_scored: int = 0
    frames_dropped: int = 0
    fallbacks: int = 0
    has_gt_depth: bool = False
    has_gt_pose: bool = False
    gt_units: str = 'metric'
    depth_range: tuple[float, float] = (metrics.DEFAULT_MIN_DEPTH, metrics.DEFAULT_MAX_DEPTH)
    summary: dict[str, float | None] = field(default_factory=dict)
    per_frame: dict[str, list[float | int | None]] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    trajectory_est: np.ndarray | None = None  # (N, 3) Sim(3)-aligned into the GT frame
    trajectory_gt: np.ndarray | None = None  # (N, 3)
    samples: list[Sample] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``model / align`` (with ``live`` when replayed through the node)."""
        suffix = ' (live)' if self.mode == 'live' else ''
        return f'{self.model} / {self.align}{suffix}'


class GroundTruthModel(DepthModel):
    """Oracle ``DepthModel`` returning the ground-truth depth set before each frame.

    ``set_next(depth)`` must be called before the pipeline runs the frame; the output is
    ``metric_depth`` so the pipeline treats it as a metric network's prediction.
    """

    name = ORACLE
    output_kind: OutputKind = 'metric_depth'
    device = 'cpu'
    precision = 'fp32'
    backend = 'oracle'

    def __init__(self) -> None:
        self._next: np.ndarray | None = None
        self._size = (0, 0)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def set_next(self, depth: np.ndarray) -> None:
        """The depth (H, W) float32 metres to return for the next image."""
        self._next = np.asarray(depth, dtype=np.float32)

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._next is None:
            raise BadInputError('The gt oracle needs ground-truth depth for every frame.',
                                'no_ground_truth')
        if self._next.shape != batch.shape[1:3] and all(
                g > i for g, i in zip(self._next.shape, batch.shape[1:3], strict=True)):
            # The pipeline works at a smaller working size: sample the truth the same way.
            self._next = upsample_depth(self._next, (batch.shape[2], batch.shape[1]))
        if self._next.shape != batch.shape[1:3]:
            raise BadInputError(
                f'Ground-truth depth {self._next.shape[1]}x{self._next.shape[0]} does not '
                f'match the image {batch.shape[2]}x{batch.shape[1]}.', 'size_mismatch')
        self._size = batch.shape[1:3]
        out = np.repeat(self._next[None], batch.shape[0], axis=0)
        self._next = None
        return out


def pipeline_config_for(base: PipelineConfig, model: ModelSpec, align: str) -> PipelineConfig:
    """The base pipeline configuration with the run's model and alignment mode.

    The ``gt`` oracle is metric by construction, so its runs keep the model's scale
    (``scale_source='model'``) instead of the default fixed reference depth.
    """
    model_cfg = base.model
    alignment = replace(base.alignment, mode=align)
    if model.name == ORACLE:
        alignment = replace(alignment, scale_source='model')
    else:
        model_cfg = replace(base.model, name=model.name, checkpoint=model.checkpoint)
    return replace(base, model=model_cfg, alignment=alignment)


def load_model(spec: ModelSpec, base: ModelConfig) -> DepthModel:
    """Build a model once for all alignment modes (``gt`` gives the oracle).

    Raises:
        ModelLoadError, BackendUnavailableError, ConfigError: as ``models.load``.
    """
    if spec.name == ORACLE:
        if spec.checkpoint:
            raise ConfigError('The gt oracle takes no checkpoint.')
        return GroundTruthModel()
    if spec.name not in models.MODEL_NAMES:
        raise ModelLoadError(f'Unknown depth model {spec.name!r}; known models: '
                             f'{", ".join(models.MODEL_NAMES)} and {ORACLE} (oracle).')
    return replace(base, name=spec.name, checkpoint=spec.checkpoint).load()


def evaluate(
    bag_paths: Sequence[str | Path],
    config: EvalConfig,
    *,
    progress: ProgressFactory | None = None,
    write_bag: str | Path | None = None,
    overwrite: bool = False,
) -> list[RunResult]:
    """Evaluate every (bag, model, alignment mode) combination.

    Args:
        bag_paths: bags (MCAP / sqlite3 folders or files) or npz sequence folders.
        config: what to run and how to score.
        progress: optional factory of a progress display per run, updated after each
            frame and closed at the end of the run (the CLI plugs tqdm in here).
        write_bag: also write the first run's outputs as a bag here (see ``OutputBag``).
        overwrite: ``write_bag`` may replace an existing recording (never an input).

    Returns:
        One ``RunResult`` per combination, in model, bag, mode order.

    Raises:
        BagError: missing/corrupt bag, no image topic or no frame in the selected range.
        ModelLoadError: unknown model or bad checkpoint.
        BadInputError: e.g. ground-truth depth and image sizes differ.
        OutputError: ``write_bag`` is an input, or exists without ``overwrite``, or is
            not a recording.
    """
    if write_bag is not None:
        outputs.check_recording_output(write_bag, overwrite=overwrite, inputs=bag_paths)
    results: list[RunResult] = []
    for spec in config.models:
        model = load_model(spec, config.pipeline.model)
        for path in bag_paths:
            topics = bags.detect_topics(path, **config.topics)
            if spec.name == ORACLE and topics.depth is None:
                raise BadInputError(
                    f'The gt oracle needs a ground-truth depth topic, but {path} has none.',
                    'no_ground_truth')
            info = bags.read_recording_info(path)
            run_config = config_for_recording(config, info, path)
            video = is_video_model(model)
            for align, video_mode in _runs(model, spec, config):
                label = f'{spec.label}/{align}' + (f' [{video_mode}]' if video else '')
                with progress_bar(progress, f'{Path(path).name} {label}',
                                  config.frames or None) as bar:
                    if write_bag is not None and not results:
                        with OutputBag(write_bag, overwrite=overwrite) as out:
                            results.append(evaluate_run(path, topics, spec, model, align,
                                                        run_config, bar, out, view=info.view,
                                                        video_mode=video_mode))
                    else:
                        results.append(evaluate_run(path, topics, spec, model, align,
                                                    run_config, bar, view=info.view,
                                                    video_mode=video_mode))
    return results


def config_for_recording(config: EvalConfig, info: bags.RecordingInfo,
                         path: str | Path) -> EvalConfig:
    """``config`` with ``gt_units`` resolved from the recording (when ``'auto'``).

    Raises:
        ConfigError: protocol ``none`` on scale-free ground truth.
    """
    units = info.gt_units if config.gt_units == 'auto' else config.gt_units
    check_protocol_for_units(config.protocol, units, str(path))
    return replace(config, gt_units=units)


def _runs(model: DepthModel, spec: ModelSpec, config: EvalConfig) -> list[tuple[str, str]]:
    """(alignment mode, video mode) pairs to run; a video model's collapse to the modes
    its pipeline really runs (``alignment_for_model``)."""
    if not is_video_model(model):
        return [(align, '') for align in config.align_modes]
    aligns = dict.fromkeys(
        alignment_for_model(model, pipeline_config_for(config.pipeline, spec, align)).mode
        for align in config.align_modes)
    return [(align, mode) for align in aligns for mode in config.video_modes]


class PrecomputedVideoModel(DepthModel):
    """A video model's offline-window output, handed to the pipeline frame by frame.

    Args:
        model: the video model (its name, output kind and device are reported).
        depth: (N, H, W) float32 window-mode output for the frames about to be processed.
    """

    is_video = True

    def __init__(self, model: DepthModel, depth: np.ndarray) -> None:
        self.name = model.name
        self.output_kind = model.output_kind
        self.device = model.device
        self.precision = model.precision
        self.backend = model.backend
        self._model = model
        self._depth = depth
        self._next = 0

    @property
    def input_size(self) -> tuple[int, int]:
        return self._model.input_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self._model.network_size(height, width)

    def reset(self) -> None:
        """Nothing to forget: the windows already ran over the whole clip."""

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        end = self._next + batch.shape[0]
        if end > len(self._depth):
            raise BadInputError('More frames than the window run covered.', 'image_shape')
        out = self._depth[self._next:end]
        self._next = end
        return out


def _window_depth(path: str | Path, topics: bags.BagTopics, model: DepthModel,
                  config: EvalConfig) -> tuple[np.ndarray, float]:
    """Run a video model's offline windows over the selected frames.

    Returns:
        (N, H, W) float32 depth and the cost per frame (ms).

    Raises:
        BagError: the selection is empty or too large to hold in memory.
    """
    images: list[np.ndarray] = []
    size = 0
    for frame in bags.read_frames(path, topics, start=config.start, stop=config.stop,
                                  stride=config.stride, intrinsics=config.camera):
        size += frame.rgb.nbytes
        if size > MAX_WINDOW_CLIP_BYTES:
            raise BagError(
                f'{path}: the selection is over {MAX_WINDOW_CLIP_BYTES >> 30} GiB of images, '
                'too much for window mode at once; select fewer frames (--frames, --stride).')
        images.append(frame.rgb)
    if not images:
        raise BagError(f'{path}: no frames in the selected range (start={config.start}, '
                       f'frames={config.frames}, stride={config.stride}).')
    infer_video = getattr(model, 'infer_video', None)
    if infer_video is None:
        raise ConfigError(f'{model.name} is not a video model: it has no window mode.')
    start = time.perf_counter()
    depth = infer_video(np.stack(images))
    return depth, _ms(start) / len(images)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def evaluate_run(
    path: str | Path,
    topics: bags.BagTopics,
    spec: ModelSpec,
    model: DepthModel,
    align: str,
    config: EvalConfig,
    progress: Progress | None = None,
    output_bag: OutputBag | None = None,
    *,
    view: np.ndarray | None = None,
    video_mode: str = '',
) -> RunResult:
    """Run one bag through a fresh ``Pipeline`` with ``model`` and score it.

    ``view`` is the recording's own field of view (else the pipeline detects it).
    ``video_mode`` ``'window'`` runs a video model's offline windows first (see the
    module docstring); ``''``/``'stream'``: the model runs frame by frame.
    """
    window_ms = 0.0
    if video_mode == 'window':
        depth, window_ms = _window_depth(path, topics, model, config)
        model = PrecomputedVideoModel(model, depth)
    pipeline = Pipeline(pipeline_config_for(config.pipeline, spec, align), model=model)
    if config.pipeline.field_of_view.mode != 'off':  # off means every pixel, as asked
        pipeline.field_of_view.set_fixed(view)
    oracle = model if isinstance(model, GroundTruthModel) else None
    pending: dict[int, FrameRecord] = {}
    records: list[FrameRecord] = []
    intrinsics: Intrinsics | None = None
    start_wall = time.perf_counter()

    def collect(outputs: list[FrameResult]) -> None:
        for out in outputs:
            record = pending.pop(out.stamp_ns)
            # Processed at the working size (PipelineConfig.resolution): score at the bag's.
            record.depth = upsample_depth(out.depth, out.input_size or out.intrinsics.size)
            record.fallback = out.fallback
            record.timings_ms = dict(out.timings_ms)
            if window_ms:
                record.timings_ms['model'] = record.timings_ms.get('model', 0.0) + window_ms
            record.runtime_ms = float(sum(record.timings_ms.values()))
            record.view = out.view
            if out.pose is not None and out.pose.valid:
                record.est_pose = np.asarray(out.pose.pose, dtype=np.float64)
            records.append(record)
            if output_bag is not None:
                output_bag.write(out)

    for frame in bags.read_frames(path, topics, start=config.start, stop=config.stop,
                                  stride=config.stride, intrinsics=config.camera):
        if frame.depth_gt is not None and frame.depth_gt.shape != frame.rgb.shape[:2]:
            raise BadInputError(
                f'{path}: ground-truth depth of frame {frame.index} is '
                f'{frame.depth_gt.shape[1]}x{frame.depth_gt.shape[0]} but the image is '
                f'{frame.rgb.shape[1]}x{frame.rgb.shape[0]}.', 'size_mismatch')
        intrinsics = frame.intrinsics
        if oracle is not None:
            if frame.depth_gt is None:
                raise BadInputError(
                    f'{path}: frame {frame.index} has no ground-truth depth for the gt oracle.',
                    'no_ground_truth')
            oracle.set_next(frame.depth_gt)
        pending[frame.stamp_ns] = FrameRecord(
            index=frame.index, stamp_ns=frame.stamp_ns, depth=None, gt_depth=frame.depth_gt,
            gt_pose=frame.pose_gt, rgb=frame.rgb)
        if frame.kinematics is not None:
            pipeline.add_kinematics(*frame.kinematics)
        stereo = (StereoPair(frame.right_rgb, frame.baseline_m)
                  if frame.right_rgb is not None else None)
        collect(pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns, stereo=stereo))
        if progress is not None:
            progress.update(1)
    collect(pipeline.flush())
    wall_s = time.perf_counter() - start_wall
    if not pending and not records:
        # Same rule as the live replay: an empty selection is a mistake, not a result.
        raise BagError(f'{path}: no frames in the selected range (start={config.start}, '
                       f'frames={config.frames}, stride={config.stride}).')
    # Frames still pending produced no output (cannot happen offline, kept for safety).
    records.extend(pending.values())
    records.sort(key=lambda r: r.index)

    label = f'{spec.label} [{video_mode}]' if video_mode else spec.label
    result = RunResult(bag=str(path), model=label, align=pipeline.aligner.config.mode,
                       protocol=config.protocol, output_kind=model.output_kind,
                       gt_units=config.gt_units if config.gt_units != 'auto' else 'metric')
    score_records(result, records, intrinsics, config)
    result.summary['fps'] = len(records) / wall_s if wall_s > 0 and records else None
    return result


def score_records(
    result: RunResult,
    records: Sequence[FrameRecord],
    intrinsics: Intrinsics | None,
    config: EvalConfig,
) -> RunResult:
    """Fill ``result`` with the metrics of ``records`` (offline and live share this).

    Args:
        result: the run to fill (bag, model, align, protocol already set).
        records: the frames in bag order; ``depth`` None marks a frame without output.
        intrinsics: the camera (for TAE), None if no frame was read.
        config: scoring protocol, depth range and number of contact-sheet frames.

    Raises:
        BagError: the recording has ground-truth depth but the depth range or the field
            of view leaves no pixel of it to score (the message says which).
    """
    units = config.gt_units if config.gt_units != 'auto' else 'metric'
    result.gt_units = units
    lo, hi = scoring_range(records, config, units)
    result.depth_range = (lo, hi)
    out = [r for r in records if r.depth is not None]
    # (record, prediction, ground truth) of frames with both, typed without Optionals.
    scored = [(r, r.depth, r.gt_depth) for r in records
              if r.depth is not None and r.gt_depth is not None]
    result.frames_total = len(records)
    result.fallbacks = sum(r.fallback for r in out)
    result.has_gt_depth = any(r.gt_depth is not None for r in records)
    result.has_gt_pose = any(r.gt_pose is not None for r in records)

    n = len(records)
    per_frame: dict[str, list[float | int | None]] = {
        'index': [r.index for r in records],
        'stamp_ns': [r.stamp_ns for r in records],
        'runtime_ms': [r.runtime_ms for r in records],
        'fallback': [int(r.fallback) for r in records],
        'output': [int(r.depth is not None) for r in records],
        'pose_valid': [int(r.est_pose is not None) for r in records],
    }
    if any(r.latency_ms is not None for r in records):
        per_frame['latency_ms'] = [r.latency_ms for r in records]
    position = {id(r): i for i, r in enumerate(records)}
    summary: dict[str, float | None] = dict.fromkeys(metrics.DEPTH_METRICS)

    # Depth errors after the scoring protocol (fitted on all scored frames at once).
    aligned: dict[int, np.ndarray] = {}
    errors: list[dict[str, float] | None] = []
    if scored:
        fits = metrics.fit_alignment([p for _, p, _ in scored], [g for _, _, g in scored],
                                     config.protocol, min_depth=lo, max_depth=hi,
                                     masks=_views([(r, g) for r, _, g in scored]))
        for (record, pred, gt), fit in zip(scored, fits, strict=True):
            err = None
            if fit is not None:
                aligned[id(record)] = fit.apply(pred)
                err = metrics.depth_errors(gt, aligned[id(record)], min_depth=lo, max_depth=hi,
                                           mask=_view_of(record, gt))
            errors.append(err)
        for key in metrics.DEPTH_METRICS:
            column: list[float | int | None] = [None] * n
            for (record, _, _), err in zip(scored, errors, strict=True):
                column[position[id(record)]] = None if err is None else err[key]
            per_frame[key] = column
        mean = metrics.mean_errors(errors)
        if mean is not None:
            summary.update(mean)
    result.frames_scored = sum(e is not None for e in errors)
    result.frames_dropped = len(records) - result.frames_scored
    if scored and result.frames_scored == 0:
        raise BagError(f'{result.bag}: {_why_nothing_scored(scored, lo, hi, units)}')

    summary['tae'] = None
    with_pose = [(r, p, g, r.gt_pose) for r, p, g in scored if r.gt_pose is not None]
    if len(with_pose) >= 2 and intrinsics is not None:
        tae_protocol = 'sequence-median' if config.protocol == 'median' else config.protocol
        seq_fit = metrics.fit_alignment([p for _, p, _, _ in with_pose],
                                        [g for _, _, g, _ in with_pose], tae_protocol,
                                        min_depth=lo, max_depth=hi,
                                        masks=_views([(r, g) for r, _, g, _ in with_pose]))
        depths = [np.full(p.shape, np.nan, np.float32) if f is None else f.apply(p)
                  for (_, p, _, _), f in zip(with_pose, seq_fit, strict=True)]
        pairs = metrics.temporal_alignment_errors(
            depths, [pose for _, _, _, pose in with_pose], intrinsics, min_depth=lo, max_depth=hi,
            masks=_views([(r, g) for r, _, g, _ in with_pose]))
        column = [None] * n
        for (record, _, _, _), value in zip(with_pose[1:], pairs, strict=True):
            column[position[id(record)]] = float(value) if np.isfinite(value) else None
        per_frame['tae'] = column
        finite = pairs[np.isfinite(pairs)]
        summary['tae'] = float(finite.mean()) if finite.size else None

    _score_truth_consistency(scored, intrinsics, config, summary, per_frame, position)
    _score_trajectory(result, records, summary, per_frame, position)

    runtimes = [r.runtime_ms for r in records if r.runtime_ms is not None]
    summary['ms_per_frame'] = float(np.mean(runtimes)) if runtimes else None
    stages: dict[str, list[float]] = {}
    for r in out:
        for stage, ms in r.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    result.stage_ms = {k: float(np.mean(v)) for k, v in stages.items()}
    latencies = [r.latency_ms for r in records if r.latency_ms is not None]
    if latencies:
        summary['latency_p50_ms'] = float(np.percentile(latencies, 50))
        summary['latency_p95_ms'] = float(np.percentile(latencies, 95))
    result.summary = summary
    result.per_frame = per_frame
    result.samples = _pick_samples(out, aligned, config.contact_frames)
    return result


def _score_truth_consistency(
    scored: Sequence[tuple[FrameRecord, np.ndarray, np.ndarray]],
    intrinsics: Intrinsics | None,
    config: EvalConfig,
    summary: dict[str, float | None],
    per_frame: dict[str, list[float | int | None]],
    position: dict[int, int],
) -> None:
    """Temporal consistency judged against the truth (TAE only checks self-consistency).

    Under one alignment per sequence (the protocol's sequence variant, as for TAE):
    ``ratio_error_gapK`` (median |log predicted - log true depth ratio| of points seen K
    frames apart; ``ratio_static_gapK`` is the same for a "no change" prediction),
    ``scale_drift_max`` / ``scale_drift_end`` (``metrics.scale_drift``) and per-frame
    ``abs_rel_seq`` (AbsRel under the sequence alignment, its mean in the summary).
    """
    lo, hi = config.min_depth, config.max_depth
    keys = ['abs_rel_seq', 'scale_drift_max', 'scale_drift_end']
    for gap in metrics.RATIO_GAPS:
        keys += [f'ratio_error_gap{gap}', f'ratio_static_gap{gap}']
    summary.update(dict.fromkeys(keys))
    if not scored:
        return
    protocol = 'sequence-median' if config.protocol == 'median' else config.protocol
    fits = metrics.fit_alignment([p for _, p, _ in scored], [g for _, _, g in scored],
                                 protocol, min_depth=lo, max_depth=hi)
    depths = [np.full(p.shape, np.nan, np.float32) if f is None else f.apply(p)
              for (_, p, _), f in zip(scored, fits, strict=True)]
    gts = [g for _, _, g in scored]
    n = len(per_frame['index'])
    abs_rel: list[float | int | None] = [None] * n
    for (record, _, gt), depth in zip(scored, depths, strict=True):
        err = metrics.depth_errors(gt, depth, min_depth=lo, max_depth=hi)
        abs_rel[position[id(record)]] = None if err is None else err['abs_rel']
    per_frame['abs_rel_seq'] = abs_rel
    values = [v for v in abs_rel if v is not None]
    summary['abs_rel_seq'] = float(np.mean(values)) if values else None
    relative, _ = metrics.per_frame_scales(depths, gts, min_depth=lo, max_depth=hi)
    scale_column: list[float | int | None] = [None] * n
    for (record, _, _), r in zip(scored, relative, strict=True):
        scale_column[position[id(record)]] = float(r) if np.isfinite(r) else None
    per_frame['scale_ratio'] = scale_column
    summary['scale_drift_max'], summary['scale_drift_end'] = metrics.scale_drift(relative)
    posed = [(i, r.gt_pose) for i, (r, _, _) in enumerate(scored) if r.gt_pose is not None]
    if intrinsics is None or len(posed) < 2:
        return
    for gap in metrics.RATIO_GAPS:
        ratio = metrics.depth_ratio_errors(
            [depths[i] for i, _ in posed], [gts[i] for i, _ in posed],
            [pose for _, pose in posed], intrinsics, gap, min_depth=lo, max_depth=hi)
        summary[f'ratio_error_gap{gap}'] = ratio.median
        summary[f'ratio_static_gap{gap}'] = ratio.static_median


def _score_trajectory(
    result: RunResult,
    records: Sequence[FrameRecord],
    summary: dict[str, float | None],
    per_frame: dict[str, list[float | int | None]],
    position: dict[int, int],
) -> None:
    """ATE (Sim(3) and SE(3)) and RPE on frames with both a valid estimate and ground truth."""
    for key in ('ate', 'ate_se3', 'traj_scale', 'rpe_trans', 'rpe_rot', 'rpe_rot_identity',
                'path_length', 'ate_rel', 'rpe_rel'):
        summary[key] = None
    both = [(r, r.est_pose, r.gt_pose) for r in records
            if r.est_pose is not None and r.gt_pose is not None]
    if len(both) < 3:
        return
    est = np.stack([e for _, e, _ in both])
    gt = np.stack([g for _, _, g in both])
    s, _, _ = metrics.umeyama_alignment(est[:, :3, 3], gt[:, :3, 3], with_scale=True)
    errors = metrics.aligned_position_errors(est, gt, with_scale=True)
    summary['ate'] = float(np.sqrt(np.mean(errors**2)))
    summary['ate_se3'] = metrics.absolute_trajectory_error(est, gt, with_scale=False)
    summary['path_length'] = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum())
    summary['traj_scale'] = s
    trans, rot = metrics.relative_pose_error(est, gt, scale=s)
    summary['rpe_trans'] = float(trans.mean())
    summary['rpe_rot'] = float(rot.mean())
    # The baseline "no rotation at all": RPE rotation of identity rotations is the true one.
    _, identity_rot = metrics.relative_pose_error(np.broadcast_to(np.eye(4), gt.shape), gt)
    summary['rpe_rot_identity'] = float(identity_rot.mean())
    column: list[float | int | None] = [None] * len(records)
    for (record, _, _), err in zip(both, errors, strict=True):
        column[position[id(record)]] = float(err)
    per_frame['ate'] = column
    result.trajectory_est = metrics.align_trajectory(est, gt, with_scale=True)[:, :3, 3]
    result.trajectory_gt = gt[:, :3, 3]
    # Scale-free trajectories are compared relative to their own size.
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    length = float(steps.sum())
    mean_step = float(steps.mean()) if steps.size else 0.0
    summary['ate_rel'] = float(np.sqrt(np.mean(errors**2))) / length if length > 0 else None
    summary['rpe_rel'] = float(trans.mean()) / mean_step if mean_step > 0 else None


def scoring_range(records: Sequence[FrameRecord], config: EvalConfig,
                  units: str) -> tuple[float, float]:
    """The depth range to score: the configured one, or the ground truth's own range.

    With scale-free ground truth and ``range_from_gt``, metre defaults mean nothing, so
    the range is the smallest to the largest positive finite ground-truth depth.
    """
    if units != 'relative' or not config.range_from_gt:
        return config.min_depth, config.max_depth
    lo, hi = math.inf, 0.0
    for r in records:
        if r.gt_depth is None:
            continue
        with np.errstate(invalid='ignore'):
            values = r.gt_depth[np.isfinite(r.gt_depth) & (r.gt_depth > 0)]
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if not hi > lo:
        return config.min_depth, config.max_depth
    return lo, hi


def _view_of(record: FrameRecord, gt: np.ndarray) -> np.ndarray | None:
    """The record's field of view, if it matches the ground truth's size."""
    view = record.view
    return view if view is not None and view.shape == gt.shape else None


def _views(pairs: Sequence[tuple[FrameRecord, np.ndarray]]) -> list[np.ndarray] | None:
    """Per frame the field of view (all True where none), or None when no frame has one."""
    views = [_view_of(r, g) for r, g in pairs]
    if all(v is None for v in views):
        return None
    return [np.ones(g.shape, bool) if v is None else v
            for v, (_, g) in zip(views, pairs, strict=True)]


def _why_nothing_scored(scored: Sequence[tuple[FrameRecord, np.ndarray, np.ndarray]],
                        lo: float, hi: float, units: str) -> str:
    """One line explaining why no ground-truth pixel was scored."""
    unit = units_label(units)
    valid = in_range = in_view = 0
    g_lo, g_hi = math.inf, -math.inf
    for record, _pred, gt in scored:
        with np.errstate(invalid='ignore'):
            finite = np.isfinite(gt) & (gt > 0)
            ranged = finite & (gt >= lo) & (gt <= hi)
        valid += int(finite.sum())
        in_range += int(ranged.sum())
        view = _view_of(record, gt)
        in_view += int((ranged & view).sum()) if view is not None else int(ranged.sum())
        if finite.any():
            g_lo, g_hi = min(g_lo, float(gt[finite].min())), max(g_hi, float(gt[finite].max()))
    if valid == 0:
        return 'the ground-truth depth has no valid (finite, positive) pixel.'
    if in_range == 0:
        hint = (' (scale-free ground truth: omit --min-depth/--max-depth to use its own range)'
                if units == 'relative' else
                ' (is it scale-free? pass --gt-units relative)')
        return (f'no ground-truth depth pixel is in the evaluation range {lo:.4g}-{hi:.4g} '
                f'{unit}: the ground truth spans {g_lo:.4g}-{g_hi:.4g} {unit}{hint}.')
    if in_view == 0:
        return (f'all {in_range} ground-truth pixels in range lie outside the field of view '
                '(check the view mask, or disable it with --fov off).')
    return 'no frame has a valid prediction where the ground truth is (the model output is NaN).'


def _pick_samples(
    out: Sequence[FrameRecord], aligned: dict[int, np.ndarray], count: int
) -> list[Sample]:
    """Evenly spaced frames for the contact sheet (scored depth when available)."""
    if count == 0 or not out:
        return []
    picks = np.unique(np.linspace(0, len(out) - 1, min(count, len(out))).round().astype(int))
    samples = []
    for i in picks:
        r = out[int(i)]
        if r.rgb is None or r.depth is None:
            continue
        samples.append(Sample(index=r.index, rgb=r.rgb,
                              depth=aligned.get(id(r), r.depth), gt_depth=r.gt_depth,
                              view=r.view))
    return samples


class OutputBag:
    """Writes the pipeline's outputs as a rosbag2 (MCAP) for RViz / Foxglove.

    Topics, named like the node's outputs: ``/endoscope/image_raw`` and
    ``/endoscope/camera_info`` (the input), ``/depth/image`` (32FC1 metres, NaN invalid),
    ``/depth/camera_info``, ``/depth/points`` (PointCloud2 x, y, z, rgb float32) and
    ``/pose`` (PoseStamped in ``odom``, valid estimates only).
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._bag = bags.BagWriter(self.path, overwrite=overwrite, topics=(
            (bags.TOPIC_IMAGE, bags.IMAGE_TYPE),
            (bags.TOPIC_CAMERA_INFO, bags.CAMERA_INFO_TYPE),
            ('/depth/image', bags.IMAGE_TYPE),
            ('/depth/camera_info', bags.CAMERA_INFO_TYPE),
            ('/depth/points', bags.POINT_CLOUD_TYPE),
            ('/pose', bags.POSE_TYPE),
        ))

    def write(self, result: FrameResult) -> None:
        """Write one frame's input and outputs at its stamp."""
        stamp = result.stamp_ns
        self._bag.write_image(bags.TOPIC_IMAGE, stamp, result.rgb, 'rgb8')
        self._bag.write_camera_info(bags.TOPIC_CAMERA_INFO, stamp, result.intrinsics)
        self._bag.write_depth('/depth/image', stamp, result.depth)
        self._bag.write_camera_info('/depth/camera_info', stamp, result.intrinsics)
        if result.cloud is not None:
            self._bag.write_cloud('/depth/points', stamp, result.cloud)
        if result.pose is not None and result.pose.valid:
            self._bag.write_pose('/pose', stamp, result.pose.pose, frame_id='odom')

    def close(self) -> None:
        self._bag.close()

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
