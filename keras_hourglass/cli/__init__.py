"""The command-line programs: `keras-hourglass COMMAND ...`, and the top-level scripts, which call the same `main` functions.

Each command is a module here with `main(argv=None, prog=...)`: it parses
its flags, runs, and turns a `ValueError` (bad input, named by the code that
found it) into one line `PROG: error: ...` on standard error and exit code 2,
and a stopped multi-worker run (`TrainingStopped`: a worker died) into one
such line and exit code 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import sys
import time
from typing import Callable

from keras_hourglass.distributed import TrainingStopped

COMMANDS = {
    "train": ("keras_hourglass.cli.train", "train a model (default: the synthetic demo)"),
    "evaluate": ("keras_hourglass.cli.evaluate", "score a model or a predictions file with the standard table"),
    "predict": ("keras_hourglass.cli.predict", "keypoints and overlays for images, a folder or a video"),
    "convert": ("keras_hourglass.cli.convert", "TFLite files with metadata and a parity table"),
    "import-weights": ("keras_hourglass.cli.import_weights", "a published PyTorch checkpoint as a Keras model"),
    "serve": ("keras_hourglass.cli.serve", "an inference server (KServe: V1/V2 protocols) with a web page"),
}


def run_command(prog: str, function: Callable, args) -> int:
    """Runs `function(args)`; a `ValueError` becomes one line on standard error and exit code 2 (1 for `TrainingStopped`).

    The commands import TensorFlow only here, after their arguments parsed, with its
    start-up log lines off unless `TF_CPP_MIN_LOG_LEVEL` says otherwise.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        function(args)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def quiet_tensorflow() -> None:
    """Imports TensorFlow and Keras with their start-up lines silenced (a no-op once they are imported).

    TensorFlow 2.21 prints `I0000`/`E0000` lines before its logging starts, whatever
    `TF_CPP_MIN_LOG_LEVEL` says; a command's output, and its one error line, should not
    drown in them. `TF_CPP_MIN_LOG_LEVEL=0` keeps them.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    from keras_hourglass.fileio import quiet_stderr

    with quiet_stderr():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # looks for GPUs now, and says nothing when it finds none


@contextlib.contextmanager
def step(what: str):
    """Prints `what ...` before a slow step and its time after it, so that a long step never looks hung.

        with step("  saved_model/ (serving signatures)"):
            ...
    prints `  saved_model/ (serving signatures) ... 12.3 s`.
    """
    print(f"{what} ...", end="", flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" {time.perf_counter() - start:.1f} s", flush=True)


def release_freed_memory() -> None:
    """Collects garbage and hands the C heap's free pages back to the system (glibc's `malloc_trim`).

    TensorFlow's TFLite conversion of a full-size 8-stack model leaves about
    1.3 GB of freed heap in the process; returned, the SavedModel export
    after it fits in that space, and the import's peak stays that of the
    conversion (3.3 GB instead of 3.8 GB, 2 cores of an AVX-512 Xeon).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by the process, only not returned
        pass


def detection_threshold(value: float | None, multi_person: bool) -> float:
    """`--detection-threshold` as the commands take it: for a multi-person SavedModel only, in [0, 1) (its
    heatmaps are capped at 1), and the codec's default (the reference's 0.1) when not given."""
    from keras_hourglass.codec import DETECTION_THRESHOLD

    if value is None:
        return DETECTION_THRESHOLD
    if not multi_person:
        raise ValueError("--detection-threshold is for multi-person SavedModels (an import's DIR/saved_model); this "
                         "model predicts one person per crop.")
    if not 0 <= value < 1:
        raise ValueError(f"--detection-threshold must be in [0, 1) (heatmaps are capped at 1), got {value}.")
    return value


def normalizer_joint_names(text: str | None) -> tuple | None:
    """`--normalizer-joints a,b` as a tuple of names (the loader checks that there are two)."""
    return None if text is None else tuple(name.strip() for name in text.split(",") if name.strip())


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: keras-hourglass [--version] COMMAND [--help | ARGS ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """`keras-hourglass COMMAND ARGS`: dispatches to the command's `main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        from keras_hourglass import __version__

        print(f"keras-hourglass {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"keras-hourglass: error: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest, prog=f"keras-hourglass {command}")
