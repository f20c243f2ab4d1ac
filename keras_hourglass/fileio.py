"""Writing files and folders whole: a reader, or a run resumed after `kill -9`, never sees half of one.

Every file the project writes goes through `atomic_path` (a temporary name
beside the target, renamed over it once complete); every folder through
`replace_directory`. A temporary left by a kill is named `<name>.partial`
(`<stem>.partial<ext>` for files whose writer needs the extension), and the
next write of the same target overwrites it, so a failed run never blocks
the corrected one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

PARTIAL = ".partial"


@contextlib.contextmanager
def atomic_path(path: str, keep_extension: bool = False):
    """Yields a temporary path to write; on success renames it to `path`, on an error removes it.

    Args:
        path: the file to produce; its folder is created.
        keep_extension: name the temporary `<stem>.partial<ext>` instead of
            `<path>.partial`, for writers that choose the format by extension
            (matplotlib).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, extension = os.path.splitext(path)
    temporary = f"{root}{PARTIAL}{extension}" if keep_extension else path + PARTIAL
    try:
        yield temporary
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    os.replace(temporary, path)


def write_json(path: str, data, indent: int | None = 2) -> str:
    """Writes `data` as JSON to `path` atomically; returns `path`."""
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(data, f, indent=indent)
    return path


def write_bytes(path: str, data: bytes) -> str:
    """Writes `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        f.write(data)
    return path


def replace_directory(temporary: str, final: str) -> None:
    """Moves a finished directory into place, replacing any old one.

    The old directory is renamed aside first, so at every moment either the
    old or the new one is complete; `complete_directory` finds it.
    """
    previous = final + ".old"
    if os.path.exists(previous):
        shutil.rmtree(previous)
    if os.path.exists(final):
        os.replace(final, previous)
    os.replace(temporary, final)
    shutil.rmtree(previous, ignore_errors=True)


def complete_directory(path: str) -> str | None:
    """`path`, or the copy `replace_directory` set aside if a crash came between its two renames."""
    for candidate in (path, path + ".old"):
        if os.path.isdir(candidate):
            return candidate
    return None


def partial_directory(final: str) -> str:
    """An empty temporary folder `<final>.partial` to fill and then pass to `replace_directory`."""
    temporary = final + PARTIAL
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    return temporary


class FolderLock:
    """An exclusive lock on a folder while a run writes into it (`with FolderLock(path): ...`).

    The lock is an `flock` on `<path>/.lock`, which holds the owner's process
    id for the message. The kernel drops it when the process ends however it
    ends, so a lock left by a crash or `kill -9` is taken over at once; a
    second live run into the same folder is refused with a `ValueError`.
    """

    FILE = ".lock"

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._file = None
        self._created = False

    def __enter__(self) -> "FolderLock":
        import fcntl

        self._created = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        lock_path = os.path.join(self.path, self.FILE)
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(f"{self.path} is in use by a running process (pid {owner}, {lock_path}); wait for it "
                             "to finish or choose another --output.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
            # A run that failed before writing anything leaves no folder behind.
            if self._created and os.listdir(self.path) == [self.FILE]:
                shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def quiet_stderr():
    """Sends what C libraries print to standard error (file descriptor 2) to /dev/null for the block.

    For the messages that TensorFlow prints while it starts and that libjpeg prints for a damaged
    file, which the caller reports itself, in one line. Python exceptions still propagate.
    """
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def stderr_without(*harmless: str):
    """Keeps what C libraries print to standard error in the block, except the lines that contain `harmless`.

    For TensorFlow's known, harmless messages (e.g. the TFLite converter's `NodeDef mentions attribute
    Truncate`): every other line still reaches standard error, after the block.
    """
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(text in line for text in harmless)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()

