"""Predicts keypoints on images, a folder or a video with a SavedModel, a `.keras` or a `.tflite` model.

(`keras-hourglass predict`, `python predict.py`.)

    python predict.py --model runs/synthetic-small/checkpoints/best --input photo.jpg --output out/
    python predict.py --model runs/synthetic-small/model.tflite --input photos/ --output out/
    python predict.py --model model.keras --dataset mpii --input clip.mp4 --every 5 --output out/

Each image (or every `--every`-th video frame) is taken to show one person
filling it, as the SavedModel's `serving_default` signature does: the crop is
the image padded to a square, through the project's one warp
(`keras_hourglass.transforms`), and keypoints are mapped back to the image's
pixels. Writes `keypoints.json` (keypoint names, the skeleton, per image or
frame the `(x, y)` pixels and scores, and `failed`: the images that could not
be read, each with the reason) and one overlay PNG per image or frame.

Every image is decoded whole first (a truncated or garbled file, or one
smaller than 16 pixels a side, is refused). A bad single image is an error
(exit status 2); in a folder, the bad ones are named, the others predicted,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_hourglass.cli import quiet_tensorflow, run_command
from keras_hourglass.joints import JOINT_SPECS, JointSpec, get_joint_spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def build_parser(prog: str = "predict.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SavedModel folder, .keras or .tflite file")
    parser.add_argument("--input", required=True, help="an image, a folder of images, or a video")
    parser.add_argument("--output", required=True, help="folder for keypoints.json and the overlays")
    parser.add_argument("--dataset", default="mpii", choices=tuple(JOINT_SPECS),
                        help="joint names for a .keras model, which carries none (default mpii)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="average with the mirrored image's heatmaps, as training evaluates (default on; a model "
                             "with the flip test in its graph is not flipped twice; off for joints without left/right)")
    parser.add_argument("--every", type=int, default=1, help="video: every N-th frame")
    parser.add_argument("--no-overlays", action="store_true", help="write the JSON only")
    return parser


def load_predictor(path: str, spec, flip_test: bool = True):
    """`(predict(crops, transform) -> (keypoints in original pixels, scores), input size, PoseModel)`.

    `crops` are float32 `[N, S, S, 3]` in `[0, 1]`, `transform` the `[N, 2, 3]`
    maps from crop to original pixels, as in `keras_hourglass.inference`.
    """
    from keras_hourglass.inference import crop_predictor
    from keras_hourglass.pose_model import load_pose_model

    pose_model = load_pose_model(path, spec.names, spec.flip_index)
    predict = crop_predictor(pose_model, flip_test and pose_model.codec.flip_index is not None)
    return (lambda crops, transform: tuple(t.numpy() for t in predict(crops, transform)),
            tuple(pose_model.codec.image_size), pose_model)


def read_image(path: str):
    """`(RGB uint8 image, None)`, or `(None, what is wrong)`: `keras_hourglass.data.records.decode_photo` of a file."""
    from keras_hourglass.data.records import decode_photo

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        return None, f"cannot read image file {path}: {error}"
    return decode_photo(data, path)


def frames(path: str, every: int = 1):
    """Yields `(name, RGB uint8 image or None, problem or None)` for an image, a folder of images or a video."""
    import cv2

    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise ValueError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder.")
        for name in names:
            yield (name, *read_image(os.path.join(path, name)))
        return
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file or folder.")
    extension = os.path.splitext(path)[1].lower()
    if extension in VIDEO_EXTENSIONS:
        video = cv2.VideoCapture(path)
        if not video.isOpened():
            raise ValueError(f"{path}: cannot open the video.")
        index = 0
        while True:
            ok, frame = video.read()
            if not ok:
                break
            if index % every == 0:
                yield f"{os.path.basename(path)}#frame{index:06d}", frame[..., ::-1], None
            index += 1
        video.release()
        return
    if extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or video "
                         f"({', '.join(VIDEO_EXTENSIONS)}).")
    image, problem = read_image(path)
    if problem:
        raise ValueError(problem + ".")
    yield os.path.basename(path), image, None


def run(args: argparse.Namespace) -> dict:
    """Predicts every image or frame; a bad one in a folder is named and skipped, and `failed` counts them."""
    if args.every < 1:
        raise ValueError(f"--every must be positive, got {args.every}.")
    if not os.path.exists(args.input):
        raise ValueError(f"{args.input}: no such file or folder.")
    quiet_tensorflow()
    from keras_hourglass.fileio import write_json
    from keras_hourglass.inference import predict_image
    from keras_hourglass.plotting import plot_pose_overlay, save_figure

    spec = get_joint_spec(args.dataset)
    predict, size, pose_model = load_predictor(args.model, spec, args.flip_test)
    names = pose_model.keypoint_names
    if list(names) != list(spec.names):  # a model of another skeleton: its own names and limbs
        spec = JointSpec("custom", tuple(names), limbs=pose_model.limbs)
    results, failed, overlays = [], [], set()
    for name, image, problem in frames(args.input, args.every):
        if problem:
            print(f"error: {problem}; skipped", file=sys.stderr)
            failed.append({"source": name, "error": problem})
            continue
        keypoints, scores = predict_image(predict, size, image)
        entry = {"source": name, "keypoints": keypoints.round(2).tolist(), "scores": scores.round(4).tolist()}
        if not args.no_overlays:
            stem, extension = os.path.splitext(name.replace("#", "_"))
            if stem in overlays:  # x.jpg and x.png in one folder: keep both overlays
                stem = f"{stem}_{extension.lstrip('.')}"
            overlays.add(stem)
            entry["overlay"] = save_figure(plot_pose_overlay(image, keypoints, spec, scores, title=name),
                                           os.path.join(args.output, f"{stem}.png"))
        results.append(entry)
    report = {"model": args.model, "keypoint_names": list(names), "limbs": [list(limb) for limb in spec.limbs],
              "input_size": list(size), "results": results, "failed": failed}
    path = write_json(os.path.join(args.output, "keypoints.json"), report, indent=1)
    print(f"{len(results)} image(s) -> {path}" + (f"; {len(failed)} failed (listed there)" if failed else ""))
    return report


def main(argv=None, prog: str = "predict.py") -> int:
    """Exit status 0, 2 for bad arguments or input, 1 when some images of a folder failed (named in the JSON)."""
    outcome = {}
    code = run_command(prog, lambda args: outcome.update(run(args)), build_parser(prog).parse_args(argv))
    return 1 if code == 0 and outcome.get("failed") else code
