"""The stage chain of the pipelined node: order, newest first, drop counting, errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import contextlib
import threading

import pytest

from endo_depth_ros.stages import Stage, StageChain


class Recorder:
    """Drops and errors reported by a chain."""

    def __init__(self) -> None:
        self.drops: list[int] = []
        self.errors: list[tuple[int, str, object]] = []
        self.lock = threading.Lock()

    def on_drop(self, stage: int) -> None:
        with self.lock:
            self.drops.append(stage)

    def on_error(self, stage: int, err: Exception, item: object) -> None:
        with self.lock:
            self.errors.append((stage, str(err), item))


@contextlib.contextmanager
def running(stages: Sequence[Stage], recorder: Recorder) -> Iterator[StageChain]:
    """A chain of ``stages`` (threads named a, b, ...), stopped cleanly afterwards."""
    chain = StageChain(stages, 'abcdefgh'[:len(stages)], recorder.on_drop, recorder.on_error)
    try:
        yield chain
    finally:
        assert chain.stop(5.0)


def test_every_item_passes_every_stage_in_order_when_nothing_waits() -> None:
    finished: list[int] = []
    recorder = Recorder()
    with running([lambda x: x * 10, lambda x: x + 1, finished.append], recorder) as chain:
        for i in range(20):
            chain.put(i)
            assert chain.wait_idle(5.0)
    assert finished == [10 * i + 1 for i in range(20)]
    assert recorder.drops == [] and recorder.errors == []


def test_a_busy_stage_holds_the_chain_back_and_only_the_newest_waiting_item_survives() -> None:
    gate = threading.Event()
    started = threading.Event()
    started_items: list[int] = []
    finished: list[int] = []
    recorder = Recorder()

    def first(x: int) -> int:
        started_items.append(x)
        return x

    def slow(x: int) -> int:
        started.set()
        gate.wait(5.0)
        return x

    with running([first, slow, finished.append], recorder) as chain:
        chain.put(0)
        assert started.wait(5.0)  # stage b holds item 0
        chain.put(1)
        with chain._condition:  # stage a hands 1 on; it then waits in front of b
            assert chain._condition.wait_for(lambda: chain._slots[1] == 1, 5.0)
        for i in range(2, 6):
            chain.put(i)  # stage a may not start: the mailbox after it is full
        gate.set()
        assert chain.wait_idle(5.0)
    assert finished == [0, 1, 5]
    assert started_items == [0, 1, 5]  # no work spent on 2..4
    assert recorder.drops == [0, 0, 0]  # 2, 3, 4 replaced in front of the first stage
    assert len(finished) + len(recorder.drops) == 6  # every item finished or counted


def test_items_never_leave_older_than_an_earlier_one_under_load() -> None:
    finished: list[int] = []
    recorder = Recorder()
    with running([lambda x: x, lambda x: x, finished.append], recorder) as chain:
        for i in range(2000):
            chain.put(i)
        assert chain.wait_idle(10.0)
    assert finished == sorted(finished)
    assert len(set(finished)) == len(finished)
    assert finished[-1] == 1999  # the newest item always gets through
    assert len(finished) + len(recorder.drops) == 2000


def test_a_stage_that_raises_reports_the_item_and_the_chain_keeps_serving() -> None:
    finished: list[int] = []
    recorder = Recorder()

    def picky(x: int) -> int:
        if x == 3:
            raise ValueError('bad frame')
        return x

    with running([picky, finished.append], recorder) as chain:
        for i in range(6):
            chain.put(i)
            assert chain.wait_idle(5.0)
    assert finished == [0, 1, 2, 4, 5]
    assert recorder.errors == [(0, 'bad frame', 3)]


def test_a_stage_returning_none_ends_that_item_without_a_drop() -> None:
    finished: list[int] = []
    recorder = Recorder()
    with running([lambda x: x if x % 2 else None, finished.append], recorder) as chain:
        for i in range(6):
            chain.put(i)
            assert chain.wait_idle(5.0)
    assert finished == [1, 3, 5] and recorder.drops == []


def test_stop_lets_the_current_item_finish_and_ignores_later_ones() -> None:
    gate = threading.Event()
    started = threading.Event()
    finished: list[int] = []
    recorder = Recorder()

    def slow(x: int) -> None:
        started.set()
        gate.wait(5.0)
        finished.append(x)

    chain = StageChain([slow], ['a'], recorder.on_drop, recorder.on_error)
    chain.put(1)
    assert started.wait(5.0)
    assert not chain.stop(0.05)  # still finishing item 1
    gate.set()
    assert chain.stop(5.0)
    chain.put(2)  # after stop: ignored
    assert finished == [1]


def test_a_chain_needs_one_name_per_stage() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match='one name per stage'):
        StageChain([lambda x: x], ['a', 'b'], recorder.on_drop, recorder.on_error)


def test_the_chain_accepts_only_when_an_item_would_start_at_once_and_says_when_it_does(
) -> None:
    """``accepting`` is what the node's input gate waits for: the first stage free and its
    result not held back by the second; ``on_accepting`` fires when that becomes true."""
    release = [threading.Event(), threading.Event()]
    started = [threading.Event(), threading.Event()]
    wakes = threading.Semaphore(0)
    recorder = Recorder()

    def stage(index: int) -> Stage:
        def run(x: int) -> int:
            started[index].set()
            assert release[index].wait(5.0)
            return x
        return run

    chain = StageChain([stage(0), stage(1)], 'ab', recorder.on_drop, recorder.on_error,
                       on_accepting=wakes.release)
    try:
        assert chain.accepting()
        chain.put(1)
        assert started[0].wait(5.0)
        assert not chain.accepting()  # the first stage is busy with item 1
        release[0].set()
        assert started[1].wait(5.0)  # item 1 moved on: the first stage is free again
        assert wakes.acquire(timeout=5.0)
        assert chain.accepting()
        chain.put(2)  # waits for, or passes, the first stage, then waits for the second
        assert not chain.accepting()
        release[1].set()
        assert chain.wait_idle(5.0)
        assert chain.accepting()
    finally:
        release[0].set()
        release[1].set()
        assert chain.stop(5.0)
    assert recorder.drops == [] and recorder.errors == []


def test_ahead_the_chain_accepts_the_next_item_while_the_first_stage_works() -> None:
    """``accepting(ahead=True)`` (a quick first stage: the node takes the next image during
    its work) needs only that nothing waits for the first stage."""
    release = threading.Event()
    started = threading.Event()
    recorder = Recorder()

    def first(x: int) -> int:
        started.set()
        assert release.wait(5.0)
        return x

    chain = StageChain([first], 'a', recorder.on_drop, recorder.on_error)
    try:
        chain.put(1)
        assert started.wait(5.0)
        assert chain.accepting(ahead=True) and not chain.accepting()
        chain.put(2)  # waits for the first stage
        assert not chain.accepting(ahead=True)
    finally:
        release.set()
        assert chain.wait_idle(5.0)
        assert chain.stop(5.0)
    assert recorder.drops == [] and recorder.errors == []
