"""Helpers for tests that talk to real ROS 2 middleware.

- ``NodeProcess`` runs a node (or any Python module) in a separate process and stops it
  with SIGINT, as Ctrl-C would, so tests can check that it exits cleanly.
- ``RosTestNode`` is an in-test node spinning in a background thread, with helpers to
  publish and to wait, with a timeout, for subscriptions to match and for messages to
  arrive. Waits are on events, never fixed sleeps.

Import this module only in tests that need rclpy; ``conftest.py`` has already confined
DDS to localhost and chosen a private domain id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any, Generic, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, qos_profile_sensor_data

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Cross-process discovery usually takes ~50 ms here but sometimes ~2 s: wait generously.
DISCOVERY_TIMEOUT_S = 20.0

MsgT = TypeVar('MsgT')


def _reset_sigint() -> None:
    # A child started from a backgrounded shell inherits SIGINT ignored; restore the
    # default so that our SIGINT reaches rclpy's handler as Ctrl-C would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NodeProcess:
    """A Python module (usually a ROS node) running in its own process.

    Args:
        args: arguments after ``python``, e.g. ``['-m', 'endo_depth_ros.ros.node',
            '--ros-args', '-p', 'model.name:=photometric']``.
        env: extra environment variables (the test session's ROS settings are inherited).
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self._log_dir = tempfile.TemporaryDirectory(prefix='endo_depth_proc_')
        self._stdout_path = Path(self._log_dir.name) / 'stdout.txt'
        self._stderr_path = Path(self._log_dir.name) / 'stderr.txt'
        full_env = dict(os.environ)
        full_env.update(env or {})
        # Unbuffered output so that logs are complete even if the process is killed.
        full_env['PYTHONUNBUFFERED'] = '1'
        full_env['PYTHONPATH'] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [full_env.get('PYTHONPATH')])])
        with open(self._stdout_path, 'wb') as out, open(self._stderr_path, 'wb') as err:
            self.process = subprocess.Popen(
                [sys.executable, *args], cwd=REPO_ROOT, env=full_env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, preexec_fn=_reset_sigint)

    @property
    def stdout(self) -> str:
        return self._stdout_path.read_text(errors='replace')

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text(errors='replace')

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGINT and wait for the exit code (kill after ``timeout`` s and fail)."""
        if self.running():
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f'process did not exit within {timeout} s of SIGINT; stderr:\n{self.stderr}'
            ) from None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        return self.process.wait(timeout=timeout)

    def assert_clean_exit(self, timeout: float = 15.0) -> None:
        """Stop with SIGINT and assert exit code 0 and no traceback on stderr."""
        code = self.stop(timeout)
        stderr = self.stderr
        assert code == 0, f'exit code {code}; stderr:\n{stderr}'
        assert 'Traceback' not in stderr, f'traceback on stderr:\n{stderr}'

    def close(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait()
        self._log_dir.cleanup()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class RosTestNode:
    """An in-test rclpy node with its own context, spinning in a background thread."""

    def __init__(self, name: str = 'endo_depth_test') -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

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
                  qos: QoSProfile | int = qos_profile_sensor_data) -> MatchedPublisher:
        """A publisher whose ``wait_for_subscribers`` waits on the matched event."""
        return MatchedPublisher(self.node, msg_type, topic, qos)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self) -> RosTestNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MatchedPublisher:
    """A publisher that can wait until ``count`` subscriptions matched."""

    def __init__(self, node: Node, msg_type: type[Any], topic: str,
                 qos: QoSProfile | int) -> None:
        self._matched_count = 0
        self._condition = threading.Condition()
        self.publisher: Publisher = node.create_publisher(
            msg_type, topic, qos,
            event_callbacks=PublisherEventCallbacks(matched=self._on_matched))

    def _on_matched(self, info: Any) -> None:
        with self._condition:
            self._matched_count = info.current_count
            self._condition.notify_all()

    def wait_for_subscribers(self, count: int = 1, timeout: float = DISCOVERY_TIMEOUT_S) -> None:
        with self._condition:
            ok = self._condition.wait_for(lambda: self._matched_count >= count, timeout)
        if not ok:
            raise AssertionError(f'{count} subscriber(s) did not match within {timeout} s')

    def publish(self, msg: Any) -> None:
        self.publisher.publish(msg)
