"""What every console script shares: one-line errors and conventional exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import sys

from endo_depth_ros.errors import EndoDepthError

#: Exit code for a failure the user can fix (bad argument, bad file); argparse uses it too.
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as a shell reports for SIGINT.
EXIT_INTERRUPTED = 130


def run_cli(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and call ``run``, reporting expected failures in one line.

    Args:
        prog: the command's name, used as the prefix of error lines.
        parser: the command's argument parser.
        run: the command body; returns an exit code (``None`` means 0).
        argv: arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 success, 2 for an error of the package (bad input, bad
        file, unavailable backend) or of the operating system, 130 on Ctrl-C.
    """
    args = parser.parse_args(argv)
    try:
        code = run(args)
    except EndoDepthError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f'{prog}: error: {err.strerror or err}: {err.filename or ""}'.rstrip(': '),
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if code is None else code
