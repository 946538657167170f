"""Take an image off the middleware only when the node can start on it.

A 1920x1080 rgb8 message is 6 MB: taking it (copying it out of the middleware into a
Python object) costs milliseconds with the GIL held, which the node's processing threads
then wait for. Taking every frame of a 60 Hz camera only to drop most of them was the
largest single use of the GIL in a live HD node (``endo-depth-bench node --live``).

The image subscription therefore sits in an :class:`InputGate` callback group: the
executor waits on it only while the first processing stage can start a new frame at once,
or soon when that stage is quick (``StageChain.accepting``), and is woken when that
becomes true. Meanwhile the subscription's keep-last-1 history keeps the newest frame,
replacing older ones in the middleware, so the frame taken is always the newest (latency
beats completeness). The frames replaced there are counted from the publishers' sequence
numbers (:class:`ReplacedFrames`): the node still accounts for every frame sent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
import threading
from typing import Any

from rclpy.callback_groups import CallbackGroup

#: Publishers whose sequence numbers are remembered (a camera restarting gets a new id).
MAX_PUBLISHERS = 16


class InputGate(CallbackGroup):
    """A mutually exclusive callback group that lets its callback run only when ``ready``.

    Args:
        ready: whether the consumer would take a new item now (called by the executor
            from its thread, often: keep it cheap).
    """

    def __init__(self, ready: Callable[[], bool]) -> None:
        super().__init__()
        self._ready = ready
        self._active: Any = None
        self._lock = threading.Lock()

    def can_execute(self, entity: Any) -> bool:
        with self._lock:
            return self._active is None and self._ready()

    def beginning_execution(self, entity: Any) -> bool:
        with self._lock:
            if self._active is None and self._ready():
                self._active = entity
                return True
            return False

    def ending_execution(self, entity: Any) -> None:
        with self._lock:
            self._active = None


class ReplacedFrames:
    """Frames a keep-last subscription replaced before they were taken, per publisher.

    Each publisher numbers its messages; a jump of ``k`` between two taken messages means
    ``k - 1`` were replaced in the middleware (or lost in transport, which the middleware
    reports separately: pass those in ``lost_since``). Without sequence numbers (an rmw
    that does not provide them) nothing is counted.
    """

    def __init__(self) -> None:
        self._last: OrderedDict[bytes, int] = OrderedDict()

    def replaced(self, info: Mapping[str, Any] | None, lost_since: int = 0) -> int:
        """Frames skipped before the message described by ``info`` (its message info)."""
        if not info:
            return 0
        sequence = info.get('publication_sequence_number')
        gid = info.get('publisher_gid') or {}
        if sequence is None:
            return 0
        key = bytes(gid.get('data', b''))
        last = self._last.pop(key, None)
        self._last[key] = sequence
        while len(self._last) > MAX_PUBLISHERS:
            self._last.popitem(last=False)
        if last is None or sequence <= last:
            return 0  # first message of this publisher, or it restarted its numbering
        return max(0, sequence - last - 1 - lost_since)
