"""Predicts keypoints on images, a folder or a video with a SavedModel, a `.keras` or a `.tflite` model.

(`keras-hourglass predict`, `python predict.py`.)

    python predict.py --model runs/synthetic-small/checkpoints/best --input photo.jpg --output out/
    python predict.py --model runs/synthetic-small/model.tflite --input photos/ --output out/
    python predict.py --model model.keras --dataset mpii --input clip.mp4 --every 5 --output out/

Each image (or every `--every`-th video frame) is taken to show one person
filling it, as the SavedModel's `serving_default` signature does: the crop is
the image padded to a square, through the project's one warp
(`keras_hourglass.transforms`), and keypoints are mapped back to the image's
pixels. Writes `keypoints.json` (keypoint names and, per image or frame, the
`(x, y)` pixels and scores) and one overlay PNG per image or frame.
"""

from __future__ import annotations

import argparse
import os

import cv2

from keras_hourglass.cli import run_command
from keras_hourglass.fileio import write_json
from keras_hourglass.inference import crop_predictor, predict_image
from keras_hourglass.joints import JointSpec, get_joint_spec
from keras_hourglass.plotting import plot_pose, save_figure
from keras_hourglass.pose_model import load_pose_model

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def build_parser(prog: str = "predict.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SavedModel folder, .keras or .tflite file")
    parser.add_argument("--input", required=True, help="an image, a folder of images, or a video")
    parser.add_argument("--output", required=True, help="folder for keypoints.json and the overlays")
    parser.add_argument("--dataset", default="mpii", choices=("mpii", "flic"),
                        help="joint names for a .keras model, which carries none (default mpii)")
    parser.add_argument("--every", type=int, default=1, help="video: every N-th frame")
    parser.add_argument("--no-overlays", action="store_true", help="write the JSON only")
    return parser


def load_predictor(path: str, spec):
    """`(predict(crops, transform) -> (keypoints in original pixels, scores), input size, names)`.

    `crops` are float32 `[N, S, S, 3]` in `[0, 1]`, `transform` the `[N, 2, 3]`
    maps from crop to original pixels, as in `keras_hourglass.inference`.
    """
    pose_model = load_pose_model(path, spec.names, spec.flip_index)
    predict = crop_predictor(pose_model)
    return (lambda crops, transform: tuple(t.numpy() for t in predict(crops, transform)),
            tuple(pose_model.codec.image_size), pose_model.keypoint_names)


def frames(path: str, every: int = 1):
    """Yields `(name, RGB uint8 image)` for an image, a folder of images or a video."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise ValueError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder.")
        for name in names:
            yield from frames(os.path.join(path, name))
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
                yield f"{os.path.basename(path)}#frame{index:06d}", frame[..., ::-1]
            index += 1
        video.release()
        return
    if extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or video "
                         f"({', '.join(VIDEO_EXTENSIONS)}).")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode the image.")
    yield os.path.basename(path), image[..., ::-1]


def run(args: argparse.Namespace) -> dict:
    if args.every < 1:
        raise ValueError(f"--every must be positive, got {args.every}.")
    spec = get_joint_spec(args.dataset)
    predict, size, names = load_predictor(args.model, spec)
    if list(names) != list(spec.names):  # a SavedModel of another skeleton: names only, no limbs
        spec = JointSpec("custom", tuple(names))
    os.makedirs(args.output, exist_ok=True)
    results = []
    for name, image in frames(args.input, args.every):
        keypoints, scores = predict_image(predict, size, image)
        entry = {"source": name, "keypoints": keypoints.round(2).tolist(), "scores": scores.round(4).tolist()}
        if not args.no_overlays:
            stem = os.path.splitext(name.replace("#", "_"))[0]
            entry["overlay"] = save_figure(plot_pose(image, keypoints, spec, scores, title=name),
                                           os.path.join(args.output, f"{stem}.png"))
        results.append(entry)
    report = {"model": args.model, "keypoint_names": list(names), "input_size": list(size), "results": results}
    path = write_json(os.path.join(args.output, "keypoints.json"), report, indent=1)
    print(f"{len(results)} image(s) -> {path}")
    return report


def main(argv=None, prog: str = "predict.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
