"""The /diagnostics verdict: no subscribers is not "too slow", and slow is a warning."""

from __future__ import annotations

from endo_depth_ros.ros.diagnostics import OK, WARN, FrameStats, verdict


def _tick(received: int, idle: int, processed: int, dropped: int, published: int) -> FrameStats:
    stats = FrameStats(_last_tick=0.0)
    stats.received, stats.idle, stats.processed = received, idle, processed
    stats.dropped, stats.published, stats.last_input = dropped, published, 1.0
    return stats


def test_frames_skipped_for_lack_of_subscribers_are_not_reported_as_slow() -> None:
    tick = _tick(received=10, idle=10, processed=0, dropped=0, published=0).tick(now=1.0)
    level, message = verdict(tick, '/cam/image', None)
    assert level == OK and message.startswith('no subscribers'), message


def test_a_pipeline_slower_than_the_camera_is_a_warning_naming_the_rates() -> None:
    tick = _tick(received=30, idle=0, processed=5, dropped=25, published=5).tick(now=1.0)
    level, message = verdict(tick, '/cam/image', 'tracking')
    assert level == WARN and 'slower than the camera: serving 5.0 of 30.0 Hz' in message


def test_silence_names_the_resolved_topic() -> None:
    level, message = verdict(FrameStats().tick(), '/ns/cam/image', None)
    assert level == WARN and message == 'no images on /ns/cam/image'
