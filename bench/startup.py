"""How long the commands take to start and to import, side by side in one run, so that a slowdown shows.

    python -m bench.startup                 # imports at 2 and 8 stacks, then the server from each kind of file
    python -m bench.startup --stacks 2      # quicker: the 2-stack import and its server only

For each `--stacks` count it writes a full-size reference checkpoint (the
princeton-vl layout of the published MPII models: 256 filters, depth 4,
16 joints, 256x256 input; seeded random weights, as `.safetensors`, since
nothing is downloaded here), then runs `import_weights.py` on it as a new
process and prints the wall time, the peak memory of that process (its
maximum resident set) and the time of each step the command printed.
Then `serve.py` is started on the import's `saved_model/` and on its
`model.keras`, each as a new process on a free loopback port, and the time
from launch until `/v2/health/ready` answers 200 is printed, with the
command's own step lines, and the time until it answers its first
prediction (the signatures' first calls run after ready, so a request
that comes at once waits for them). Everything runs on this machine's CPU, named
first; every figure comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench.cpu import describe_cpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
READY_TIMEOUT = 600  # seconds: a server not ready by then is reported as such


def write_checkpoint(path: str, num_stacks: int) -> int:
    """A full-size princeton-vl MPII checkpoint of `num_stacks` stacks at `path`; returns its weight bytes."""
    from keras_hourglass.cli import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import numpy as np
    from safetensors.numpy import save_file

    from keras_hourglass.model import build_stacked_hourglass
    from keras_hourglass.reference_weights import PRINCETON_VL, reference_state_dict

    keras.utils.set_random_seed(num_stacks)
    model = build_stacked_hourglass(num_stacks, 16, filters=256, image_size=(256, 256), depth=4,
                                    stem_filters=(64, 128, 128))
    state = reference_state_dict(model, PRINCETON_VL, depth=4)
    rng = np.random.default_rng(num_stacks)
    for key, value in state.items():  # BatchNorm statistics as training leaves them, not the no-op defaults
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif key.endswith("running_mean"):
            state[key] = rng.normal(0, 0.2, value.shape).astype(np.float32)
    save_file({f"model.module.{key}": value for key, value in state.items()}, path)
    return sum(value.nbytes for value in state.values())


def run_measured(command: list[str], cwd: str) -> tuple[float, float, str, int]:
    """`(wall seconds, peak resident GiB, output, exit status)` of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20, output, process.returncode


def step_lines(output: str) -> list[str]:
    """The `what ... 12.3 s` lines a command printed (`keras_hourglass.cli.step`)."""
    return [line.strip() for line in output.splitlines() if re.search(r" \.\.\. \d+\.\d s$", line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIRST_REQUEST = json.dumps({"instances": [[[[0, 0, 0], [9, 9, 9]], [[0, 0, 0], [9, 9, 9]]]]}).encode()


def server_ready_seconds(model: str) -> tuple[float | None, float | None, str]:
    """`(seconds from launching serve.py MODEL until /v2/health/ready answers 200, until its first prediction
    (a 2x2 photo, V1) is answered, what the server printed)`; `None` for what did not come."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), model, "--port", str(port)], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    ready = None
    try:
        while time.perf_counter() - start < READY_TIMEOUT and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.05)
        answered = None
        if ready is not None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/hourglass:predict", FIRST_REQUEST,
                                             {"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=READY_TIMEOUT) as answer:
                    if json.load(answer)["predictions"]:
                        answered = time.perf_counter() - start
            except OSError:  # an error status (HTTPError) or no answer: reported as "no answer"
                pass
            # the line the first calls print when they end, so that it is in the output too
            while time.perf_counter() - start < READY_TIMEOUT and process.poll() is None:
                log.seek(0)
                printed = log.read()
                if "first call of each signature" in printed or "failed its first call" in printed:
                    break
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    log.seek(0)
    return ready, answered, log.read()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", type=int, nargs="+", default=[2, 8], help="stack counts to import (default 2 8)")
    parser.add_argument("--no-serve", action="store_true", help="imports only")
    args = parser.parse_args(argv)
    if min(args.stacks) < 1:
        parser.error(f"--stacks must be positive numbers of stacks, got {args.stacks}")
    print(describe_cpu(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        for stacks in args.stacks:
            checkpoint = os.path.join(folder, f"hg{stacks}.safetensors")
            megabytes = write_checkpoint(checkpoint, stacks) / 1e6
            output = os.path.join(folder, f"hg{stacks}")
            seconds, peak, printed, status = run_measured(
                [sys.executable, str(ROOT / "import_weights.py"), checkpoint, "--output", output], folder)
            if status:
                raise SystemExit(f"import of {stacks} stacks failed ({status}):\n{printed[-3000:]}")
            rows.append((f"import {stacks} stacks ({megabytes:.0f} MB of weights)", f"{seconds:.1f} s",
                         f"{peak:.2f} GiB peak", step_lines(printed)))
            print(rows[-1][0], rows[-1][1], rows[-1][2], *rows[-1][3], sep="\n  ", flush=True)
            if args.no_serve:
                continue
            for kind in ("saved_model", "model.keras"):
                ready, answered, printed = server_ready_seconds(os.path.join(output, kind))
                rows.append((f"serve {stacks} stacks from {kind}",
                             f"{ready:.1f} s to ready" if ready else "not ready",
                             f"{answered:.1f} s to the first answer" if answered else "no answer", step_lines(printed)))
                print(rows[-1][0], rows[-1][1], rows[-1][2], *rows[-1][3], sep="\n  ", flush=True)
    print("\nsummary (" + describe_cpu() + ")")
    for what, seconds, peak, _ in rows:
        print(f"  {what:<48} {seconds:>16}  {peak}")


if __name__ == "__main__":
    main()
