"""A chain of worker threads that hand the newest item on: pipelining on a few cores.

A frame's work is split into stages (in the node: decode and shrink + model; odometry
and alignment; cloud and publishing). Each stage runs in its own thread and passes its
result to the next stage through a one-slot mailbox. A stage starts an item only when
the mailbox after it is empty (back-pressure), so no work is spent on an item that
would wait behind another: items wait only in front of the first stage, where a newer
one replaces the waiting one, which is dropped and counted (latency beats completeness
live). Items therefore leave the chain in the order they entered it, each the newest
one when the first stage took it, and every item is either finished or reported to
``on_drop`` exactly once.

OpenCV and numpy release the GIL in their heavy loops, so on two cores the stages of
consecutive frames overlap: frame n+1 is shrunk and inferred while frame n is aligned
and frame n-1 published. A stage that raises does not stop the chain: ``on_error``
gets the exception and the item, and the stage takes the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import threading
import time
from typing import Any

#: A stage: takes the item of the previous stage, returns its own (None: nothing to
#: hand on, e.g. a frame skipped because nobody subscribes).
Stage = Callable[[Any], Any]


class StageChain:
    """Threads running ``stages`` in order, one-slot mailboxes between them.

    Args:
        stages: the stage functions, first to last; each runs in its own thread.
        names: thread names (one per stage).
        on_drop: ``on_drop(stage_index)`` when an item waiting for stage
            ``stage_index`` is replaced by a newer one (called under no lock of the chain;
            with the back-pressure always 0, the first stage).
        on_error: ``on_error(stage_index, error, item)`` when a stage raises.
        on_accepting: called (under no lock of the chain) when :meth:`accepting` may have
            become true: a source that holds items back while the chain is busy (the
            node's input gate) hands on its newest one then.

    Not a queue: at most one item waits in front of each stage.
    """

    def __init__(self, stages: Sequence[Stage], names: Sequence[str],
                 on_drop: Callable[[int], None],
                 on_error: Callable[[int, Exception, Any], None],
                 on_accepting: Callable[[], None] | None = None) -> None:
        if not stages or len(stages) != len(names):
            raise ValueError('StageChain needs one name per stage and at least one stage.')
        self._stages = list(stages)
        self._on_drop = on_drop
        self._on_error = on_error
        self._on_accepting = on_accepting
        self._condition = threading.Condition()
        self._slots: list[Any] = [None] * len(stages)
        self._busy = [False] * len(stages)
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, args=(i,), name=name, daemon=True)
                         for i, name in enumerate(names)]
        for thread in self._threads:
            thread.start()

    def put(self, item: Any) -> None:
        """Hand ``item`` to the first stage (replacing, and dropping, one still waiting)."""
        self._hand(0, item)

    def accepting(self, *, ahead: bool = False) -> bool:
        """Whether to :meth:`put` an item now: nothing waits for the first stage and it
        would start the item at once (free, its result not held back), or, ``ahead``,
        as soon as it can (taking an item ahead overlaps taking it with the work, for a
        first stage quick enough that the item does not age much meanwhile)."""
        with self._condition:
            if self._stopping or self._slots[0] is not None:
                return False
            return ahead or (not self._busy[0] and (
                len(self._slots) == 1 or self._slots[1] is None))

    def idle(self) -> bool:
        """Whether no item waits and no stage is working."""
        with self._condition:
            return not any(self._busy) and all(slot is None for slot in self._slots)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until :meth:`idle`; returns whether it is."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not any(self._busy) and all(s is None for s in self._slots), timeout)

    def stop(self, timeout: float) -> bool:
        """Let each stage finish its current item, drop waiting ones, stop the threads.

        Returns:
            True when every thread ended within ``timeout`` seconds (in total).
        """
        with self._condition:
            self._stopping = True
            self._slots = [None] * len(self._slots)
            self._condition.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads if t is not threading.current_thread())

    def _hand(self, index: int, item: Any) -> None:
        with self._condition:
            if self._stopping:
                return
            dropped = self._slots[index] is not None
            self._slots[index] = item
            self._condition.notify_all()
        if dropped:
            self._on_drop(index)

    def _run(self, index: int) -> None:
        stage = self._stages[index]
        last = index + 1 == len(self._stages)
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or (
                    self._slots[index] is not None and (last or self._slots[index + 1] is None)))
                if self._stopping:
                    return
                item, self._slots[index] = self._slots[index], None
                self._busy[index] = True
            if index <= 1:
                self._notify_accepting()
            try:
                result = stage(item)
            except Exception as err:  # a stage's bug must not stop the chain
                result = None
                self._on_error(index, err, item)
            if result is not None and index + 1 < len(self._stages):
                self._hand(index + 1, result)
            with self._condition:
                self._busy[index] = False
                self._condition.notify_all()
            if index == 0:
                self._notify_accepting()

    def _notify_accepting(self) -> None:
        if self._on_accepting is not None:
            self._on_accepting()
