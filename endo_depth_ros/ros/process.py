"""Run a ROS node (any Python module) in its own process and stop it as Ctrl-C would.

Used by the live evaluator (``ros/replay.py``) to start the depth node, and by the tests'
harness. Output goes to temporary files, so a chatty child can never block on a full pipe.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
from typing import Self

from endo_depth_ros.errors import EndoDepthError

#: The folder holding the ``endo_depth_ros`` package: the child imports this very copy,
#: also when the package is not installed.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def _default_sigint() -> None:
    # A child started from a backgrounded shell inherits SIGINT ignored; restore the
    # default so that our SIGINT reaches rclpy's handler as Ctrl-C would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NodeProcess:
    """A Python module (usually a ROS node) running in its own process.

    Args:
        args: arguments after ``python``, e.g. ``['-m', 'endo_depth_ros.ros.node',
            '--ros-args', '-p', 'model.name:=photometric']``.
        env: extra environment variables (the rest is inherited, so are ROS settings).
        cwd: working directory of the child (default: this process's).
        name: what error messages call the process.

    Attributes:
        process: the ``subprocess.Popen``.
        killed: True once ``stop`` had to kill the process after its timeout.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, *,
                 cwd: str | Path | None = None, name: str = 'The process') -> None:
        self.name = name
        self.killed = False
        self._log_dir = tempfile.TemporaryDirectory(prefix='endo_depth_proc_')
        self._stdout_path = Path(self._log_dir.name) / 'stdout.txt'
        self._stderr_path = Path(self._log_dir.name) / 'stderr.txt'
        full_env = dict(os.environ)
        full_env.update(env or {})
        # Unbuffered output so that logs are complete even if the process is killed.
        full_env['PYTHONUNBUFFERED'] = '1'
        full_env['PYTHONPATH'] = os.pathsep.join(
            [str(PACKAGE_PARENT), *filter(None, [full_env.get('PYTHONPATH')])])
        with open(self._stdout_path, 'wb') as out, open(self._stderr_path, 'wb') as err:
            self.process = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, preexec_fn=_default_sigint)

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self._stdout_path.read_text(errors='replace')

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far (ROS logs go there)."""
        return self._stderr_path.read_text(errors='replace')

    def last_log_line(self) -> str:
        """The last non-empty line of stderr (else stdout), or ``'(no output)'``."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return '(no output)'

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise if the process exited.

        Raises:
            EndoDepthError: with the exit code and the last log line.
        """
        code = self.process.poll()
        if code is not None:
            raise EndoDepthError(f'{self.name} exited with code {code}: {self.last_log_line()}')

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the process to exit by itself; returns its exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout``.
        """
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGINT (as Ctrl-C), wait up to ``timeout`` s, then kill.

        Returns:
            The exit code (negative signal number when killed; ``killed`` is then True).
        """
        return self._stop(timeout)

    def _stop(self, timeout: float) -> int:
        if self.running():
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            return self.process.wait()

    def close(self, timeout: float = 15.0) -> None:
        """Stop the process if it still runs (SIGINT, then kill) and delete its logs."""
        self._stop(timeout)
        self._log_dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
