"""Trains a Stacked Hourglass Network with `model.fit` (`keras-hourglass train`, `python train.py`).

With no arguments it runs the embedded default: generate the synthetic data
set under `data/synthetic/` if it is not there, train the small CPU preset,
evaluate the best checkpoint, export it as a SavedModel and a TFLite file,
and plot, all under `runs/synthetic-small/`.

    python train.py                                   # the default: synthetic-small
    python train.py --preset mpii-8stack --train-annotations annot/train.h5 \\
        --valid-annotations annot/valid.h5 --image-dir mpii/images
    python train.py --preset flic-2stack --train-annotations FLIC/examples.mat --train-split train \\
        --valid-annotations FLIC/examples.mat --valid-split test --image-dir FLIC/images
    python train.py --dataset coco --train-annotations mine/train.json --valid-annotations mine/valid.json \\
        --image-dir mine/images --normalizer-joints right_shoulder,left_hip --epochs 50
    python train.py --preset synthetic-people          # a multi-person model on synthetic scenes
    python train.py --preset coco-people --train-annotations person_keypoints_train2017.json \\
        --valid-annotations person_keypoints_val2017.json --image-dir coco/images

A preset fills in every setting; any flag overrides it. The resolved
configuration goes to `<output>/config.json`; the same command again resumes
the run from its last completed epoch (see `keras_hourglass.training`).
"""

from __future__ import annotations

import argparse
import json

from keras_hourglass.cli import quiet_tensorflow, run_command
from keras_hourglass.config import PRESETS, add_arguments, resolve_config


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=f"presets: {', '.join(PRESETS)}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> dict:
    config = resolve_config(args)
    quiet_tensorflow()
    from keras_hourglass.joints import PEOPLE_DATASETS

    if config.dataset in PEOPLE_DATASETS:  # a multi-person model
        from keras_hourglass.multiperson_training import run_people_training as run_training
    else:
        from keras_hourglass.training import run_training

    summary = run_training(config)
    shown = {k: v for k, v in summary.items() if k != "groups"}
    print(f"done in {summary['total_seconds']:.0f} s: {json.dumps(shown)}")
    return summary


def main(argv=None, prog: str = "train.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
