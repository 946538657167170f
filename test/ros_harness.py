"""Helpers for tests that talk to real ROS 2 middleware.

- ``NodeProcess`` runs a node (or any Python module) in a separate process and stops it
  with SIGINT, as Ctrl-C would, so tests can check that it exits cleanly.
- ``RosTestNode`` is an in-test node spinning in a background thread, with helpers to
  publish and to wait, with a timeout, for subscriptions to match and for messages to
  arrive. Waits are on events, never fixed sleeps.

Both build on the package's own ``endo_depth_ros.ros.process.NodeProcess`` and
``endo_depth_ros.ros.spinning.SpinningNode`` (which the live evaluator uses too), adding
what only tests want: failing on an unclean exit, recorders, the repo root as cwd.

Import this module only in tests that need rclpy; ``conftest.py`` has already confined
DDS to localhost and chosen a private domain id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
import threading
from typing import Any, Generic, TypeVar

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions

from endo_depth_ros.ros import process, spinning

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Cross-process discovery usually takes ~50 ms here but sometimes ~2 s: wait generously.
DISCOVERY_TIMEOUT_S = 20.0

MsgT = TypeVar('MsgT')


class NodeProcess(process.NodeProcess):
    """A Python module (usually a ROS node) running in its own process, from the repo root.

    Args:
        args: arguments after ``python``, e.g. ``['-m', 'endo_depth_ros.ros.node',
            '--ros-args', '-p', 'model.name:=photometric']``.
        env: extra environment variables (the test session's ROS settings are inherited).
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        super().__init__(args, env, cwd=REPO_ROOT)

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGINT and wait for the exit code (kill after ``timeout`` s and fail)."""
        code = super().stop(timeout)
        if self.killed:
            raise AssertionError(
                f'process did not exit within {timeout} s of SIGINT; stderr:\n{self.stderr}')
        return code

    def assert_clean_exit(self, timeout: float = 15.0) -> None:
        """Stop with SIGINT and assert exit code 0 and no traceback on stderr."""
        code = self.stop(timeout)
        stderr = self.stderr
        assert code == 0, f'exit code {code}; stderr:\n{stderr}'
        assert 'Traceback' not in stderr, f'traceback on stderr:\n{stderr}'


class TopicRecorder(Generic[MsgT]):
    """Collects messages of one subscription; ``wait_for`` blocks until enough arrived."""

    def __init__(self) -> None:
        self.messages: list[MsgT] = []
        self._condition = threading.Condition()
        self.matched = threading.Event()

    def _on_message(self, msg: MsgT) -> None:
        with self._condition:
            self.messages.append(msg)
            self._condition.notify_all()

    def wait_for(self, count: int = 1, timeout: float = DISCOVERY_TIMEOUT_S) -> list[MsgT]:
        """Wait until ``count`` messages arrived; returns a copy of all received so far."""
        with self._condition:
            ok = self._condition.wait_for(lambda: len(self.messages) >= count, timeout)
            received = list(self.messages)
        if not ok:
            raise AssertionError(f'received {len(received)} of {count} messages in {timeout} s')
        return received

    def wait_until(self, predicate: Callable[[list[MsgT]], bool],
                   timeout: float = DISCOVERY_TIMEOUT_S) -> list[MsgT]:
        """Wait until ``predicate(messages)`` holds; returns a copy of all received."""
        with self._condition:
            ok = self._condition.wait_for(lambda: predicate(self.messages), timeout)
            received = list(self.messages)
        if not ok:
            raise AssertionError(f'condition not met within {timeout} s ({len(received)} msgs)')
        return received

    def clear(self) -> None:
        with self._condition:
            self.messages.clear()


class RosTestNode(spinning.SpinningNode):
    """An in-test rclpy node with its own context, spinning in a background thread."""

    def __init__(self, name: str = 'endo_depth_test') -> None:
        super().__init__(name, signal_handler_options=SignalHandlerOptions.ALL)

    def subscribe(self, msg_type: type[MsgT], topic: str,
                  qos: QoSProfile | int = 10) -> TopicRecorder[MsgT]:
        """Subscribe to ``topic``; the recorder's ``matched`` is set once a publisher matched."""
        recorder: TopicRecorder[MsgT] = TopicRecorder()

        def on_matched(info: Any) -> None:
            if info.current_count > 0:
                recorder.matched.set()

        self.node.create_subscription(
            msg_type, topic, recorder._on_message, qos,
            event_callbacks=SubscriptionEventCallbacks(matched=on_matched))
        return recorder

    def publisher(self, msg_type: type[Any], topic: str,
                  qos: QoSProfile | int = 10) -> MatchedPublisher:
        """A publisher whose ``wait_for_subscribers`` waits on the matched event."""
        return MatchedPublisher(self.node, msg_type, topic, qos)


class MatchedPublisher:
    """A publisher that can wait until ``count`` subscriptions matched."""

    def __init__(self, node: Node, msg_type: type[Any], topic: str,
                 qos: QoSProfile | int) -> None:
        self._matched = spinning.MatchCounter()
        self.publisher: Publisher = node.create_publisher(
            msg_type, topic, qos,
            event_callbacks=PublisherEventCallbacks(matched=self._matched.callback(topic)))

    def wait_for_subscribers(self, count: int = 1, timeout: float = DISCOVERY_TIMEOUT_S) -> None:
        if not self._matched.wait(count, timeout):
            raise AssertionError(f'{count} subscriber(s) did not match within {timeout} s')

    def publish(self, msg: Any) -> None:
        self.publisher.publish(msg)
