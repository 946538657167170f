"""Where a command may write: one policy for every console script.

A user's files are never lost to a command of this package:

- an existing file or folder is replaced only with ``overwrite`` (``--overwrite``), and
  only when it is the kind of thing the command writes (a recording is replaced only by
  a recording, a file only by a file);
- nothing is written through a symbolic link;
- nothing is written onto an input, inside an input folder, or into a folder that holds
  an input;
- a command writes only below the output it was given.

"Is this a recording" means a rosbag2 folder with a valid ``metadata.yaml`` and only the
storage files it lists (or this package's own npz frame folder), nothing less: a folder
that merely holds YAML files is not one.

Every check raises :class:`~endo_depth_ros.errors.OutputError` with a one-line message.
Commands call the ``check_*`` functions before long work, so that a bad output fails in
the first second, and the ``prepare_*`` functions (which check again) right before writing.
"""

from __future__ import annotations

from collections.abc import Iterable
import os
from pathlib import Path
import re
import shutil

import yaml

from endo_depth_ros.errors import OutputError

#: Sidecar files sqlite3 may leave next to a ``.db3`` storage file.
_SQLITE_SIDECARS = ('-shm', '-wal', '-journal')
#: Frame files of this package's npz sequence format (``bags.write_npz``).
_NPZ_FRAME = re.compile(r'frame_\d{6}\.npz')


def is_recording(path: str | Path) -> bool:
    """True when ``path`` is a rosbag2 folder or an npz frame folder and nothing else.

    A rosbag2 folder has a ``metadata.yaml`` that parses as rosbag2 metadata, every storage
    file it lists exists, and it holds no other entry (sqlite3 sidecars excepted). An npz
    folder holds only ``frame_NNNNNN.npz`` files (at least one).
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    entries = {entry.name: entry for entry in path.iterdir()}
    if 'metadata.yaml' not in entries:
        return bool(entries) and all(
            _NPZ_FRAME.fullmatch(name) and entry.is_file() and not entry.is_symlink()
            for name, entry in entries.items())
    listed = _listed_storage_files(path / 'metadata.yaml')
    if not listed:
        return False
    allowed = {'metadata.yaml', *listed,
               *(name + suffix for name in listed for suffix in _SQLITE_SIDECARS)}
    return (all(name in entries and entries[name].is_file() for name in listed)
            and all(name in allowed and not entry.is_symlink() and entry.is_file()
                    for name, entry in entries.items()))


def _listed_storage_files(metadata: Path) -> list[str]:
    """Storage file names listed by a rosbag2 ``metadata.yaml`` ([] if it is not one)."""
    if metadata.is_symlink() or not metadata.is_file() or metadata.stat().st_size > 1 << 22:
        return []
    try:
        doc = yaml.safe_load(metadata.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    info = doc.get('rosbag2_bagfile_information') if isinstance(doc, dict) else None
    if not isinstance(info, dict) or 'storage_identifier' not in info:
        return []
    files = info.get('relative_file_paths')
    if not isinstance(files, list) or not files:
        return []
    # Storage files sit in the bag folder itself; anything else is not a bag we wrote.
    if not all(isinstance(f, str) and f and '/' not in f and f not in ('.', '..')
               for f in files):
        return []
    return files


def check_not_input(path: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is an input, lies inside one, or contains one.

    Raises:
        OutputError: naming the output and the input it would touch.
    """
    out = Path(path).resolve()
    for given in inputs:
        inp = Path(given).resolve()
        if out == inp:
            raise OutputError(f'Output {str(path)!r} is the input {str(given)!r}; choose '
                              'another output.')
        if inp in out.parents:
            raise OutputError(f'Output {str(path)!r} is inside the input {str(given)!r}; '
                              'choose an output outside it.')
        if out in inp.parents:
            raise OutputError(f'Output {str(path)!r} contains the input {str(given)!r}; '
                              'choose another output.')


def check_recording_output(path: str | Path, *, overwrite: bool,
                           inputs: Iterable[str | Path] = ()) -> None:
    """Check that a recording may be written at ``path`` (nothing is changed).

    Raises:
        OutputError: ``path`` is a symlink, an input, exists without ``overwrite``, or
            exists and is not a recording.
    """
    path = Path(path)
    check_not_input(path, inputs)
    _check_parent(path)
    if path.is_symlink():
        raise OutputError(f'Output {str(path)!r} is a symbolic link; refusing to write '
                          'through it.')
    if not path.exists():
        return
    if not overwrite:
        raise OutputError(f'Output {str(path)!r} already exists; pass --overwrite to '
                          'replace it.')
    if not is_recording(path):
        kind = 'a file' if not path.is_dir() else 'a folder that is not a recording'
        raise OutputError(f'Refusing to overwrite {str(path)!r}: it is {kind} (only a '
                          'rosbag2 or npz recording is replaced).')


def prepare_recording_output(path: str | Path, *, overwrite: bool,
                             inputs: Iterable[str | Path] = ()) -> Path:
    """Check like :func:`check_recording_output`, then remove the old recording.

    Returns:
        ``path``, which does not exist afterwards; its parent folder does.
    """
    path = Path(path)
    check_recording_output(path, overwrite=overwrite, inputs=inputs)
    if path.exists():
        shutil.rmtree(path)  # a real folder (not a link) holding only recording files
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_file_output(path: str | Path, *, overwrite: bool,
                      inputs: Iterable[str | Path] = ()) -> None:
    """Check that a single file may be written at ``path`` (nothing is changed).

    Raises:
        OutputError: ``path`` is a symlink, an input, a folder, or exists without
            ``overwrite``.
    """
    path = Path(path)
    check_not_input(path, inputs)
    _check_parent(path)
    if path.is_symlink():
        raise OutputError(f'Output {str(path)!r} is a symbolic link; refusing to write '
                          'through it.')
    if path.is_dir():
        raise OutputError(f'Output {str(path)!r} is a folder; give a file name.')
    if path.exists() and not overwrite:
        raise OutputError(f'Output {str(path)!r} already exists; pass --overwrite to '
                          'replace it.')


def prepare_file_output(path: str | Path, *, overwrite: bool,
                        inputs: Iterable[str | Path] = ()) -> Path:
    """Check like :func:`check_file_output` and create the parent folder.

    Returns:
        ``path``, ready to be written (an existing regular file is replaced only because
        ``overwrite`` was given).
    """
    path = Path(path)
    check_file_output(path, overwrite=overwrite, inputs=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class OutputFolder:
    """A folder a command writes several files into (a report, a demo's outputs).

    The folder may be new or empty; a folder that already holds files needs
    ``overwrite``, and even then only the files the command writes are replaced: nothing
    else in it is deleted, and no file is written through a symlink or outside it.
    """

    def __init__(self, path: str | Path, *, overwrite: bool,
                 inputs: Iterable[str | Path] = ()) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.inputs = tuple(inputs)
        self._created = False
        self.check()

    def check(self) -> None:
        """Raise ``OutputError`` if the folder cannot be used (nothing is changed)."""
        path = self.path
        check_not_input(path, self.inputs)
        _check_parent(path)
        if path.is_symlink():
            raise OutputError(f'Output folder {str(path)!r} is a symbolic link; refusing to '
                              'write through it.')
        if path.exists() and not path.is_dir():
            raise OutputError(f'Output folder {str(path)!r} is a file.')
        if path.is_dir() and not self.overwrite and any(path.iterdir()):
            raise OutputError(f'Output folder {str(path)!r} is not empty; pass --overwrite to '
                              'replace the files this command writes there.')

    def create(self) -> Path:
        """Check again and create the folder (once); returns its path."""
        if not self._created:
            self.check()
            self.path.mkdir(parents=True, exist_ok=True)
            self._created = True
        return self.path

    def file(self, name: str) -> Path:
        """The path of file ``name`` in the folder, checked for writing.

        Raises:
            OutputError: ``name`` leaves the folder, or the file is a symlink or a folder.
        """
        if not name or Path(name).is_absolute() or '..' in Path(name).parts:
            raise OutputError(f'{name!r} is not a file name inside {str(self.path)!r}.')
        target = self.create() / name
        if target.is_symlink():
            raise OutputError(f'{str(target)!r} is a symbolic link; refusing to write '
                              'through it.')
        if target.is_dir():
            raise OutputError(f'{str(target)!r} is a folder; refusing to replace it.')
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def _check_parent(path: Path) -> None:
    """Refuse a path whose nearest existing ancestor is not a folder."""
    blocker = next((p for p in path.parents if os.path.lexists(p)), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f'Cannot create {str(path)!r}: {str(blocker)!r} is not a folder.')
