"""What every console script shares: one-line errors and conventional exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import sys

from endo_depth_ros.errors import ConfigError, EndoDepthError

#: Exit code for a failure the user can fix (bad argument, bad file); argparse uses it too.
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as a shell reports for SIGINT.
EXIT_INTERRUPTED = 130
#: Largest image side a command accepts (8K); larger sizes are refused before allocating.
MAX_IMAGE_SIDE = 8192


def check_image_size(width: int, height: int, *, limit: int = MAX_IMAGE_SIDE) -> None:
    """Refuse an image size that is not positive or exceeds ``limit`` on a side.

    Raises:
        ConfigError: naming the size and the limit.
    """
    if not (0 < width <= limit and 0 < height <= limit):
        raise ConfigError(f'Image size {width}x{height} is outside 1..{limit} pixels per '
                          'side.')


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
        file, unavailable backend), of the operating system or for lack of memory, 130 on
        Ctrl-C.
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
    except MemoryError as err:
        # numpy says how much it tried to allocate and for which shape: that is the size
        # the user has to change.
        detail = str(err).splitlines()[0][:200] if str(err) else 'allocation failed'
        print(f'{prog}: error: out of memory: {detail}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if code is None else code
