"""The node's image input: frames replaced before it took them, frame buffers reused."""

from __future__ import annotations

from endo_depth_ros.ros.input_gate import MAX_PUBLISHERS, ReplacedFrames


def info(sequence: int | None, publisher: bytes = b'camera') -> dict[str, object]:
    """A message info as rclpy gives it to two-argument callbacks."""
    return {'publication_sequence_number': sequence,
            'publisher_gid': {'implementation_identifier': 'rmw_fastrtps_cpp',
                              'data': publisher}}


def test_a_jump_in_a_publishers_sequence_counts_the_frames_in_between() -> None:
    replaced = ReplacedFrames()
    assert replaced.replaced(info(5)) == 0  # the first message says nothing about before
    assert replaced.replaced(info(6)) == 0
    assert replaced.replaced(info(10)) == 3
    # Frames the middleware reported lost in transport are not counted twice.
    assert replaced.replaced(info(14), lost_since=1) == 2


def test_publishers_are_counted_apart_and_a_restart_is_not_a_gap() -> None:
    replaced = ReplacedFrames()
    assert replaced.replaced(info(100, b'left')) == 0
    assert replaced.replaced(info(1, b'right')) == 0
    assert replaced.replaced(info(103, b'left')) == 2
    assert replaced.replaced(info(1, b'left')) == 0  # numbering restarted
    assert replaced.replaced(info(2, b'right')) == 0


def test_without_sequence_numbers_nothing_is_counted_and_memory_stays_bounded() -> None:
    replaced = ReplacedFrames()
    assert replaced.replaced(None) == 0
    assert replaced.replaced(info(None)) == 0
    for i in range(3 * MAX_PUBLISHERS):
        replaced.replaced(info(1, bytes([i])))
    assert len(replaced._last) == MAX_PUBLISHERS


def test_the_node_reuses_freed_frame_buffers_instead_of_faulting_in_fresh_pages() -> None:
    """After the node's malloc settings, frame-sized buffers (an HD image message and its
    copy, alive together) reuse freed memory: no page-by-page zero-fill of fresh mappings
    every frame (glibc's default maps and unmaps each one: ~3000 faults per frame)."""
    import resource
    import sys

    from endo_depth_ros.ros.node import _reuse_freed_frame_memory

    if not sys.platform.startswith('linux'):
        return
    _reuse_freed_frame_memory()
    frame_bytes, frames = 1920 * 1080 * 3, 10
    pages = range(0, frame_bytes, 4096)

    def frame() -> None:
        message, copy = bytearray(frame_bytes), bytearray(frame_bytes)
        for offset in pages:  # touch every page
            message[offset] = copy[offset] = 1

    frame()  # the first frame may grow the heap
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(frames):
        frame()
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    assert faults < frames * 2 * len(pages) / 20, faults
