"""Opening recordings with rosbags' AnyReader, its failures turned into one-line BagErrors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import sqlite3
from typing import Any

from endo_depth_ros.bags.messages import typestore
from endo_depth_ros.errors import BagError


class RecordingReader:
    """Context manager around rosbags' AnyReader turning its failures into BagError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: Any = None

    def __enter__(self) -> Any:
        from rosbags.highlevel import AnyReader

        path = self.path
        if not path.exists():
            raise BagError(f'Bag {str(path)!r} does not exist.')
        if path.is_dir() and not (path / 'metadata.yaml').exists():
            raise BagError(f'{str(path)!r} is neither a rosbag2 directory (no metadata.yaml) '
                           'nor an npz folder (no .npz files).')
        try:
            self.reader = AnyReader([path], default_typestore=typestore())
            self.reader.open()
        except READ_ERRORS as err:
            raise BagError(f'Cannot read bag {str(path)!r}: {describe_error(err)}') from None
        return self.reader

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()



def read_messages(reader: Any, connections: list[Any],
                  path: Path) -> Iterator[tuple[Any, int, Any]]:
    """The reader's messages on ``connections``; corruption becomes a BagError."""
    try:
        yield from reader.messages(connections=connections)
    except READ_ERRORS as err:
        raise BagError(f'Bag {str(path)!r} is corrupt: {describe_error(err)}') from None


def deserialize(reader: Any, raw: Any, conn: Any, path: Path) -> Any:
    """One raw message decoded; a bad one becomes a BagError naming its topic."""
    try:
        return reader.deserialize(raw, conn.msgtype)
    except READ_ERRORS as err:
        raise BagError(f'{path}: cannot decode a {conn.msgtype} message on {conn.topic}: '
                       f'{describe_error(err)}') from None


def describe_error(err: BaseException) -> str:
    """The first line of an exception (its type name if it has no text)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error
    from rosbags.serde import SerdeError

    return (AnyReaderError, Reader1Error, Reader2Error, SerdeError, sqlite3.Error, OSError,
            ValueError, KeyError, IndexError, EOFError)


READ_ERRORS = _read_errors()
