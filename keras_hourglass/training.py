"""A training run: data, model, callbacks, `model.fit` with resume, then evaluation and export.

`run_training(config)` is what the `train` command does with a resolved
`keras_hourglass.config.Config`: with the embedded default preset it
generates the synthetic data set under `data/synthetic/` if it is not there,
trains the small CPU model, evaluates the best checkpoint, exports it as a
SavedModel and a TFLite file, and plots, all under `runs/synthetic-small/`.

Started again with the same configuration, a run continues from its last
completed epoch (`<output>/resume/`, written atomically after every epoch);
a run with a different configuration in the same folder is refused.

Run folder: `config.json`, `training_log.csv` (losses per stack and the
validation metric per epoch), `tensorboard/`, `checkpoints/best` and
`checkpoints/last` (SavedModels with serving signatures), `resume/`, and
after training `eval/` (table, predictions, plots), `model.tflite`,
`training_curves.png` and `summary.json` (`train_seconds` sums the runs that
finished; `total_seconds` is the last invocation's). A quantization-aware
run (`--qat-from`, see `keras_hourglass.quantization`) writes
`model-int8.tflite` (calibrated on the same training crops as during
fine-tuning) instead of `model.tflite`, `calibration/` (the ranges' last
conversion) and `model.keras` (the float model after its last epoch).

A multi-person data set (`--dataset coco-people` or `synthetic-people`)
trains an Associative Embedding model instead, with this module's parts:
`keras_hourglass.multiperson_training`.

Under `--strategy multiworker` every worker runs this same function; what
differs between the chief and the others is in `run_training` and
`keras_hourglass.distributed`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from keras_hourglass.config import PATH_SETTINGS, Config, changed_settings, config_from_json
from keras_hourglass.fileio import FolderLock, atomic_path, complete_directory, write_json


# Data --------------------------------------------------------------------


def load_data(config: Config, prepare: bool = True):
    """(train records, valid records); generates the synthetic data set if it is missing.

    With `prepare=False` (a multi-worker run's other workers, once the chief
    has prepared and checked the data) nothing is generated or decoded.
    """
    from keras_hourglass.data.loaders import load_records

    if config.dataset == "synthetic":
        from keras_hourglass.data.synthetic import generate

        train_path = config.train_annotations or os.path.join(config.data_dir, "train.h5")
        valid_path = config.valid_annotations or os.path.join(config.data_dir, "valid.h5")
        image_dir = config.image_dir or os.path.join(config.data_dir, "images")
        if not (os.path.isfile(train_path) and os.path.isfile(valid_path)):
            if not prepare:
                raise ValueError(f"{train_path} or {valid_path} is not here, though the chief has prepared it: "
                                 "--data-dir must be on storage that every worker sees.")
            if config.train_annotations or config.valid_annotations:
                raise ValueError(f"synthetic annotation file not found: {train_path} or {valid_path}.")
            print(f"generating the synthetic data set in {config.data_dir} "
                  f"({config.num_train} training and {config.num_valid} validation images)")
            generate(config.data_dir, config.num_train, config.num_valid, seed=config.seed)
    else:
        train_path, valid_path, image_dir = config.train_annotations, config.valid_annotations, config.image_dir
    train = load_records(config.dataset, train_path, image_dir, config.train_split, config.normalizer_joints)
    valid = load_records(config.dataset, valid_path, image_dir, config.valid_split, config.normalizer_joints)
    if train.spec.names != valid.spec.names:
        raise ValueError(f"{train.source} and {valid.source} have different joints.")
    valid.check_normalizers()
    for records in (train, valid) if prepare else ():
        print(f"checking the images of {records.source}", flush=True)
        records.check_images()
    return train, valid


# Model -------------------------------------------------------------------


def make_strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        from keras_hourglass.distributed import check_tf_config

        tf_config = check_tf_config(os.environ.get("TF_CONFIG"))
        task = tf_config["task"]
        print(f"{task['type']} {task['index']} at {tf_config['cluster'][task['type']][task['index']]}: waiting for "
              f"all {sum(len(hosts) for hosts in tf_config['cluster'].values())} tasks of TF_CONFIG to start "
              "(the workers wait for each other, without a time limit)", flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}.")


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """Warm-up, then step decay at `lr_decay_epochs`, as a function of the optimizer's step count."""
    from keras_hourglass.schedules import WarmupStepDecay

    boundaries = [e * steps_per_epoch for e in config.lr_decay_epochs]
    values = [config.learning_rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return WarmupStepDecay(values, boundaries, config.warmup_epochs * steps_per_epoch)


def build_architecture(config: Config, num_keypoints: int):
    """The untrained network of a configuration (its variant with the model flags applied)."""
    from keras_hourglass import build_variant

    overrides = {"image_size": (config.image_size, config.image_size)}
    for name, key in (("stacks", "num_stacks"), ("filters", "filters"), ("depth", "depth"),
                      ("stem_filters", "stem_filters")):
        if getattr(config, name) is not None:
            overrides[key] = getattr(config, name)
    return build_variant(config.variant, num_keypoints, **overrides)


def load_trained_model(path: str, num_keypoints: int):
    """The float model of `--qat-from`: a `.keras` file, or a training run folder's last completed epoch."""
    from keras_hourglass.callbacks import latest_resume_state
    from keras_hourglass.callbacks.checkpoint import WEIGHTS_FILE
    from keras_hourglass.pose_model import load_keras_model

    if path.endswith(".keras"):
        try:
            return load_keras_model(path)
        except ValueError as error:
            raise ValueError(f"--qat-from {error}") from None
    config_path = os.path.join(path, "config.json")
    latest = latest_resume_state(os.path.join(path, "resume")) if os.path.isdir(path) else None
    if not os.path.isfile(config_path) or not latest:
        raise ValueError(f"--qat-from {path}: expected a .keras file or a run folder with config.json and a "
                         "completed epoch under resume/.")
    with open(config_path) as f:
        source = config_from_json(json.load(f), config_path)
    if source.qat_from:
        raise ValueError(f"--qat-from {path}: a quantization-aware run already; fine-tune from its model.keras.")
    model = build_architecture(source, num_keypoints)
    try:
        model.load_weights(os.path.join(latest, WEIGHTS_FILE))
    except ValueError as error:
        raise ValueError(f"--qat-from {path}: its weights do not fit {num_keypoints} keypoints "
                         f"({str(error).splitlines()[0]}).") from None
    print(f"fine-tuning {path} from its last completed epoch, {latest}", flush=True)
    return model


def build_model(config: Config, num_keypoints: int, steps_per_epoch: int):
    """`(the model to fit, compiled; the float model it trains)`: one model, unless `--qat-from`.

    With `--qat-from`, the float model is the trained one and the model
    fitted is its quantization-aware wrapper (`keras_hourglass.quantization`),
    which shares its weights.
    """
    import keras

    from keras_hourglass import HeatmapMSE
    from keras_hourglass.quantization import quantization_aware_model

    if config.qat_from:
        float_model = load_trained_model(config.qat_from, num_keypoints)
        shape = (tuple(float_model.input_shape[1:3]), float_model.outputs[-1].shape[-1])
        if shape != ((config.image_size, config.image_size), num_keypoints):
            raise ValueError(f"--qat-from {config.qat_from}: the model takes {shape[0][0]}x{shape[0][1]} crops and "
                             f"gives {shape[1]} heatmaps; the run has --image-size {config.image_size} and "
                             f"{num_keypoints} keypoints.")
        model = quantization_aware_model(float_model)
    else:
        model = float_model = build_architecture(config, num_keypoints)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    optimizer = (keras.optimizers.Adam(schedule) if config.optimizer == "adam"
                 else keras.optimizers.RMSprop(schedule))
    model.compile(optimizer, loss=HeatmapMSE(), jit_compile=config.xla)
    return model, float_model


def training_dataset(config: Config, records, codec, num_stacks: int, strategy):
    """(the training batches, one replica's batch spec); under a multi-worker strategy, one shard per worker.

    `--batch-size` is the global batch: each step, every one of the
    strategy's replicas takes `batch_size / replicas` people. On one machine
    (`default`, `mirrored`) the strategy splits each global batch. With
    `multiworker`, each worker's input pipeline reads its own shard of the
    people (`build_dataset`'s `shard`), so no person is read twice in an
    epoch and no worker decodes images that another one trains on.
    """
    import tensorflow as tf

    from keras_hourglass.data.pipeline import NO_AUGMENTATION, Augmentation, build_dataset

    replicas = strategy.num_replicas_in_sync
    augmentation = Augmentation() if config.augment else NO_AUGMENTATION

    def pipeline(batch_size: int, shard=(1, 0)):
        dataset = build_dataset(records, codec, batch_size, num_stacks, training=True, augmentation=augmentation,
                                seed=config.seed, check_images=False, shard=shard)  # checked by load_data
        return dataset.repeat() if config.steps_per_epoch else dataset

    replica_spec = pipeline(config.batch_size // replicas).element_spec  # builds a graph only, reads nothing
    if config.strategy != "multiworker":
        return pipeline(config.batch_size), replica_spec

    def worker_pipeline(context: tf.distribute.InputContext):
        return pipeline(context.get_per_replica_batch_size(config.batch_size),
                        (context.num_input_pipelines, context.input_pipeline_id))

    return strategy.distribute_datasets_from_function(worker_pipeline), replica_spec


# The run -----------------------------------------------------------------


def prepare_output(config: Config) -> str:
    """Creates the run folder and writes `config.json`; refuses to mix two configurations in one folder.

    The configuration of a run that has not completed an epoch (one that
    failed at the start) is replaced, so a corrected command is not refused.
    """
    from keras_hourglass.callbacks import latest_resume_state

    os.makedirs(config.output, exist_ok=True)
    path = os.path.join(config.output, "config.json")
    resolved = config.to_json()
    if os.path.isfile(path) and latest_resume_state(os.path.join(config.output, "resume")):
        with open(path) as f:
            previous = config_from_json(json.load(f), path).to_json()
        changed = changed_settings(previous, resolved)
        if changed:
            raise ValueError(f"{config.output} holds a run with another configuration (changed: {', '.join(changed)}); "
                             "resume it with the same command or choose another --output.")
    return write_json(path, resolved)


def make_callbacks(config: Config, valid, codec, output: str, float_model, calibration=None):
    """The run's callbacks, writing under `output` (the run folder, or a non-chief worker's temporary folder).

    Quantization-aware runs (`calibration` crops given) calibrate their
    ranges before training and again at the end of every epoch, before the
    metric (so `val_pckh` estimates the int8 file these weights convert
    to), and export the float model.
    """
    import keras

    from keras_hourglass.callbacks import PCKCallback, ResumeCheckpoint, SavedModelCheckpoint, Throughput
    from keras_hourglass.quantization import RecalibrateRanges

    pck = PCKCallback(valid, every=config.eval_every, flip_test=config.flip_test, threshold=config.threshold,
                      batch_size=config.batch_size, codec=codec, check_images=False)  # checked by load_data
    os.makedirs(output, exist_ok=True)
    best = SavedModelCheckpoint(os.path.join(output, "checkpoints"), codec, valid.spec.names, monitor=pck.monitor,
                                flip_test=config.flip_test, limbs=valid.spec.limbs, export_model=float_model)
    resume = ResumeCheckpoint(os.path.join(output, "resume"), stateful={"best": best})
    # The step rate first (it stops its clock at the last step), then the metric, so that everything after
    # it sees val_pckh in the logs. The resume checkpoint last: an epoch is done once everything has seen it.
    callbacks = [Throughput(config.batch_size), pck, best,
                 keras.callbacks.CSVLogger(os.path.join(output, "training_log.csv"), append=True),
                 keras.callbacks.TensorBoard(os.path.join(output, "tensorboard"), write_graph=False),
                 resume]
    if calibration is not None:
        callbacks.insert(0, RecalibrateRanges(float_model, calibration, os.path.join(output, "calibration")))
    return callbacks, best, resume


def truncate_log(path: str, epochs: int) -> None:
    """Drops rows of epochs after the resumed one (an epoch logged but killed before its checkpoint)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].strip().isdigit()
                        and int(line.split(",", 1)[0]) < epochs]
    if kept != lines:
        with atomic_path(path) as temporary, open(temporary, "w") as f:
            f.writelines(kept)


def train(config: Config, train_records, valid, strategy, worker, output: str) -> dict:
    """Trains (or resumes) a run on checked records (`load_data`); returns what `finish` needs.

    `output` is where this process's callbacks write: the run folder on the
    chief (and on a single machine), a temporary folder on the other workers
    of a multi-worker run. Every worker resumes from the chief's state in
    the run folder, so all start from the same weights.
    """
    import keras

    from keras_hourglass import HeatmapCodec, stack_outputs
    from keras_hourglass.callbacks import latest_resume_state
    from keras_hourglass.distributed import distribute_fit, weights_digest

    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    codec = HeatmapCodec((config.image_size, config.image_size), sigma=config.sigma,
                         flip_index=train_records.spec.flip_index, refine=config.refine)
    steps = config.steps_per_epoch or len(train_records) // config.batch_size
    if steps < 1:
        raise ValueError(f"{train_records.source}: {len(train_records)} people make no full batch of {config.batch_size}.")
    with strategy.scope():
        model, float_model = build_model(config, train_records.spec.num_keypoints, steps)
    calibration = None
    if config.qat_from:  # the crops convert.py calibrates on, so that training sees the final file's ranges
        from keras_hourglass.quantization import calibration_crops

        calibration = calibration_crops(train_records, (config.image_size,) * 2, config.num_calibration,
                                        config.batch_size)
    dataset, element_spec = training_dataset(config, train_records, codec, len(stack_outputs(model.outputs)),
                                             strategy)
    distribute_fit(model, strategy, element_spec)
    if worker.chief:
        prepare_output(config)  # only once the data, model and pipeline have been built without error
    callbacks, best, resume = make_callbacks(config, valid, codec, output, float_model, calibration)
    if worker.distributed:  # the weights of workers in step are equal, byte for byte
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
            f"epoch {epoch + 1}: weights {weights_digest(model)} after step {int(model.optimizer.iterations.numpy())} "
            f"on {worker}", flush=True)))
    resume.set_model(model)
    initial_epoch = 0
    latest = latest_resume_state(os.path.join(config.output, "resume"))
    if latest:
        with strategy.scope():  # the optimizer's variables are built here, for every replica
            initial_epoch = resume.restore(latest)
        if worker.chief:
            truncate_log(os.path.join(config.output, "training_log.csv"), initial_epoch)
        print(f"resuming {config.output} from {latest} (epoch {initial_epoch} of {config.epochs})")
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    else:
        print(f"{config.output} has finished all {config.epochs} epochs; evaluating and exporting only")
    if config.qat_from and worker.chief:
        from keras_hourglass.fileio import atomic_path

        with atomic_path(os.path.join(config.output, "model.keras"), keep_extension=True) as temporary:
            float_model.save(temporary)
    return {"valid": valid, "best": best, "calibration": calibration, "train_seconds": time.perf_counter() - start}


def plot_run_curves(config: Config) -> None:
    """`training_curves.png` of the run folder, from its `training_log.csv` (if an epoch was logged)."""
    from keras_hourglass.plotting import plot_training_curves, save_figure

    log = os.path.join(config.output, "training_log.csv")
    if os.path.isfile(log):
        save_figure(plot_training_curves(log, f"{config.preset}: {config.variant}"),
                    os.path.join(config.output, "training_curves.png"))


def earlier_train_seconds(output: str) -> float:
    """The training time that the run folder's `summary.json` holds: a finished run started again evaluates (and
    exports) only, and keeps the time of its earlier runs."""
    path = os.path.join(output, "summary.json")
    if not os.path.isfile(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f).get("train_seconds", 0.0))


def finish(config: Config, run: dict) -> dict:
    """After training: evaluate the best SavedModel, plot, convert to TFLite."""
    from keras_hourglass.evaluation import evaluate_model
    from keras_hourglass.pose_model import load_pose_model

    summary = {"train_seconds": round(run["train_seconds"], 1)}
    best_path = complete_directory(run["best"].best_path) or complete_directory(run["best"].last_path)
    plot_run_curves(config)
    if config.evaluate and best_path:
        valid = run["valid"]
        evaluation = evaluate_model(load_pose_model(best_path), valid, config.flip_test, config.batch_size,
                                    config.threshold, check_images=False)  # decoded once, by load_data
        evaluation.write(os.path.join(config.output, "eval"), valid, label=config.preset)
        result = evaluation.result
        print(f"\n{best_path} on {valid.source} ({len(valid)} people, flip test {'on' if config.flip_test else 'off'}):")
        print(result.format_table())
        summary.update(metric=result.metric, mean=round(result.mean, 2), groups=result.groups,
                       auc=evaluation.curve["auc"])
    if config.export_tflite and best_path:
        from keras_hourglass.tflite import convert_saved_model

        if config.qat_from:  # the point of the run: a full-integer file, on the crops it was trained for
            path = convert_saved_model(best_path, os.path.join(config.output, "model-int8.tflite"), "int8",
                                       run["calibration"])
        else:
            path = convert_saved_model(best_path, os.path.join(config.output, "model.tflite"))
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        summary["tflite"] = path
        if config.qat_from and config.evaluate:
            result = evaluate_model(load_pose_model(path), run["valid"], config.flip_test, config.batch_size,
                                    config.threshold, check_images=False).result
            print(f"{path}: {result.metric}@{result.threshold:g} {result.mean:.2f} "
                  f"(flip test {'on' if config.flip_test else 'off'})")
            summary["int8_mean"] = round(result.mean, 2)
    summary["saved_model"] = best_path
    return summary


def run_training(config: Config) -> dict:
    """Trains (or resumes) the run, then evaluates, exports and plots; returns the summary it writes.

    The run folder is locked (`FolderLock`) for the whole run: a second run
    into it is refused. Under `--strategy multiworker` (see
    `keras_hourglass.distributed`) the other workers check that their
    command matches the chief's, wait for the chief to prepare the data,
    train in step with it, write only to a temporary folder that they delete
    at the end, and return `{"worker": ...}` without evaluating or exporting.
    """
    from keras_hourglass.distributed import check_same_command, chief_first, describe_worker, failures_named
    started = time.perf_counter()
    strategy = make_strategy(config.strategy)  # first: a multi-worker runtime must start before any TensorFlow op
    worker = describe_worker(strategy)
    print(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)"
          + (f"; this is worker {worker.index} of {worker.count}" if worker.distributed else ""), flush=True)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch-size {config.batch_size} does not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas.")
    with failures_named(worker):
        check_same_command(worker, config.to_json(), ignore=PATH_SETTINGS)
        if not worker.chief:
            print("waiting for the chief to prepare and check the data", flush=True)
        # Every input checked before anything is written; generated and checked once, by the chief.
        train_records, valid = chief_first(worker, "prepare the data", lambda: load_data(config),
                                           lambda: load_data(config, prepare=False))
        if not worker.chief:
            with tempfile.TemporaryDirectory(prefix=f"keras-hourglass-worker-{worker.index}-") as scratch:
                train(config, train_records, valid, strategy, worker, scratch)
            return {"worker": str(worker), "total_seconds": round(time.perf_counter() - started, 1)}
        with FolderLock(config.output):
            path = os.path.join(config.output, "summary.json")
            earlier = earlier_train_seconds(config.output)
            summary = finish(config, train(config, train_records, valid, strategy, worker, config.output))
            summary["train_seconds"] = round(summary["train_seconds"] + earlier, 1)
            summary["total_seconds"] = round(time.perf_counter() - started, 1)
            write_json(path, summary)
    return summary
