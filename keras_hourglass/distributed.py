"""Training on several workers: who is who, the chief's work that the others wait for, failures, and `fit`.

`--strategy multiworker` is `tf.distribute.MultiWorkerMirroredStrategy`:
synchronous data parallelism over processes or machines, with gradients
summed by TensorFlow's collective all-reduce over gRPC. Every worker runs
the same `train.py` command with its own `TF_CONFIG`:

    {"cluster": {"worker": ["host-a:2222", "host-b:2222"]},
     "task": {"type": "worker", "index": 0}}

Worker 0 (or the task of type `chief`, if the cluster names one) is the
chief. It alone prepares the data (synthetic generation, the image check)
and writes the run folder; the others wait for it through TensorFlow's
coordination service (its key-value store, the same service that starts
the collectives), and write only to their own temporary folders, deleted
when they finish. `--output` and `--data-dir` must therefore be on storage
that every worker sees (a shared volume, as TensorFlow's multi-worker guide
asks for checkpoints): the others read the data the chief prepared and, on
a restart, the resume state it wrote.

A worker that dies is noticed by the others' heartbeats to the coordination
service; they stop with `TrainingStopped`, which names the strategy, the
worker and the cause, never a tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from typing import Callable

# How long the chief waits for the others to read a failure it publishes before it exits with it.
FAILURE_READ_TIMEOUT_MS = 30_000


class TrainingStopped(RuntimeError):
    """Training under a strategy stopped for a reason that is not bad input (a worker died, the network failed)."""


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster: `index` 0 is the chief."""

    strategy: str
    index: int = 0
    count: int = 1
    chief: bool = True
    chiefs: int = 0  # tasks of type "chief" in TF_CONFIG (0 or 1): task i of type "worker" is worker chiefs + i

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.strategy} worker {self.index} of {self.count}" if self.distributed else self.strategy


def describe_worker(strategy) -> Worker:
    """The `Worker` that this process is under `strategy` (one worker for a single-machine strategy)."""
    name = type(strategy).__name__
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return Worker(name)
    chiefs, workers = len(cluster.get("chief", ())), len(cluster.get("worker", ()))
    index = resolver.task_id if resolver.task_type != "worker" else resolver.task_id + chiefs
    return Worker(name, index, chiefs + workers, bool(strategy.extended.should_checkpoint), chiefs)


def check_tf_config(text: str | None) -> dict:
    """`TF_CONFIG` as a dict, or a `ValueError` that says what is wrong with it."""
    import json

    if not text:
        raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable: "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}.')
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}).") from None
    cluster, task = (tf_config.get("cluster"), tf_config.get("task")) if isinstance(tf_config, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()):
        raise ValueError('TF_CONFIG "cluster" must map each task type to a list of "host:port" strings, '
                         f"got {cluster!r}.")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ValueError(f'TF_CONFIG "task" must name a type of the cluster ({", ".join(cluster)}) and an index '
                         f"in it, got {task!r}.")
    return tf_config


def _context():
    from tensorflow.python.eager import context  # the coordination service's client: not in TF's public API

    return context.context()


def chief_first(worker: Worker, what: str, on_chief: Callable, on_others: Callable):
    """Runs `on_chief()` on the chief; the others wait for it to finish, then run `on_others()`.

    If `on_chief` raises, the chief publishes the error through the
    coordination service before raising it, and the others raise
    `ValueError("the chief could not <what>: <its message>")` instead of
    waiting for ever. `what` names the step and its key in the service.
    """
    if not worker.distributed:
        return on_chief()
    key = f"keras_hourglass/{what.replace(' ', '_')}"
    if worker.chief:
        try:
            result = on_chief()
        except Exception as error:
            _context().set_config_key_value(key, f"failed: {error}")
            with contextlib.suppress(Exception):  # let the others read it before this process and its service end
                _context().wait_at_barrier(f"{key}/read", FAILURE_READ_TIMEOUT_MS)
            raise
        _context().set_config_key_value(key, "done")
        return result
    status = _context().get_config_key_value(key)
    if status.startswith("failed: "):
        with contextlib.suppress(Exception):
            _context().wait_at_barrier(f"{key}/read", FAILURE_READ_TIMEOUT_MS)
        raise ValueError(f"{worker}: the chief could not {what}: {status.removeprefix('failed: ')}")
    return on_others()


def check_same_command(worker: Worker, settings: dict, ignore=()) -> None:
    """Refuses, on every worker, a cluster whose workers were started with different settings.

    The chief publishes its settings (`Config.to_json()`); each other worker
    compares its own with them and publishes the names that differ. Every
    worker with a difference, and the chief, then raise a `ValueError` that
    names the worker and the settings, instead of the chief reporting a
    worker that stopped responding.
    """
    if not worker.distributed:
        return
    import json

    from keras_hourglass.config import changed_settings

    context = _context()
    if not worker.chief:
        changed = changed_settings(json.loads(context.get_config_key_value("keras_hourglass/chief_settings")), settings,
                                   ignore)
        context.set_config_key_value(f"keras_hourglass/worker_settings/{worker.index}", ",".join(changed) or "-")
        if changed:
            raise ValueError(f"{worker}: this command differs from the chief's in {', '.join(changed)}; "
                             "start every worker with the same command.")
        return
    context.set_config_key_value("keras_hourglass/chief_settings", json.dumps(settings))
    differing = {index: context.get_config_key_value(f"keras_hourglass/worker_settings/{index}")
                 for index in range(1, worker.count)}
    differing = {index: names for index, names in differing.items() if names != "-"}
    if differing:
        raise ValueError(f"{worker}: " + "; ".join(f"worker {index} was started with other {names.replace(',', ', ')}"
                                                   for index, names in differing.items())
                         + "; start every worker with the same command.")


_TASK = re.compile(r"/job:(chief|worker)(?:/replica:\d+)?/task:(\d+)")
_UNREACHABLE = ("stopped sending heartbeats", "Connection reset by peer", "Connection refused", "Socket closed",
                "failed to connect", "unhealthy")


def failure_cause(error: Exception, worker: Worker) -> str:
    """One line on why a distributed step failed, without the tensors, graphs and stacks TensorFlow puts in."""
    message = getattr(error, "message", None) or str(error)
    reason = next((text for text in _UNREACHABLE if text.lower() in message.lower()), None)
    if reason:
        tasks = {int(task) + (worker.chiefs if job == "worker" else 0) for job, task in _TASK.findall(message)}
        others = sorted(tasks - {worker.index})
        who = " and ".join(f"worker {task}" for task in others) or "another worker"
        return (f"{who} stopped responding ({reason.lower()}: it crashed, was killed or lost the network), and a "
                f"synchronous strategy cannot go on without all {worker.count} workers; start every worker again "
                "to resume from the last completed epoch")
    lines = [line.strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("File ", "Detected at node", "Graph execution"))
             and not line.startswith(("[[", "{{"))]
    line = re.sub(r"\{\{[^}]*\}\}", "", lines[0] if lines else type(error).__name__).strip()
    return line if len(line) <= 300 else line[:297] + "..."


@contextlib.contextmanager
def failures_named(worker: Worker):
    """Turns a TensorFlow runtime error under a multi-worker strategy into one `TrainingStopped` line.

    So is a `ValueError` or `TypeError` of several lines (TensorFlow and
    Keras put whole tensors in theirs); keras_hourglass's own, one line each,
    pass unchanged.
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        if not worker.distributed:
            raise
        raise TrainingStopped(f"{worker}: training stopped: {failure_cause(error, worker)}") from None
    except (ValueError, TypeError) as error:  # ours are one line; TensorFlow's and Keras's may print tensors
        if not worker.distributed or "\n" not in str(error):
            raise
        raise TrainingStopped(f"{worker}: training stopped: {failure_cause(error, worker)}") from None


def distribute_fit(model, strategy, element_spec) -> None:
    """Makes `model.fit` correct under a strategy with several replicas, and able to run under `multiworker`.

    Keras 3.15's `fit` under `MultiWorkerMirroredStrategy` needs two fixes
    (keras-team/keras#20585), both in `keras/src/backend/tensorflow/trainer.py`:

    1. Before its first step, `fit` (`_maybe_symbolic_build`) builds the loss
       and optimizer from one batch, which it takes from the distributed
       dataset and averages with `strategy.reduce("MEAN", (x, y, w))`.
       `MirroredStrategy` reduces such a nest element by element;
       `MultiWorkerMirroredStrategy` reduces only a single value and fails
       with "Attempt to convert a value (PerReplica:{...}) with an
       unsupported type", printing the batch. The build needs only shapes
       and dtypes, so this model takes them from one replica's
       `element_spec`: no batch is read and no collective runs for it.
    2. After each step, `reduce_per_replica` averages the step's logs over
       the workers with `strategy.reduce("MEAN", value, axis=0)`, which
       fails on the scalar logs that `train_step` returns ("Invalid
       reduction dimension 0 for input with 0 dimensions"). This model's
       `train_step` (the public hook) returns each log as a one-element
       vector, so the average over axis 0 is the mean over all replicas.

    And one fix for every strategy with several replicas: Keras 3 creates
    batch normalisation's moving mean and variance without an aggregation,
    so each replica updates its own copy from its own part of the batch and
    the copies drift apart (measured: 120 of the tiny model's 368 weights
    differed between two workers after one epoch, the trainable ones did
    not). After each step this `train_step` replaces every non-trainable
    weight by its mean over the replicas, one batched all-reduce: the
    moving mean then equals an update with the mean of the replicas' batch
    means, and every replica holds the same weights after every step.

    Everything else (the distributed step, the gradient all-reduce, loss
    scaling by the number of replicas, the callbacks) is Keras's own.
    `tests/test_multiworker.py` fails if a Keras release changes these places.
    """
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    build, step = model._maybe_symbolic_build, model.train_step

    def train_step(data):
        logs = step(data)
        statistics = model.non_trainable_variables
        if statistics:
            averaged = tf.distribute.get_replica_context().all_reduce("MEAN", [tf.identity(v.value) for v in statistics])
            for variable, value in zip(statistics, averaged):
                variable.assign(value)
        return {name: tf.reshape(value, [1]) for name, value in logs.items()} if multiworker else logs

    def symbolic_build(iterator=None, data_batch=None):
        return build(data_batch=element_spec if data_batch is None else data_batch)

    model.train_step = train_step
    if multiworker:
        model._maybe_symbolic_build = symbolic_build


def weights_digest(model) -> str:
    """A short SHA-256 of every weight's bytes (optimizer state included): equal on workers in step."""
    digest = hashlib.sha256()
    for weight in model.weights + (model.optimizer.variables if model.optimizer is not None else []):
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


def loopback_cluster(count: int) -> list[str]:
    """`TF_CONFIG` values for `count` workers on free ports of 127.0.0.1 (worker 0 first): a cluster on one machine."""
    import json
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
            for index in range(count)]
