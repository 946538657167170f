"""An in-process rclpy node spun by a background thread, and waits on topic matching.

The live evaluator (``ros/replay.py``) publishes a bag and records the node's outputs
with one; the tests' harness builds its test node on it. Waits are on the middleware's
"matched" events, never fixed sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from typing import Any, Self

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


class SpinningNode:
    """An rclpy node with its own context, spinning in a daemon thread until ``close``.

    Publishers, subscriptions and timers may be created on ``node`` after construction.

    Args:
        name: node name.
        signal_handler_options: rclpy's signal handlers for this context (default: none,
            so a library never takes Ctrl-C away from its host program).
    """

    def __init__(self, name: str, *,
                 signal_handler_options: SignalHandlerOptions = SignalHandlerOptions.NO,
                 ) -> None:
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=signal_handler_options)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        """Stop spinning, destroy the node and shut its context down."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MatchCounter:
    """Counts of matched peers per publisher/subscription, kept by their matched events.

    ``callback(key)`` gives the ``matched`` event callback of one endpoint, e.g.
    ``PublisherEventCallbacks(matched=counter.callback('image'))``.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._condition = threading.Condition()

    def callback(self, key: str) -> Callable[[Any], None]:
        """Start counting ``key`` (at 0); returns its ``matched`` event callback."""
        with self._condition:
            self._counts[key] = 0

        def on_matched(info: Any) -> None:
            with self._condition:
                self._counts[key] = info.current_count
                self._condition.notify_all()

        return on_matched

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the current counts per key."""
        with self._condition:
            return dict(self._counts)

    def wait(self, minimum: int = 1, timeout: float = 20.0, *,
             check: Callable[[], None] | None = None) -> bool:
        """Wait until every key has at least ``minimum`` matched peers.

        Args:
            minimum: peers each key needs.
            timeout: seconds.
            check: called about every 0.2 s while waiting (e.g. to raise if the peer's
                process died).

        Returns:
            False when ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while not all(v >= minimum for v in self._counts.values()):
                if check is not None:
                    check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.2))
        return True
