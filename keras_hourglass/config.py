"""Training settings as data: one table gives each its type, default, help text and per-preset values.

`SETTINGS` is the table; `PRESETS` overrides defaults per named preset.
`add_arguments` makes the `train` command's flags from it, `resolve_config`
turns parsed flags into a `Config` (preset values, then the flags given),
and `Config.to_json` / `config_from_json` are the `config.json` round trip.

    config = resolve_config(build_parser().parse_args(["--preset", "mpii-2stack", ...]))
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable

from keras_hourglass.joints import DATASETS, PEOPLE_DATASETS

DEFAULT_PRESET = "synthetic-small"


def _pair(text: str) -> tuple:
    parts = tuple(v.strip() for v in str(text).split(",") if v.strip())
    if len(parts) != 2:
        raise ValueError(f"two comma-separated values, got {text!r}")
    return parts


def _widths(text: str) -> tuple:
    parts = _int_list(text)
    if len(parts) not in (2, 3):
        raise ValueError(f"two or three comma-separated widths, got {text!r}")
    return parts


def _int_list(text: str) -> tuple:
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"comma-separated integers, got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One training setting.

    Attributes:
        name: the `Config` field; the flag is `--name-with-dashes`.
        default: the value when neither the preset nor a flag sets it.
        help: the flag's help text.
        group: the help section.
        parse: turns the flag's text into the value (`int`, `float`, a
            comma-list parser); `bool` makes a `--x/--no-x` pair.
        choices: allowed values.
    """

    name: str
    default: Any
    help: str
    group: str
    parse: Callable = str
    choices: tuple | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS = (
    Setting("dataset", "mpii", "data set of the annotation files (coco-people, synthetic-people: whole images with "
            "several people, for a multi-person model)", "data", choices=DATASETS + PEOPLE_DATASETS),
    Setting("train_annotations", None, "training annotation file (.h5, .json, .mat)", "data"),
    Setting("valid_annotations", None, "validation annotation file", "data"),
    Setting("image_dir", None, "folder the annotation files' image names are relative to", "data"),
    Setting("train_split", None, "split of a multi-split training file (FLIC examples.mat: train)", "data"),
    Setting("valid_split", None, "split of a multi-split validation file (FLIC examples.mat: test)", "data"),
    Setting("normalizer_joints", None, "COCO: two joint names whose distance normalises PCK, 'a,b' "
            "(default: the person box size)", "data", _pair),
    Setting("data_dir", os.path.join("data", "synthetic"), "synthetic: where the data set is (generated if missing)",
            "data"),
    Setting("num_train", 2000, "synthetic: training images to generate", "data", int),
    Setting("num_valid", 200, "synthetic: validation images to generate", "data", int),
    Setting("augment", True, "rotation, scale, flip and colour augmentation", "data", bool),
    Setting("variant", "hourglass_2stack", "named model (keras_hourglass.VARIANTS) that the next flags override",
            "model"),
    Setting("stacks", None, "number of hourglasses (default: the variant's)", "model", int),
    Setting("filters", None, "width of the hourglasses (default: the variant's)", "model", int),
    Setting("depth", None, "levels per hourglass (default: the variant's)", "model", int),
    Setting("stem_filters", None, "stem widths 'conv,residual[,residual2]' (default: the variant's)", "model",
            _widths),
    Setting("image_size", 256, "square input size in pixels", "model", int),
    Setting("sigma", 1.0, "target Gaussian sigma in heatmap pixels", "model", float),
    Setting("refine", "quarter", "sub-pixel decoding: the reference's quarter-pixel shift or DARK's Taylor step",
            "model", choices=("quarter", "taylor")),
    Setting("qat_from", None, "quantization-aware fine-tuning of this trained model (a .keras file, or a run folder's "
            "last epoch) for a full-integer TFLite file; the model's shape comes from it", "model"),
    Setting("num_calibration", 200, "int8: training crops that calibrate the activation ranges (convert.py's "
            "--num-calibration)", "model", int),
    Setting("batch_size", 16, "examples per training and evaluation batch", "optimisation", int),
    Setting("optimizer", "rmsprop", "optimiser (the paper: RMSprop)", "optimisation", choices=("rmsprop", "adam")),
    Setting("learning_rate", 2.5e-4, "peak learning rate", "optimisation", float),
    Setting("warmup_epochs", 0, "linear learning-rate warm-up, in epochs", "optimisation", int),
    Setting("lr_decay_epochs", (), "step decay: epochs at which the rate drops, 'a,b' (they move with --epochs "
            "when only --epochs is given)", "optimisation", _int_list),
    Setting("lr_decay_factor", 0.2, "factor of each drop", "optimisation", float),
    Setting("tag_loss_weight", 1e-3, "multi-person: weight of the push and of the pull loss beside the heatmap "
            "loss's 1 (pose-ae-train: 1e-3)", "optimisation", float),
    Setting("epochs", 100, "training epochs", "optimisation", int),
    Setting("steps_per_epoch", None, "steps per epoch (default: one pass over the training set)", "optimisation",
            int),
    Setting("seed", 0, "random seed of weights, augmentation and the synthetic set", "optimisation", int),
    Setting("eval_every", 1, "compute the validation metric every N epochs (and after the last)",
            "validation and output", int),
    Setting("flip_test", True, "average with the mirrored image's heatmaps in evaluation and export",
            "validation and output", bool),
    Setting("threshold", None, "PCK threshold (default: the data set's standard one)", "validation and output",
            float),
    Setting("output", None, "run folder (default runs/<preset>)", "validation and output"),
    Setting("export_tflite", True, "convert the best model to model.tflite after training", "validation and output",
            bool),
    Setting("evaluate", True, "evaluate and plot the best model after training", "validation and output", bool),
    Setting("strategy", "default", "tf.distribute: one device, mirrored over local devices, or multi-worker from "
            "TF_CONFIG", "scale", choices=("default", "mirrored", "multiworker")),
    Setting("mixed_precision", False, "mixed_float16 compute (GPUs)", "scale", bool),
    Setting("xla", False, "jit_compile the training step", "scale", bool),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
# Settings that name places, which may differ between the machines of one multi-worker run.
PATH_SETTINGS = ("train_annotations", "valid_annotations", "image_dir", "data_dir", "output", "qat_from")


def changed_settings(previous: dict, resolved: dict, ignore=()) -> list[str]:
    """The names of the settings whose values differ between two `Config.to_json()` dicts."""
    return sorted(k for k in set(previous) | set(resolved) if k not in ignore and previous.get(k) != resolved.get(k))

PRESETS = {
    # The embedded default: a CPU-sized model on the procedural data set, sized
    # so that `make demo` (install included) fits in 15 minutes on 2 cores:
    # 64x64 input, 16x16 heatmaps with sigma 2 (sigma 1 learned markedly
    # slower in the same time), Adam at 2.5e-3 with a one-epoch warm-up
    # (RMSprop at 2.5e-4 or 1e-3 barely left the all-zero-heatmap phase in
    # that time), DARK's Taylor decoding (better than the reference's
    # quarter-pixel shift at these coarse heatmaps; docs/numbers.md has the ablation),
    # the metric and a SavedModel export every 3 epochs.
    "synthetic-small": dict(
        dataset="synthetic", variant="hourglass_small", image_size=64, sigma=2.0, refine="taylor",
        batch_size=16, optimizer="adam",
        learning_rate=2.5e-3, warmup_epochs=1, lr_decay_epochs=(14,), lr_decay_factor=0.2, epochs=18,
        eval_every=3, flip_test=True, num_train=4000, num_valid=200,
    ),
    # A multi-person (Associative Embedding) model that trains on 2 CPU cores: scenes of 1-4 synthetic people at
    # 128x128, a 2-stack conv-block network as pose-ae-train's but narrow, sigma 1 on its 32x32 heatmaps (the
    # reference's side / 64 would be 0.5), Adam with a warm-up; COCO AP by pycocotools every 4 epochs. The
    # grouping losses weigh 0.1, not the reference's 1e-3: at 1e-3 every person's tags stayed equal for all 20
    # epochs (push loss at 0.375, its value then) and AP came from the joints' order alone (docs/multi-person.md has both runs).
    "synthetic-people": dict(
        dataset="synthetic-people", variant="associative_embedding_small", image_size=128, sigma=1.0,
        tag_loss_weight=0.1,
        data_dir=os.path.join("data", "synthetic-people"), batch_size=16, optimizer="adam", learning_rate=1e-3,
        warmup_epochs=1, lr_decay_epochs=(16,), lr_decay_factor=0.2, epochs=20, eval_every=4, num_train=2000,
        num_valid=100,
    ),
    # pose-ae-train's COCO training: 512x512 input, 128x128 heatmaps with sigma 2 (side / 64), Adam at 2e-4,
    # batch 32, 1000 iterations an "epoch", the rate down to 1e-5 after 200,000 iterations.
    "coco-people": dict(
        dataset="coco-people", variant="associative_embedding", image_size=512, sigma=2.0, batch_size=32,
        optimizer="adam", learning_rate=2e-4, steps_per_epoch=1000, epochs=250, lr_decay_epochs=(200,),
        lr_decay_factor=0.05, eval_every=10,
    ),
    # The paper's models: RMSprop at 2.5e-4, batch 16, 256x256 input, 64x64
    # heatmaps with sigma 1; the learning rate drops 5x twice near the end.
    "mpii-2stack": dict(dataset="mpii", variant="hourglass_2stack", epochs=100, lr_decay_epochs=(75, 90)),
    "mpii-8stack": dict(dataset="mpii", variant="hourglass_8stack", epochs=100, lr_decay_epochs=(75, 90)),
    "flic-2stack": dict(dataset="flic", variant="hourglass_2stack", epochs=100, lr_decay_epochs=(75, 90)),
    "flic-8stack": dict(dataset="flic", variant="hourglass_8stack", epochs=100, lr_decay_epochs=(75, 90)),
}

Config = dataclasses.make_dataclass(
    "Config",
    [("preset", str, dataclasses.field(default=DEFAULT_PRESET))]
    + [(s.name, Any, dataclasses.field(default=s.default)) for s in SETTINGS],
    namespace={
        "__doc__": "Every choice of a run (what `config.json` holds): `preset` and one field per `SETTINGS` entry.",
        "to_json": lambda self: {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in dataclasses.asdict(self).items()},
    },
)
Config.__module__ = __name__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--preset` and one flag per setting, grouped; every flag defaults to None (= not given)."""
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"named settings that the other flags override: {', '.join(PRESETS)} "
                             f"(default {DEFAULT_PRESET})")
    groups = {}
    for setting in SETTINGS:
        group = groups.get(setting.group) or groups.setdefault(setting.group, parser.add_argument_group(setting.group))
        if setting.parse is bool:
            group.add_argument(setting.flag, action=argparse.BooleanOptionalAction, help=setting.help)
        else:
            group.add_argument(setting.flag, choices=setting.choices, help=setting.help)


def _parsed(setting: Setting, text):
    if setting.parse is bool or text is None or not isinstance(text, str):
        return text
    try:
        return setting.parse(text)
    except ValueError as error:
        expected = {int: f"an integer, got {text!r}", float: f"a number, got {text!r}"}.get(setting.parse, error)
        raise ValueError(f"{setting.flag} must be {expected}.") from None


def resolve_config(args: argparse.Namespace) -> Config:
    """Preset values, then the flags given; checks the result.

    When `--epochs` is given without `--lr-decay-epochs`, the preset's drops
    stay at the same fraction of training.
    """
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; expected one of {', '.join(PRESETS)}.")
    values = {"preset": args.preset, **PRESETS[args.preset]}
    given = {name: _parsed(SETTINGS_BY_NAME[name], value) for name, value in vars(args).items()
             if name in SETTINGS_BY_NAME and value is not None}
    preset_epochs = values.get("epochs", SETTINGS_BY_NAME["epochs"].default)
    preset_drops = tuple(values.get("lr_decay_epochs", ()))
    values.update(given)
    values["lr_decay_epochs"] = tuple(values.get("lr_decay_epochs", ()))
    if "epochs" in given and "lr_decay_epochs" not in given and values["epochs"] != preset_epochs:
        scaled = sorted({round(e * values["epochs"] / preset_epochs) for e in values["lr_decay_epochs"]})
        values["lr_decay_epochs"] = tuple(e for e in scaled if 0 < e < values["epochs"])
        if values["lr_decay_epochs"] != preset_drops:
            drops = ", ".join(map(str, values["lr_decay_epochs"])) or "none (too few epochs)"
            print(f"the preset's learning-rate drops {preset_drops} scaled to --epochs {values['epochs']}: {drops}")
    config = Config(**values)
    if config.output is None:
        config.output = os.path.join("runs", config.preset + ("-qat" if config.qat_from else ""))
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Raises a `ValueError` naming the flag of the first invalid value."""
    for name in ("batch_size", "epochs", "eval_every", "image_size", "num_train", "num_valid", "num_calibration"):
        if getattr(config, name) < 1:
            raise ValueError(f"{SETTINGS_BY_NAME[name].flag} must be positive, got {getattr(config, name)}.")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError(f"--steps-per-epoch must be positive (leave it out for one pass), got {config.steps_per_epoch}.")
    if config.image_size % 4:
        raise ValueError(f"--image-size must be a multiple of 4 (heatmaps are a quarter of the input; the model "
                         f"needs a multiple of 2^(depth + 2)), got {config.image_size}.")
    for name in ("learning_rate", "sigma", "tag_loss_weight"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{SETTINGS_BY_NAME[name].flag} must be positive, got {getattr(config, name)}.")
    drops = tuple(config.lr_decay_epochs)
    if any(not 0 < e < config.epochs for e in drops) or list(drops) != sorted(set(drops)):
        raise ValueError(f"--lr-decay-epochs must be increasing epochs within 1..{config.epochs - 1}, got {drops}.")
    if config.dataset not in ("synthetic", "synthetic-people"):
        for name in ("train_annotations", "valid_annotations"):
            if getattr(config, name) is None:
                raise ValueError(f"{SETTINGS_BY_NAME[name].flag} is required for the {config.dataset} data set.")


def config_from_json(data: dict, source: str = "config.json") -> Config:
    """The `Config` of a `config.json` (lists become tuples again); unknown keys are refused."""
    names = {field.name for field in dataclasses.fields(Config)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}.")
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
