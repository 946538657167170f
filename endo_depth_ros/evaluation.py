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
from endo_depth_ros.pipeline import FrameResult, ModelConfig, Pipeline, PipelineConfig


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

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError('At least one model must be evaluated.')
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

    @property
    def stop(self) -> int | None:
        """Index (exclusive) of the last bag frame to read, or None for all."""
        return None if self.frames == 0 else self.start + self.frames * self.stride


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


@dataclass
class Sample:
    """A frame kept for the contact sheet (all arrays at the image size)."""

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    gt_depth: np.ndarray | None


@dataclass
class RunResult:
    """Scores of one (bag, model, alignment mode) run.

    ``summary`` holds the headline numbers (``None`` when not computable):
    ``abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3`` (frame means; metres where a unit
    applies), ``tae`` (×100), ``ate`` (m, Sim(3)), ``ate_se3`` (m), ``traj_scale``,
    ``rpe_trans`` (m), ``rpe_rot`` (deg), ``ms_per_frame``, ``fps``, and in live mode
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
    output_kind = 'metric_depth'
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
            for align in config.align_modes:
                with progress_bar(progress, f'{Path(path).name} {spec.label}/{align}',
                                  config.frames or None) as bar:
                    if write_bag is not None and not results:
                        with OutputBag(write_bag, overwrite=overwrite) as out:
                            results.append(evaluate_run(path, topics, spec, model, align,
                                                        config, bar, out))
                    else:
                        results.append(evaluate_run(path, topics, spec, model, align, config,
                                                    bar))
    return results


def evaluate_run(
    path: str | Path,
    topics: bags.BagTopics,
    spec: ModelSpec,
    model: DepthModel,
    align: str,
    config: EvalConfig,
    progress: Progress | None = None,
    output_bag: OutputBag | None = None,
) -> RunResult:
    """Run one bag through a fresh ``Pipeline`` with ``model`` and score it."""
    pipeline = Pipeline(pipeline_config_for(config.pipeline, spec, align), model=model)
    oracle = model if isinstance(model, GroundTruthModel) else None
    pending: dict[int, FrameRecord] = {}
    records: list[FrameRecord] = []
    intrinsics: Intrinsics | None = None
    start_wall = time.perf_counter()

    def collect(outputs: list[FrameResult]) -> None:
        for out in outputs:
            record = pending.pop(out.stamp_ns)
            record.depth = out.depth
            record.fallback = out.fallback
            record.timings_ms = dict(out.timings_ms)
            record.runtime_ms = float(sum(out.timings_ms.values()))
            if out.pose is not None and out.pose.valid:
                record.est_pose = np.asarray(out.pose.pose, dtype=np.float64)
            records.append(record)
            if output_bag is not None:
                output_bag.write(out)

    for frame in bags.read_frames(path, topics, start=config.start, stop=config.stop,
                                  stride=config.stride):
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
        collect(pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns))
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

    result = RunResult(bag=str(path), model=spec.label, align=align, protocol=config.protocol,
                       output_kind=model.output_kind)
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
    """
    lo, hi = config.min_depth, config.max_depth
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
                                     config.protocol, min_depth=lo, max_depth=hi)
        for (record, pred, gt), fit in zip(scored, fits, strict=True):
            err = None
            if fit is not None:
                aligned[id(record)] = fit.apply(pred)
                err = metrics.depth_errors(gt, aligned[id(record)], min_depth=lo, max_depth=hi)
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

    summary['tae'] = None
    with_pose = [(r, p, g, r.gt_pose) for r, p, g in scored if r.gt_pose is not None]
    if len(with_pose) >= 2 and intrinsics is not None:
        tae_protocol = 'sequence-median' if config.protocol == 'median' else config.protocol
        seq_fit = metrics.fit_alignment([p for _, p, _, _ in with_pose],
                                        [g for _, _, g, _ in with_pose], tae_protocol,
                                        min_depth=lo, max_depth=hi)
        depths = [np.full(p.shape, np.nan, np.float32) if f is None else f.apply(p)
                  for (_, p, _, _), f in zip(with_pose, seq_fit, strict=True)]
        pairs = metrics.temporal_alignment_errors(
            depths, [pose for _, _, _, pose in with_pose], intrinsics, min_depth=lo, max_depth=hi)
        column = [None] * n
        for (record, _, _, _), value in zip(with_pose[1:], pairs, strict=True):
            column[position[id(record)]] = float(value) if np.isfinite(value) else None
        per_frame['tae'] = column
        finite = pairs[np.isfinite(pairs)]
        summary['tae'] = float(finite.mean()) if finite.size else None

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


def _score_trajectory(
    result: RunResult,
    records: Sequence[FrameRecord],
    summary: dict[str, float | None],
    per_frame: dict[str, list[float | int | None]],
    position: dict[int, int],
) -> None:
    """ATE (Sim(3) and SE(3)) and RPE on frames with both a valid estimate and ground truth."""
    for key in ('ate', 'ate_se3', 'traj_scale', 'rpe_trans', 'rpe_rot'):
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
    summary['traj_scale'] = s
    trans, rot = metrics.relative_pose_error(est, gt, scale=s)
    summary['rpe_trans'] = float(trans.mean())
    summary['rpe_rot'] = float(rot.mean())
    column: list[float | int | None] = [None] * len(records)
    for (record, _, _), err in zip(both, errors, strict=True):
        column[position[id(record)]] = float(err)
    per_frame['ate'] = column
    result.trajectory_est = metrics.align_trajectory(est, gt, with_scale=True)[:, :3, 3]
    result.trajectory_gt = gt[:, :3, 3]


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
                              depth=aligned.get(id(r), r.depth), gt_depth=r.gt_depth))
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
