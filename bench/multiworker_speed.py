"""Training images per second with one process and with N `--strategy multiworker` processes on this machine.

    python -m bench.multiworker_speed                 # the demo preset's model, 1 and 2 workers
    python -m bench.multiworker_speed --workers 1 2 4 --steps 20 -- --image-size 128

Each configuration runs the real `train.py` (1: `--strategy default`; N > 1:
N processes with their own `TF_CONFIG` on loopback ports) for two epochs of
`--steps` steps on the synthetic set, generated once beforehand, without
evaluation or export. The rate is the chief's images per second over the
second epoch's steps, as `train.py` prints it (`keras_hourglass.callbacks.Throughput`;
the first epoch traces the step). All workers of one machine share its cores: on a machine with few
cores the ratio measures the overhead of the collective all-reduce and of
the processes, not a speed-up; across machines each worker brings its own.
Flags after `--` go to `train.py` unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

from bench.cpu import describe_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = re.compile(r"^epoch \d+: \d+ steps of \d+ images in \S+ s: (\S+) images/s$", re.MULTILINE)


def images_per_second(log: str) -> float:
    """The last epoch's rate from `train.py`'s output (`epoch 2: 10 steps of 16 images in 3.1 s: 51.6 images/s`)."""
    found = RATE.findall(log)
    if not found:
        raise RuntimeError(f"no epoch rate in the training output:\n{log[-2000:]}")
    return float(found[-1])


def run(workers: int, args: list[str], folder: str) -> float:
    """Training images per second of one configuration (the chief's count: every worker steps together)."""
    from keras_hourglass.distributed import loopback_cluster

    output = os.path.join(folder, f"run-{workers}")
    command = [sys.executable, "train.py", *args, "--output", output]
    configs = loopback_cluster(workers) if workers > 1 else [None]
    processes = []
    for tf_config in configs:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if tf_config:
            env["TF_CONFIG"] = tf_config
        processes.append(subprocess.Popen(command + (["--strategy", "multiworker"] if tf_config else []), cwd=ROOT,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [process.communicate()[0] for process in processes]
    for process, log in zip(processes, logs):
        if process.returncode:
            raise RuntimeError(f"train.py failed with {workers} worker(s):\n{log[-3000:]}")
    return images_per_second(logs[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("train_args", nargs="*", help="more train.py flags (after --)")
    args = parser.parse_args(argv)

    from keras_hourglass.cli import quiet_tensorflow

    quiet_tensorflow()  # the start-up lines, before the table
    from keras_hourglass.data.synthetic import generate

    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, "data")
        generate(data, 4 * args.batch_size * args.steps, 16)
        common = ["--data-dir", data, "--batch-size", str(args.batch_size), "--epochs", "2", "--steps-per-epoch",
                  str(args.steps), "--no-evaluate", "--no-export-tflite", "--eval-every", "100", *args.train_args]
        print(f"CPU: {describe_cpu()}; global batch {args.batch_size}, "
              f"train.py {' '.join(args.train_args) or '(demo preset)'}")
        print(f"{'workers':>8} {'images/s':>9} {'vs first':>9}")
        base = None
        for workers in args.workers:
            rate = run(workers, common, folder)
            base = base or rate
            print(f"{workers:>8} {rate:>9.1f} {rate / base:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
