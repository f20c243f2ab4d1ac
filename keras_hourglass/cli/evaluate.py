"""Evaluates a pose model, or a predictions file, with the data set's standard per-joint table.

(`keras-hourglass evaluate`, `python evaluate.py`; the chain is `keras_hourglass.evaluation`.)

A model (a SavedModel written by training, a `.tflite`, `.onnx` or OpenVINO `.xml` file converted from one, or a `.keras` file) on a split:

    python evaluate.py --model runs/synthetic-small/checkpoints/best \
        --dataset synthetic --annotations data/synthetic/valid.h5 --image-dir data/synthetic/images \
        --output runs/synthetic-small/eval

A predictions file against ground truth (the published MPII table):

    python evaluate.py --predictions ../shared/data/mpii/valid-preds-hg8.h5 \
        --ground-truth ../shared/data/mpii/detections_our_format.mat

Prints the table (PCKh@0.5 for MPII, PCK@0.2 by torso for FLIC, PCK@0.2 of
the file's normaliser otherwise), and with `--output DIR` writes
`predictions.h5` (`preds` `[N, K, 2]` in the annotation file's own pixel
convention, rows in the annotation's order, as `valid-preds-hg8.h5`; plus
`scores`), `metrics.json`, `pck_curve.png` and `predictions.png` (a grid of
people with predicted and true skeletons). `--json FILE` writes the metrics
JSON alone.

A multi-person SavedModel (an imported pose-ae-train network) on a COCO
keypoint file: every person of each annotated image, found bottom-up
(`keras_hourglass.multiperson.predict_people`, flip test on unless
`--no-flip-test`), scored by COCO keypoint AP with pycocotools
(`keras_hourglass.coco_ap`); prints the ten standard figures, and `--json`
or `--output` writes them (with `--output`, also the results file
`keypoints_results.json` in COCO's format):

    python evaluate.py --model imported/ae/saved_model --annotations person_keypoints_val2017.json \
        --image-dir val2017 --output eval/

Prediction files are read in the annotation file's convention: MATLAB's
1-based pixels for MPII and FLIC files (1 is subtracted from both sides
before comparing, which changes nothing), 0-based for COCO.
"""

from __future__ import annotations

import argparse
import os

from keras_hourglass.cli import detection_threshold, normalizer_joint_names, quiet_tensorflow, run_command
from keras_hourglass.joints import DATASETS


def build_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="SavedModel directory, .tflite, .onnx, OpenVINO .xml or .keras file to run")
    source.add_argument("--predictions", help="HDF5 file with `preds` [N, K, 2] to score")
    parser.add_argument("--dataset", choices=DATASETS, default="mpii", help="data set of the annotations (default mpii)")
    parser.add_argument("--annotations", "--ground-truth", dest="annotations", required=True,
                        help="annotation file of the split (.h5, .json, .mat)")
    parser.add_argument("--image-dir", help="folder of the images (needed with --model)")
    parser.add_argument("--split", help="split of a multi-split file (FLIC examples.mat: train/test)")
    parser.add_argument("--normalizer-joints", help="COCO: two joint names whose distance normalises PCK, 'a,b'")
    parser.add_argument("--threshold", type=float, help="PCK threshold (default: the data set's standard one)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="average with the mirrored image's heatmaps (default on)")
    parser.add_argument("--refine", choices=("quarter", "taylor"),
                        help="sub-pixel decoding (default: the model's; the reference's quarter shift for .keras)")
    parser.add_argument("--batch-size", type=int, default=16, help="crops per batch (default 16)")
    parser.add_argument("--output", help="folder for predictions.h5, metrics.json and plots")
    parser.add_argument("--json", help="write the metrics JSON here")
    parser.add_argument("--num-plot", type=int, default=12, help="people in the predictions grid")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="multi-person models: the lowest heatmap value a joint is found at (default 0.1)")
    return parser


def run(args: argparse.Namespace) -> dict:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}.")
    quiet_tensorflow()
    from keras_hourglass.multiperson import is_multi_person

    if args.model and os.path.isdir(args.model) and is_multi_person(args.model):
        return run_multi_person(args)
    detection_threshold(args.detection_threshold, multi_person=False)
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.data.loaders import load_records
    from keras_hourglass.evaluation import evaluate_model, evaluate_predictions, read_predictions
    from keras_hourglass.fileio import write_json
    from keras_hourglass.metrics import CURVE_THRESHOLDS
    from keras_hourglass.pose_model import load_pose_model

    records = load_records(args.dataset, args.annotations, args.image_dir, args.split,
                           normalizer_joint_names(args.normalizer_joints))
    if args.model:
        pose_model = load_pose_model(args.model, records.spec.names, records.spec.flip_index)
        if args.refine:
            pose_model.codec = HeatmapCodec.from_config({**pose_model.codec.get_config(), "refine": args.refine})
        evaluation = evaluate_model(pose_model, records, args.flip_test, args.batch_size, args.threshold,
                                    progress=not args.quiet)
        flip = ("flip test in the model's graph" if pose_model.flip_tested
                else f"flip test {'on' if args.flip_test else 'off'}")
        label = f"{os.path.basename(os.path.normpath(args.model))}, {flip}"
    else:
        evaluation = evaluate_predictions(read_predictions(args.predictions, records), records, args.threshold)
        label = os.path.basename(args.predictions)
    result = evaluation.result
    print(f"{records.source}: {len(records)} people, {label}")
    print(result.format_table())
    print(f"AUC of the mean {result.metric}, thresholds 0-{CURVE_THRESHOLDS[-1]:g}: {evaluation.curve['auc']:.2f}")
    report = evaluation.metrics()
    if args.json:
        write_json(args.json, report)
    if args.output:
        evaluation.write(args.output, records, label, args.num_plot)
        print(f"wrote {args.output}")
    return report


def run_multi_person(args: argparse.Namespace) -> dict:
    """COCO keypoint AP of a multi-person SavedModel on the annotated images of a COCO keypoint file."""
    from keras_hourglass.codec import AssociativeEmbeddingCodec
    from keras_hourglass.coco_ap import ap_report, evaluate_people, format_stats
    from keras_hourglass.data.people import load_people
    from keras_hourglass.fileio import write_json
    from keras_hourglass.joints import COCO_PERSON
    from keras_hourglass.multiperson import load_multi_person_model

    if not args.image_dir:
        raise ValueError("--image-dir is needed with --model (the folder of the annotation file's images).")
    ignored = [flag for flag, value in (("--threshold", args.threshold), ("--refine", args.refine),
                                        ("--normalizer-joints", args.normalizer_joints), ("--split", args.split))
               if value is not None]
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: for PCK; a multi-person model is scored by COCO keypoint AP.")
    threshold = detection_threshold(args.detection_threshold, multi_person=True)
    for flag, path in (("--output", args.output), ("--json", args.json)):
        if path and os.path.exists(path) and os.path.isdir(path) != (flag == "--output"):
            raise ValueError(f"{flag} {path}: a {'file' if flag == '--output' else 'folder'} is there; give a "
                             f"{'folder' if flag == '--output' else 'file'}.")
    if args.dataset not in ("mpii", "coco"):  # mpii: the flag's default, not given
        raise ValueError(f"a multi-person model is scored by COCO keypoint AP on a COCO keypoint file (.json); got "
                         f"--dataset {args.dataset}.")
    people = load_people(args.annotations, args.image_dir, with_keypoints=False, max_people=None)
    if not len(people):
        raise ValueError(f"{args.annotations}: no image has a person annotated (crowds alone are not scored).")
    model = load_multi_person_model(args.model)
    if model.keypoint_names != list(COCO_PERSON.names):
        raise ValueError(f"{args.model}: COCO keypoint AP scores COCO's 17 person keypoints; the model names "
                         f"{', '.join(model.keypoint_names[:4])}, ...")
    codec = AssociativeEmbeddingCodec(detection_threshold=threshold)

    def progress(done, total, found):
        if not args.quiet:
            print(f"\r{done}/{total} images, {found} people", end="\n" if done == total else "", flush=True)

    stats, results = evaluate_people(model, people, codec, args.flip_test, progress)
    images = people.image_ids
    print(f"{args.annotations}: {len(images)} images, {len(results)} people found, "
          f"{os.path.basename(os.path.normpath(args.model))} (COCO keypoint AP, pycocotools)")
    print(format_stats(stats))
    report = ap_report(stats, len(images), len(results), args.flip_test, detection_threshold=threshold)
    if args.json:
        write_json(args.json, report)
    if args.output:
        write_json(os.path.join(args.output, "metrics.json"), report)
        write_json(os.path.join(args.output, "keypoints_results.json"), results, indent=None)
        print(f"wrote {args.output}")
    return report


def main(argv=None, prog: str = "evaluate.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
