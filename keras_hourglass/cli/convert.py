"""Converts a trained model to TFLite, ONNX and OpenVINO files and measures each one's parity with the source model.

(`keras-hourglass convert`, `python convert.py`.)

    python convert.py --model runs/synthetic-small/checkpoints/best --output runs/synthetic-small/tflite \
        --dataset synthetic --calibration data/synthetic/train.h5 --valid data/synthetic/valid.h5 \
        --image-dir data/synthetic/images

`--model` is a SavedModel written by training (converted directly) or a
`.keras` file (first exported to a SavedModel beside the outputs, with the
joint names of `--dataset`, `--refine` decoding and `--flip-test` in the
graph). Each `--quantization` (default: all four) becomes
`model-<quantization>.tflite` with its metadata embedded (see
`keras_hourglass.tflite_metadata`); `--format onnx openvino` adds
`model.onnx` and `model.xml` (float32, `keras_hourglass.interchange`). `int8` is calibrated on
`--num-calibration` person crops drawn at random (seed 0) from the
`--calibration` annotations: the training split, never the one scored.
`--equalize` (a `.keras` source) first rescales the network's channels so
that every activation quantizes better without changing its outputs
(`keras_hourglass.equalization`); `--int8-keep-float-above` keeps the ops on
the widest activations in float.

With `--valid`, the source model and every file are evaluated on that split
with the data set's standard metric (PCKh@0.5 for MPII and the synthetic set,
PCK@0.2 for FLIC) through the one inference loop, and the parity table is
printed and written to `parity.json`: the mean, its drop from the source
model, and how far the keypoints move from the source model's, in crop
pixels.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from keras_hourglass.cli import normalizer_joint_names, quiet_tensorflow, run_command, step
from keras_hourglass.interchange import FORMATS
from keras_hourglass.joints import DATASETS, get_joint_spec
from keras_hourglass.tflite_metadata import QUANTIZATIONS, RANGES


def build_parser(prog: str = "convert.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SavedModel directory or .keras file")
    parser.add_argument("--output", required=True, help="folder for the .tflite files and parity.json")
    parser.add_argument("--format", nargs="+", choices=("tflite", *FORMATS), default=["tflite"],
                        help="files to write: TFLite (each --quantization), ONNX (model.onnx, float32; needs "
                             "keras-hourglass[onnx]), OpenVINO (model.xml + model.bin, float32) and OpenVINO int8 "
                             "(model-int8.xml, NNCF, calibrated as TFLite int8; both need keras-hourglass[openvino]); "
                             "default tflite")
    parser.add_argument("--quantization", nargs="+", choices=QUANTIZATIONS,
                        help="the TFLite variants to write (default: all four)")
    parser.add_argument("--dataset", choices=DATASETS, default="mpii", help="data set of the annotations")
    parser.add_argument("--calibration", help="training annotations to draw int8 calibration crops from")
    parser.add_argument("--num-calibration", type=int, default=200, help="calibration crops (default 200)")
    parser.add_argument("--int8-keep-float-above", type=float, metavar="RANGE",
                        help="int8: keep in float the ops on activations whose calibrated range exceeds RANGE "
                             "(default: quantize every op with an int8 kernel)")
    parser.add_argument("--int8-ranges", choices=RANGES, default="percentile",
                        help="int8: each activation's range from the calibration crops: minimum to maximum (the "
                             "converter's own), the 0.01th to 99.99th percentiles (default), or the range of least "
                             "squared error")
    parser.add_argument("--equalize", action="store_true",
                        help=".keras only: equalise per-channel activation ranges first (same outputs; int8 loses "
                             "less), measured on the calibration crops")
    parser.add_argument("--valid", help="annotations of the split to measure parity on")
    parser.add_argument("--image-dir", help="folder the annotation files' image names are relative to")
    parser.add_argument("--normalizer-joints", help="COCO: two joint names whose distance normalises PCK, 'a,b' "
                                                    "(as in training; default: the person box size)")
    parser.add_argument("--split", help="split of a multi-split file (FLIC examples.mat): the same for both")
    parser.add_argument("--refine", choices=("quarter", "taylor"), default="taylor",
                        help=".keras only: sub-pixel decoding exported in the graph (default taylor)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=False,
                        help=".keras only: export the flip test into the graph (twice the cost; default off)")
    parser.add_argument("--batch-size", type=int, default=16, help="crops per batch (default 16)")
    return parser


def source_saved_model(args, records, calibration) -> tuple[str, list | None]:
    """`(the SavedModel to convert, the calibration crops if equalisation drew them, else None)`.

    A SavedModel `--model` is converted as it is. A `.keras` file is
    equalised if asked (`keras_hourglass.equalization`, on the calibration
    crops) and exported beside the outputs; it has no joint names, so they
    come from the data set of the loaded annotations (`records`), or of
    `--dataset` when none were given.
    """
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.equalization import equalize_channel_ranges
    from keras_hourglass.export import export_saved_model, last_output_shape
    from keras_hourglass.pose_model import load_keras_model
    from keras_hourglass.quantization import calibration_crops

    if not args.model.endswith(".keras"):
        return args.model, None
    spec = records.spec if records is not None else get_joint_spec("mpii" if args.dataset == "synthetic" else args.dataset)
    model = load_keras_model(args.model)
    size = tuple(model.input_shape[1:3])
    crops = None
    if args.equalize:
        crops = calibration_crops(calibration, size, args.num_calibration, args.batch_size)
        print(f"equalised the channel ranges of {equalize_channel_ranges(model, crops, args.batch_size)} "
              "groups of tensors", flush=True)
    codec = HeatmapCodec(size, tuple(last_output_shape(model)[1:3]), flip_index=spec.flip_index, refine=args.refine)
    return export_saved_model(model, os.path.join(args.output, "saved_model"), codec, spec.names, args.flip_test,
                              spec.limbs), crops


def crop_pixel_distance(keypoints, reference, records, image_size) -> np.ndarray:
    """Distances `[N, K]` between two predictions, in the model's input (crop) pixels."""
    from keras_hourglass.transforms import SCALE_UNIT

    pixels_per_crop_pixel = np.asarray(records.scale) * SCALE_UNIT / max(image_size)
    return np.linalg.norm(keypoints - reference, axis=-1) / pixels_per_crop_pixel[:, None]


def run(args: argparse.Namespace) -> dict:
    if not os.path.exists(args.model):
        raise ValueError(f"{args.model}: no such model file or folder.")
    if os.path.isfile(os.path.join(args.model, "saved_model.pb")):  # a multi-person one is refused before anything
        from keras_hourglass.export import check_single_person, read_saved_model_metadata

        check_single_person(read_saved_model_metadata(args.model), args.model)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}.")
    if args.num_calibration < 1:
        raise ValueError(f"--num-calibration must be positive, got {args.num_calibration}.")
    if args.int8_keep_float_above is not None and not args.int8_keep_float_above > 0:
        raise ValueError(f"--int8-keep-float-above must be a positive range (an activation's maximum minus its "
                         f"minimum), got {args.int8_keep_float_above:g}.")
    from keras_hourglass.interchange import require

    for fmt in args.format:  # a missing runtime is named before any work
        if fmt != "tflite":
            require(fmt)
    if "tflite" not in args.format:
        if args.quantization:
            raise ValueError(f"--quantization {' '.join(args.quantization)} is for TFLite files (--format tflite); "
                             "ONNX and OpenVINO files are float32, and --format openvino-int8 is OpenVINO's int8.")
        args.quantization = []
    elif args.quantization is None:
        args.quantization = list(QUANTIZATIONS)
    if "openvino-int8" in args.format and not args.calibration:
        raise ValueError("--format openvino-int8 needs --calibration (training annotations to calibrate on).")
    if "int8" in args.quantization and not args.calibration:
        raise ValueError("--quantization int8 needs --calibration (training annotations to calibrate on).")
    if args.equalize and not args.model.endswith(".keras"):
        raise ValueError(f"--equalize needs the Keras model (a .keras file); {args.model} is a SavedModel.")
    if args.equalize and not args.calibration:
        raise ValueError("--equalize needs --calibration (training annotations to measure channel ranges on).")
    quiet_tensorflow()
    from keras_hourglass.data.loaders import load_records

    calibration = records = None
    if args.calibration:
        calibration = load_records(args.dataset, args.calibration, args.image_dir, args.split,
                                   normalizer_joint_names(args.normalizer_joints))
    if args.valid:
        records = load_records(args.dataset, args.valid, args.image_dir, args.split,
                               normalizer_joint_names(args.normalizer_joints))
        records.check_normalizers()  # a split that cannot be scored is refused before any conversion
        records.check_images()
    existed = set(os.listdir(args.output)) if os.path.isdir(args.output) else None
    try:
        return convert_and_measure(args, calibration, records)
    except BaseException:  # a failed run leaves nothing of its own behind
        remove_new_files(args.output, existed)
        raise


def remove_new_files(folder: str, existed: set | None) -> None:
    """Removes what a failed run wrote into `folder`: the folder itself if it did not exist before."""
    import shutil

    if existed is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in set(os.listdir(folder)) - existed if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def convert_and_measure(args: argparse.Namespace, calibration, records) -> dict:
    from keras_hourglass.data.pipeline import build_eval_dataset
    from keras_hourglass.evaluation import check_model_fits_records, evaluate_model
    from keras_hourglass.fileio import write_json
    from keras_hourglass.pose_model import load_pose_model
    from keras_hourglass.quantization import calibration_crops
    from keras_hourglass.interchange import EXTENSIONS, RuntimePoseModel, convert
    from keras_hourglass.tflite import TFLitePoseModel, convert_saved_model, int8_mac_share

    saved_model, crops = source_saved_model(args, records or calibration, calibration)
    source = load_pose_model(saved_model)
    if records is not None:
        check_model_fits_records(source, records)
    image_size = tuple(source.codec.image_size)
    if crops is None and ("int8" in args.quantization or "openvino-int8" in args.format):
        with step(f"drawing {args.num_calibration} calibration crops from {args.calibration}"):
            crops = calibration_crops(calibration, image_size, args.num_calibration, args.batch_size)
    files, int8_shares, speeds = {}, {}, {}
    for quantization in args.quantization:
        print(f"{quantization}: converting ...", flush=True)
        start = time.perf_counter()
        path = convert_saved_model(saved_model, os.path.join(args.output, f"model-{quantization}.tflite"),
                                   quantization, crops if quantization == "int8" else None,
                                   args.int8_keep_float_above if quantization == "int8" else None,
                                   args.int8_ranges)
        files[quantization], int8_shares[quantization] = path, int8_mac_share(path)
        speeds[quantization] = TFLitePoseModel(path).milliseconds_per_image()
        print(f"{quantization}: {path} ({file_mib(path):.2f} MiB, {100 * int8_shares[quantization]:.1f}% of "
              f"multiply-adds in int8, {speeds[quantization]:.2f} ms/image, converted in "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    for fmt in (f for f in args.format if f != "tflite"):
        print(f"{fmt}: converting ...", flush=True)
        start = time.perf_counter()
        path = convert(saved_model, os.path.join(args.output, "model" + EXTENSIONS[fmt]), fmt,
                       crops if fmt == "openvino-int8" else None)
        files[fmt], int8_shares[fmt] = path, None  # TFLite's count; not read from other formats
        speeds[fmt] = RuntimePoseModel(path).milliseconds_per_image()
        print(f"{fmt}: {path} ({file_mib(path):.2f} MiB, {speeds[fmt]:.2f} ms/image, converted in "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    report = {"source": args.model, "saved_model": saved_model, "files": files,
              "int8_keep_float_above": args.int8_keep_float_above, "int8_ranges": args.int8_ranges,
              "equalized": args.equalize,
              "flip_test_in_graph": source.flip_tested}
    if records is not None:
        reference = evaluate_model(source, records, False, args.batch_size, check_images=False)  # checked first
        base = reference.result
        report.update(valid=args.valid, metric=f"{base.metric}@{base.threshold:g}", people=len(records))
        rows = {"source": {"mean": base.mean, "groups": base.groups}}
        for quantization, path in files.items():
            evaluation = evaluate_model(load_pose_model(path), records, False, args.batch_size, check_images=False)
            result = evaluation.result
            distance = crop_pixel_distance(evaluation.keypoints, reference.keypoints, records, image_size)
            rows[quantization] = {"mean": result.mean, "drop": base.mean - result.mean, "groups": result.groups,
                                  "max_crop_px": float(distance.max()), "mean_crop_px": float(distance.mean()),
                                  "mib": file_mib(path), "int8_mac_share": int8_shares[quantization],
                                  "ms_per_image": speeds[quantization]}
        crops = next(iter(build_eval_dataset(records, image_size, args.batch_size, check_images=False)))["image"]
        expected = source.heatmaps(crops).numpy()
        for name, path in files.items():  # the heatmaps themselves, on one batch of validation crops
            rows[name]["heatmap_error"] = float(np.abs(load_pose_model(path).heatmaps(crops).numpy() - expected).max()
                                                / max(float(np.abs(expected).max()), 1e-12))
        report["parity"] = rows
        print(format_parity(report))
    write_json(os.path.join(args.output, "parity.json"), report)
    return report


def file_mib(path: str) -> float:
    """A converted model's size in MiB: an OpenVINO `.xml` with its `.bin`."""
    weights = path[:-4] + ".bin" if path.endswith(".xml") else None
    return (os.path.getsize(path) + (os.path.getsize(weights) if weights and os.path.isfile(weights) else 0)) / 2**20


def format_parity(report: dict) -> str:
    lines = [f"{report['valid']}: {report['people']} people, {report['metric']}, "
             f"flip test {'in the graph' if report['flip_test_in_graph'] else 'off'}",
             f"{'model':<14}{'MiB':>7}{'int8 MACs':>10}{'mean':>8}{'drop':>7}{'max px':>8}{'mean px':>9}"
             f"{'heatmaps':>10}{'ms':>7}",
             "  (keypoint shift from the source in crop px; heatmaps: largest difference from the source's over "
             "its largest value, one batch; ms per image here, batch 1; int8 MACs: TFLite files only)"]
    for name, row in report["parity"].items():
        if name == "source":
            lines.append(f"{'source':<14}{'':>17}{row['mean']:>8.2f}")
        else:
            share = row["int8_mac_share"]
            lines.append(f"{name:<14}{row['mib']:>7.2f}" + (f"{100 * share:>9.1f}%" if share is not None else f"{'-':>10}")
                         + f"{row['mean']:>8.2f}{row['drop']:>7.2f}{row['max_crop_px']:>8.2f}{row['mean_crop_px']:>9.3f}"
                         f"{row['heatmap_error']:>10.1e}{row['ms_per_image']:>7.2f}")
    return "\n".join(lines)


def main(argv=None, prog: str = "convert.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
