"""Trains a Stacked Hourglass Network with `model.fit`.

With no arguments it runs the embedded default: generate the synthetic data
set under `data/synthetic/` if it is not there, train the small CPU preset,
evaluate the best checkpoint, export it as a SavedModel and a TFLite file,
and plot (training curves, predictions, PCK curve), all under
`runs/synthetic-small/`.

    python train.py                                   # the default: synthetic-small
    python train.py --preset mpii-8stack --train-annotations annot/train.h5 \
        --valid-annotations annot/valid.h5 --image-dir mpii/images
    python train.py --preset flic-2stack --train-annotations FLIC/examples.mat --train-split train \
        --valid-annotations FLIC/examples.mat --valid-split test --image-dir FLIC/images
    python train.py --dataset coco --train-annotations mine/train.json --valid-annotations mine/valid.json \
        --image-dir mine/images --normalizer-joints right_shoulder,left_hip --epochs 50

A preset fills in every setting; any flag overrides it. The resolved
configuration goes to `<output>/config.json`. Started again with the same
command, a run continues from its last completed epoch (`<output>/resume/`,
written atomically after every epoch); a run with a different configuration
in the same folder is refused.

Run folder: `config.json`, `training_log.csv` (losses per stack and the
validation metric per epoch), `tensorboard/`, `checkpoints/best` and
`checkpoints/last` (SavedModels with serving signatures), `resume/`, and
after training `eval/` (table, predictions, plots), `model.tflite` and
`training_curves.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

PRESETS = {
    # The embedded default: a CPU-sized model on the procedural data set, sized
    # so that `make demo` (install included) fits in 15 minutes on 2 cores:
    # 64x64 input, 16x16 heatmaps with sigma 2 (sigma 1 learned markedly
    # slower in the same time), Adam at 2.5e-3 with a one-epoch warm-up
    # (RMSprop at 2.5e-4 or 1e-3 barely left the all-zero-heatmap phase in
    # that time). DARK's Taylor decoding: +1.4 PCKh over the reference's
    # quarter-pixel shift at these coarse heatmaps. The metric (and a SavedModel export on improvement, about
    # 9 s each here) every 3 epochs. See README for the measured time and score.
    "synthetic-small": dict(
        dataset="synthetic", variant="hourglass_small", image_size=64, sigma=2.0, refine="taylor",
        batch_size=16, optimizer="adam",
        learning_rate=2.5e-3, warmup_epochs=1, lr_decay_epochs=(14,), lr_decay_factor=0.2, epochs=18,
        eval_every=3, flip_test=True, num_train=4000, num_valid=200,
    ),
    # The paper's models: RMSprop at 2.5e-4, batch 16, 256x256 input, 64x64
    # heatmaps with sigma 1; the learning rate drops 5x twice near the end.
    "mpii-2stack": dict(dataset="mpii", variant="hourglass_2stack", epochs=100, lr_decay_epochs=(75, 90)),
    "mpii-8stack": dict(dataset="mpii", variant="hourglass_8stack", epochs=100, lr_decay_epochs=(75, 90)),
    "flic-2stack": dict(dataset="flic", variant="hourglass_2stack", epochs=100, lr_decay_epochs=(75, 90)),
    "flic-8stack": dict(dataset="flic", variant="hourglass_8stack", epochs=100, lr_decay_epochs=(75, 90)),
}
DEFAULT_PRESET = "synthetic-small"


@dataclasses.dataclass
class Config:
    """Every choice of a run (what `config.json` holds)."""

    preset: str = DEFAULT_PRESET
    dataset: str = "mpii"
    train_annotations: str | None = None
    valid_annotations: str | None = None
    image_dir: str | None = None
    train_split: str | None = None
    valid_split: str | None = None
    normalizer_joints: tuple | None = None
    data_dir: str = os.path.join("data", "synthetic")
    num_train: int = 2000
    num_valid: int = 200
    variant: str = "hourglass_2stack"
    stacks: int | None = None
    filters: int | None = None
    depth: int | None = None
    stem_filters: tuple | None = None
    image_size: int = 256
    sigma: float = 1.0
    refine: str = "quarter"
    batch_size: int = 16
    optimizer: str = "rmsprop"
    learning_rate: float = 2.5e-4
    warmup_epochs: int = 0
    lr_decay_epochs: tuple = ()
    lr_decay_factor: float = 0.2
    epochs: int = 100
    steps_per_epoch: int | None = None
    eval_every: int = 1
    flip_test: bool = True
    threshold: float | None = None
    augment: bool = True
    output: str | None = None
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    xla: bool = False
    export_tflite: bool = True
    evaluate: bool = True


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"presets: {', '.join(PRESETS)}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--preset", default=DEFAULT_PRESET, help=f"named settings (default {DEFAULT_PRESET})")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("mpii", "flic", "coco", "synthetic"))
    g.add_argument("--train-annotations", help="training annotation file (.h5, .json, .mat)")
    g.add_argument("--valid-annotations", help="validation annotation file")
    g.add_argument("--image-dir", help="folder the annotation files' image names are relative to")
    g.add_argument("--train-split", help="split of a multi-split training file (FLIC examples.mat: train)")
    g.add_argument("--valid-split", help="split of a multi-split validation file (FLIC examples.mat: test)")
    g.add_argument("--normalizer-joints", help="COCO: two joint names whose distance normalises PCK, 'a,b'")
    g.add_argument("--data-dir", help="synthetic: where the data set is (generated if missing)")
    g.add_argument("--num-train", type=int, help="synthetic: training images to generate")
    g.add_argument("--num-valid", type=int, help="synthetic: validation images to generate")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, help="rotation, scale, flip, colour")
    g = p.add_argument_group("model")
    g.add_argument("--variant", help="keras_hourglass.VARIANTS name")
    g.add_argument("--stacks", type=int)
    g.add_argument("--filters", type=int)
    g.add_argument("--depth", type=int)
    g.add_argument("--stem-filters", help="two widths, 'a,b'")
    g.add_argument("--image-size", type=int, help="square input size in pixels")
    g.add_argument("--sigma", type=float, help="target Gaussian sigma in heatmap pixels")
    g.add_argument("--refine", choices=("quarter", "taylor"),
                   help="sub-pixel decoding: the reference's quarter-pixel shift or DARK's Taylor step")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=("rmsprop", "adam"))
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--warmup-epochs", type=int, help="linear learning-rate warm-up")
    g.add_argument("--lr-decay-epochs", help="step decay: epochs at which the rate drops, 'a,b'")
    g.add_argument("--lr-decay-factor", type=float, help="factor of each drop")
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training set")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("validation and output")
    g.add_argument("--eval-every", type=int, help="compute the metric every N epochs")
    g.add_argument("--flip-test", action=argparse.BooleanOptionalAction)
    g.add_argument("--threshold", type=float, help="PCK threshold (default: the data set's standard one)")
    g.add_argument("--output", help="run folder (default runs/<preset>)")
    g.add_argument("--export-tflite", action=argparse.BooleanOptionalAction)
    g.add_argument("--evaluate", action=argparse.BooleanOptionalAction, help="evaluate and plot after training")
    g = p.add_argument_group("scale")
    g.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute: one device, mirrored over local devices, multi-worker from TF_CONFIG")
    g.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, help="mixed_float16 (GPUs)")
    g.add_argument("--xla", action=argparse.BooleanOptionalAction, help="jit_compile the training step")
    return p.parse_args(argv)


def _pair(text, name, cast=str):
    if text is None:
        return None
    parts = tuple(cast(v.strip()) for v in str(text).split(",") if v.strip())
    if len(parts) != 2:
        raise ValueError(f"--{name} must be two comma-separated values, got {text!r}.")
    return parts


def resolve_config(args: argparse.Namespace) -> Config:
    """Preset values, then the flags given."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; expected one of {', '.join(PRESETS)}.")
    values = {"preset": args.preset, **PRESETS[args.preset]}
    given = {k: v for k, v in vars(args).items() if v is not None and k != "preset"}
    if "stem_filters" in given:
        given["stem_filters"] = _pair(given["stem_filters"], "stem-filters", int)
    if "normalizer_joints" in given:
        given["normalizer_joints"] = _pair(given["normalizer_joints"], "normalizer-joints")
    if "lr_decay_epochs" in given:
        try:
            given["lr_decay_epochs"] = tuple(int(v) for v in given["lr_decay_epochs"].split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--lr-decay-epochs must be comma-separated integers, got {args.lr_decay_epochs!r}.") from None
    preset_epochs, preset_drops = values.get("epochs", Config.epochs), tuple(values.get("lr_decay_epochs", ()))
    values.update(given)
    values["lr_decay_epochs"] = tuple(values.get("lr_decay_epochs", ()))
    if "epochs" in given and "lr_decay_epochs" not in given and values["epochs"] != preset_epochs:
        # The preset's drops stay at the same fraction of training.
        scaled = sorted({round(e * values["epochs"] / preset_epochs) for e in values["lr_decay_epochs"]})
        values["lr_decay_epochs"] = tuple(e for e in scaled if 0 < e < values["epochs"])
        if values["lr_decay_epochs"] != preset_drops:
            print(f"learning-rate drops moved with --epochs {values['epochs']}: epochs {values['lr_decay_epochs']}")
    config = Config(**values)
    if config.output is None:
        config.output = os.path.join("runs", config.preset)
    for name in ("batch_size", "epochs", "eval_every", "image_size", "num_train", "num_valid"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}.")
    if config.learning_rate <= 0 or config.sigma <= 0:
        raise ValueError("--learning-rate and --sigma must be positive.")
    if any(not 0 < e < config.epochs for e in config.lr_decay_epochs) or list(config.lr_decay_epochs) != sorted(
            set(config.lr_decay_epochs)):
        raise ValueError(f"--lr-decay-epochs must be increasing epochs within 1..{config.epochs - 1}, "
                         f"got {config.lr_decay_epochs}.")
    if config.dataset != "synthetic":
        for name in ("train_annotations", "valid_annotations"):
            if getattr(config, name) is None:
                raise ValueError(f"--{name.replace('_', '-')} is required for the {config.dataset} data set.")
    return config


# Data --------------------------------------------------------------------


def load_data(config: Config):
    """(train records, valid records); generates the synthetic data set if it is missing."""
    from datasets.loaders import load_records

    if config.dataset == "synthetic":
        from datasets.synthetic import generate

        train_path = config.train_annotations or os.path.join(config.data_dir, "train.h5")
        valid_path = config.valid_annotations or os.path.join(config.data_dir, "valid.h5")
        image_dir = config.image_dir or os.path.join(config.data_dir, "images")
        if not (os.path.isfile(train_path) and os.path.isfile(valid_path)):
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
    return train, valid


# Model -------------------------------------------------------------------


def make_strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable (cluster and task).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}.")


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """Warm-up, then step decay at `lr_decay_epochs`, as a function of the optimizer's step count."""
    from keras_hourglass.schedules import WarmupStepDecay

    boundaries = [e * steps_per_epoch for e in config.lr_decay_epochs]
    values = [config.learning_rate * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return WarmupStepDecay(values, boundaries, config.warmup_epochs * steps_per_epoch)


def build_model(config: Config, num_keypoints: int, steps_per_epoch: int):
    import keras

    from keras_hourglass import HeatmapMSE, build_variant

    overrides = {"image_size": (config.image_size, config.image_size)}
    for name, key in (("stacks", "num_stacks"), ("filters", "filters"), ("depth", "depth"),
                      ("stem_filters", "stem_filters")):
        if getattr(config, name) is not None:
            overrides[key] = getattr(config, name)
    model = build_variant(config.variant, num_keypoints, **overrides)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    optimizer = (keras.optimizers.Adam(schedule) if config.optimizer == "adam"
                 else keras.optimizers.RMSprop(schedule))
    model.compile(optimizer, loss=HeatmapMSE(), jit_compile=config.xla)
    return model



# The run -----------------------------------------------------------------


def prepare_output(config: Config) -> str:
    """Creates the run folder and writes `config.json`; refuses to mix two configurations in one folder."""
    os.makedirs(config.output, exist_ok=True)
    path = os.path.join(config.output, "config.json")
    resolved = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
        changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
        if changed:
            raise ValueError(f"{config.output} holds a run with a different configuration ({', '.join(changed)} "
                             "differ); resume it with the same command or choose another --output.")
    temporary = path + ".partial"
    with open(temporary, "w") as f:
        json.dump(resolved, f, indent=2)
    os.replace(temporary, path)
    return path


def make_callbacks(config: Config, valid, codec, strategy):
    import keras

    from callbacks import PCKCallback, ResumeCheckpoint, SavedModelCheckpoint

    pck = PCKCallback(valid, every=config.eval_every, flip_test=config.flip_test, threshold=config.threshold,
                      batch_size=config.batch_size, codec=codec)
    writes = strategy.extended.should_checkpoint
    output = config.output if writes else os.path.join(config.output, "scratch", f"worker-{os.getpid()}")
    best = SavedModelCheckpoint(os.path.join(output, "checkpoints"), codec, valid.spec.names, monitor=pck.monitor,
                                flip_test=config.flip_test)
    resume = ResumeCheckpoint(os.path.join(output, "resume"), stateful={"best": best})
    # The metric first, so that everything after it sees val_pckh in the logs.
    # The resume checkpoint last: an epoch counts as done only once everything else has seen it.
    callbacks = [pck, best,
                 keras.callbacks.CSVLogger(os.path.join(output, "training_log.csv"), append=True),
                 keras.callbacks.TensorBoard(os.path.join(output, "tensorboard"), write_graph=False),
                 resume]
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
        with open(path + ".partial", "w") as f:
            f.writelines(kept)
        os.replace(path + ".partial", path)


def train(config: Config) -> dict:
    """Trains (or resumes) a run; returns a summary with the best metric and the paths written."""
    import keras

    from callbacks import latest_resume_state
    from datasets.pipeline import NO_AUGMENTATION, Augmentation, build_dataset
    from keras_hourglass import HeatmapCodec, stack_outputs

    train_records, valid = load_data(config)
    prepare_output(config)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy)
    print(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)")
    codec = HeatmapCodec((config.image_size, config.image_size), sigma=config.sigma,
                         flip_index=train_records.spec.flip_index, refine=config.refine)
    steps = config.steps_per_epoch or len(train_records) // config.batch_size
    if steps < 1:
        raise ValueError(f"{train_records.source}: {len(train_records)} people make no full batch of {config.batch_size}.")
    with strategy.scope():
        model = build_model(config, train_records.spec.num_keypoints, steps)
    dataset = build_dataset(train_records, codec, config.batch_size, len(stack_outputs(model.outputs)), training=True,
                            augmentation=Augmentation() if config.augment else NO_AUGMENTATION, seed=config.seed)
    if config.steps_per_epoch:
        dataset = dataset.repeat()
    callbacks, best, resume = make_callbacks(config, valid, codec, strategy)
    resume.set_model(model)
    initial_epoch = 0
    latest = latest_resume_state(resume.directory)
    if latest:
        initial_epoch = resume.restore(latest)
        truncate_log(os.path.join(config.output, "training_log.csv"), initial_epoch)
        print(f"resuming {config.output} from {latest} (epoch {initial_epoch} of {config.epochs})")
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    else:
        print(f"{config.output} has finished all {config.epochs} epochs; evaluating and exporting only")
    return {"valid": valid, "best": best, "train_seconds": time.perf_counter() - start}


def finish(config: Config, run: dict) -> dict:
    """After training: evaluate the best SavedModel, plot, convert to TFLite."""
    import evaluate as evaluation
    from keras_hourglass.export import complete_directory, load_pose_model
    from keras_hourglass.plotting import plot_training_curves, save_figure

    summary = {"train_seconds": round(run["train_seconds"], 1)}
    best_path = complete_directory(run["best"].best_path) or complete_directory(run["best"].last_path)
    log = os.path.join(config.output, "training_log.csv")
    if os.path.isfile(log):
        save_figure(plot_training_curves(log, f"{config.preset}: {config.variant}"),
                    os.path.join(config.output, "training_curves.png"))
    if config.evaluate and best_path:
        valid = run["valid"]
        pose_model = load_pose_model(best_path)
        keypoints, scores = evaluation.run_model(pose_model, valid, config.flip_test, config.batch_size, progress=False)
        result, curve = evaluation.score(keypoints, valid, config.threshold)
        output = os.path.join(config.output, "eval")
        evaluation.write_json(os.path.join(output, "metrics.json"), evaluation.metrics_json(result, curve))
        evaluation.write_predictions(os.path.join(output, "predictions.h5"), valid, keypoints, scores)
        evaluation.write_plots(output, valid, keypoints, scores, result, curve, label=config.preset)
        print(f"\n{best_path} on {valid.source} ({len(valid)} people, flip test {'on' if config.flip_test else 'off'}):")
        print(result.format_table())
        summary.update(metric=result.metric, mean=round(result.mean, 2), groups=result.groups, auc=curve["auc"])
    if config.export_tflite and best_path:
        from keras_hourglass.tflite import convert_saved_model

        path = convert_saved_model(best_path, os.path.join(config.output, "model.tflite"))
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        summary["tflite"] = path
    summary["saved_model"] = best_path
    return summary


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        run = train(config)
        summary = finish(config, run)
    except ValueError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(config.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"done in {summary['total_seconds']:.0f} s: {json.dumps({k: v for k, v in summary.items() if k != 'groups'})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
