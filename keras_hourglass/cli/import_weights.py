"""Imports a published PyTorch hourglass checkpoint as a Keras model, a SavedModel and a TFLite file.

(`keras-hourglass import-weights`, `python import_weights.py`; the mapping is
`keras_hourglass.reference_weights`, the torch-free reader
`keras_hourglass.torch_files`.)

    python import_weights.py checkpoint.pth.tar --output imported/hg8
    python import_weights.py hg_s2_b1/model_best.pth.tar --output imported/hg2 --format pytorch-pose

Writes `DIR/model.keras` (our builder's model with the checkpoint's weights;
input RGB in `[0, 1]`, any preprocessing the checkpoint expects inside),
`DIR/saved_model/` (the serving signatures and metadata of a SavedModel
written by training, so `predict.py`, `evaluate.py` and `convert.py` take
it), `DIR/model.tflite` (float32, from that SavedModel; `--no-tflite` skips
it) and `DIR/import.json` (what was found). The folder is written whole
under a temporary name and then renamed, so a failed import leaves nothing
behind. An existing `DIR` is refused unless `--overwrite` is given, and even
then only an earlier import's folder is replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil

from keras_hourglass.cli import quiet_tensorflow, release_freed_memory, run_command, step
from keras_hourglass.fileio import partial_directory, replace_directory, write_json
from keras_hourglass.joints import COCO_PERSON, JointSpec, get_joint_spec, infer_flip_partners
from keras_hourglass.reference_weights import FORMATS, POSE_AE, read_checkpoint, unused_keys

NUM_JOINTS = COCO_PERSON.num_keypoints  # a multi-person network's joints: heatmaps, then as many tags

REPORT_FILE = "import.json"
# Joint tables by joint count, for checkpoints that name none.
SPEC_BY_COUNT = {16: "mpii", 11: "flic"}


def build_parser(prog: str = "import_weights.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the reference checkpoint (.pth, .pth.tar, .pt, either torch format; "
                                           "or .safetensors)")
    parser.add_argument("--output", required=True, help="folder for model.keras, saved_model/ and model.tflite")
    parser.add_argument("--format", choices=FORMATS, help="the reference implementation (default: from the key names)")
    parser.add_argument("--image-size", type=int, help="square input size of the model (default: as the "
                                                        "checkpoint was trained, 512 for pose-ae-train, else 256)")
    parser.add_argument("--dataset", choices=("mpii", "flic"),
                        help="joint names and flip partners (default: mpii for 16 joints, flic for 11)")
    parser.add_argument("--keypoint-names", help="comma-separated joint names in the checkpoint's channel order, for "
                                                 "other joint counts (flip partners from left/right in the names)")
    parser.add_argument("--refine", choices=("quarter", "taylor"), default="quarter",
                        help="sub-pixel decoding in the SavedModel (default quarter, as both references decode)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="export the flip test into the SavedModel (default on, as a training run exports)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output folder written by an earlier import (default: refuse)")
    parser.add_argument("--tflite", action=argparse.BooleanOptionalAction, default=True,
                        help="also write model.tflite (float32; default on)")
    return parser


@contextlib.contextmanager
def one_line_errors(path: str):
    """Whatever a file read from anywhere makes the reader raise becomes one `ValueError` naming the file.

    The reader raises `ValueError` exceptions with messages of its own for what it knows; any other exception is a
    file it did not foresee, which is still the file's fault and still gets one line, not a traceback.
    """
    try:
        yield
    except ValueError as error:
        raise ValueError(printable(error, 600)) from None
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                         f"{printable(error, 200)}).") from None


def printable(value, limit: int = 80) -> str:
    """A value read from the file, as text safe for a terminal: control characters escaped, at most `limit` long."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def joint_spec(args, num_keypoints: int) -> JointSpec:
    """The joint table of the checkpoint's channels: `--keypoint-names`, `--dataset`, or by count."""
    if args.keypoint_names:
        names = tuple(n.strip() for n in args.keypoint_names.split(",") if n.strip())
        if len(names) != num_keypoints:
            raise ValueError(f"--keypoint-names has {len(names)} names, but the checkpoint predicts "
                             f"{num_keypoints} joints.")
        return JointSpec("custom", names, infer_flip_partners(names))
    dataset = args.dataset or SPEC_BY_COUNT.get(num_keypoints)
    if dataset is None:
        raise ValueError(f"the checkpoint predicts {num_keypoints} joints; name them with --keypoint-names "
                         "(16 are taken as MPII's, 11 as FLIC's).")
    spec = get_joint_spec(dataset)
    if spec.num_keypoints != num_keypoints:
        raise ValueError(f"--dataset {dataset} has {spec.num_keypoints} joints, but the checkpoint predicts "
                         f"{num_keypoints}.")
    return spec


def run(args: argparse.Namespace) -> dict:
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isfile(os.path.join(output, REPORT_FILE)):
        raise ValueError(f"{args.output} exists and was not written by an import; choose another --output.")
    if os.path.exists(output) and not args.overwrite:
        raise ValueError(f"{args.output} exists (an earlier import); add --overwrite to replace it, or choose "
                         "another --output.")
    with step(f"reading {args.checkpoint}"), one_line_errors(args.checkpoint):
        checkpoint = read_checkpoint(args.checkpoint, args.format)
    if args.image_size is None:
        args.image_size = 512 if checkpoint.format == POSE_AE else 256
    divisor = 2 ** (checkpoint.depth + 2)  # the stem halves the input twice, each hourglass level once more
    if args.image_size < divisor or args.image_size % divisor:
        raise ValueError(f"--image-size must be a positive multiple of {divisor} for this checkpoint's depth "
                         f"{checkpoint.depth}, got {args.image_size}.")
    multi_person = checkpoint.format == POSE_AE
    if multi_person:  # 17 COCO joint heatmaps and their tags in the first 34 of its channels
        if checkpoint.num_keypoints < 2 * NUM_JOINTS:
            raise ValueError(f"{args.checkpoint}: a pose-ae-train network with {checkpoint.num_keypoints} output "
                             f"channels; its {NUM_JOINTS} COCO joint heatmaps and tags need {2 * NUM_JOINTS}.")
        spec = COCO_PERSON
        what = f"{checkpoint.num_keypoints} channels ({NUM_JOINTS} COCO joint heatmaps and their tags first)"
    else:
        spec = joint_spec(args, checkpoint.num_keypoints)
        what = f"{checkpoint.num_keypoints} joints ({spec.name})"
    print(f"{args.checkpoint}: {checkpoint.format} checkpoint, {checkpoint.num_stacks} stacks, {what}, "
          f"{checkpoint.filters} filters, depth {checkpoint.depth}, stem widths {checkpoint.stem_filters}"
          + (f", each hourglass level {checkpoint.width_increase} wider" if checkpoint.width_increase else "")
          + "".join(f", {k} {printable(v)}" for k, v in checkpoint.info.items()))
    size = (args.image_size, args.image_size)
    with step("starting TensorFlow"):
        quiet_tensorflow()
    with step(f"building the {checkpoint.num_stacks}-stack network"):
        model = checkpoint.build_network(size)
    with step("loading the weights"), one_line_errors(args.checkpoint):
        checkpoint.load_into(model)
    for group, tensors, parameters in checkpoint.mapped_groups:
        print(f"  {group:<28} {tensors:>4} tensors {parameters:>11,} values")
    skipped = unused_keys(checkpoint)
    print(f"  skipped {len(skipped)} tensors the reference never uses (BatchNorm step counters"
          + (", skip convolutions of equal-width residuals)" if any(".skip_layer." in k for k in skipped) else ")"))
    if checkpoint.input_mean is not None:
        print(f"  input: RGB in [0, 1] minus the mean {tuple(round(m, 4) for m in checkpoint.input_mean)}, "
              "inside the model")
    checkpoint.state_dict.clear()  # its arrays are the model's weights now: not held through the conversion
    release_freed_memory()
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import PoseEstimator, save_estimator
    from keras_hourglass.multiperson import MultiPersonEstimator
    from keras_hourglass.tflite import convert_saved_model

    temporary = partial_directory(output)
    try:
        print(f"writing {temporary}/ (renamed to {args.output} when complete)", flush=True)
        with step("  model.keras"):
            model.save(os.path.join(temporary, "model.keras"))
        if multi_person:
            estimator = MultiPersonEstimator(model, spec.names, spec.flip_partners, spec.limbs)
            what = "the network, heatmaps, tags and each joint's candidates"
        else:
            estimator = PoseEstimator(model, HeatmapCodec(size, flip_index=spec.flip_index, refine=args.refine),
                                      spec.names, args.flip_test and spec.flip_index is not None, spec.limbs)
            what = "serving signatures" + (", flip test in the graph" if args.flip_test else "")
        if args.tflite:  # from the graph in memory, the one saved next: reading the SavedModel back is slower
            with step("  model.tflite (float32)"):
                convert_saved_model(estimator, os.path.join(temporary, "model.tflite"))
            release_freed_memory()  # the conversion's copies of the weights, before the SavedModel's
        with step(f"  saved_model/ ({what})"):
            save_estimator(estimator, os.path.join(temporary, "saved_model"))
        report = {"checkpoint": os.path.abspath(args.checkpoint), "format": checkpoint.format,
                  "num_stacks": checkpoint.num_stacks, "num_keypoints": checkpoint.num_keypoints,
                  "keypoint_names": list(spec.names), "filters": checkpoint.filters, "depth": checkpoint.depth,
                  "stem_filters": list(checkpoint.stem_filters), "input_mean": checkpoint.input_mean,
                  "block": checkpoint.block, "width_increase": checkpoint.width_increase,
                  "batch_norm": checkpoint.batch_norm, "multi_person": multi_person,
                  "image_size": list(size), "parameters": model.count_params(), **checkpoint.info}
        write_json(os.path.join(temporary, REPORT_FILE), report)
        replace_directory(temporary, output)
    except BaseException:  # a failed or interrupted import leaves nothing behind
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    print(f"{model.count_params():,} parameters -> {args.output}: model.keras, saved_model/"
          + (", model.tflite" if args.tflite else ""))
    return report


def main(argv=None, prog: str = "import_weights.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
