"""Predicts keypoints on images, a folder or a video with a SavedModel, a `.keras`, `.tflite`, `.onnx` or OpenVINO `.xml` model.

(`keras-hourglass predict`, `python predict.py`.)

    python predict.py --model runs/synthetic-small/checkpoints/best --input photo.jpg --output out/
    python predict.py --model runs/synthetic-small/model.tflite --input photos/ --output out/
    python predict.py --model model.keras --dataset mpii --input clip.mp4 --every 5 --output out/
    python predict.py --model imported/hg8/saved_model --input photos/ --boxes detections.json --output out/
    python predict.py --model imported/hg8/saved_model --input photo.jpg --box 10,20,200,400 --box 300,40,420,380 \
        --output out/

People: without boxes, each image (or every `--every`-th video frame) is
taken to show one person filling it, as the SavedModel's `serving_default`
signature does: the crop is the image padded to a square. With person
boxes, each box is one person, cropped by the rule of the `boxes` signature
(the box's centre, its longer side x 1.25 as the scale, as for MPII's
centre and scale), so that each person's keypoints are that signature's
answer for the box. Boxes come from `--box X1,Y1,X2,Y2` (repeatable: the
same boxes on every image or frame; pixel-centre coordinates, as the
`boxes` signature takes them) or `--boxes FILE`, a COCO detection-results
JSON (`image_id`, `category_id`, `bbox` `[x, y, width, height]` from pixel
edges, `score`; only persons, `category_id` 1, scoring at least
`--min-box-score`). A detection's `image_id` names its image by the file's
name (`000001.jpg`), its stem (`000001`) or the stem's number (`1`, COCO's
ids), or, for a video, by the frame's index.

A multi-person SavedModel (an imported pose-ae-train network, Associative
Embedding) finds every person itself, bottom-up: the whole image and its
mirror image go through the network, and the joints are grouped into people
by their tags (`keras_hourglass.multiperson.predict_people`, the reference's
`test.py` at one scale; `--detection-threshold`, default its 0.1). Each
person's box then bounds its joints; a joint it lacks has keypoints `[null, null]`
and score 0. Boxes are not taken with such a model.

Writes `keypoints.json`: keypoint names, the skeleton, and per image or
frame its `people`, each with `box` `(x1, y1, x2, y2)` (the image's edges
when the person fills it), `box_score` (the detection's, or null),
`keypoints` `(x, y)` image pixels, `scores` per joint and `score` (the mean
joint score); and `failed`: the images that could not be read, each with
the reason. One overlay PNG per image or frame draws each person in its own
colour with its box (one person filling the image: left/right colours).

Every image is decoded whole first (a truncated or garbled file, or one
smaller than 16 pixels a side, is refused). A bad single image is an error
(exit status 2); in a folder, the bad ones are named, the others predicted,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np

from keras_hourglass.cli import detection_threshold, quiet_tensorflow, run_command
from keras_hourglass.fileio import PARTIAL
from keras_hourglass.joints import JOINT_SPECS, JointSpec, get_joint_spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_MARK = "#frame"  # a video frame's name: clip.mp4#frame000012
MAX_BOXES = 100  # person boxes per image, as COCO's detection results keep at most
CROPS_PER_CALL = 8  # boxes run through the model together: memory stays that of 8 crops, whatever the boxes
MAX_VIDEO_FPS = 1000  # a video that says it has more frames a second says nothing: taken as DEFAULT_FPS
DEFAULT_FPS = 30.0
OVERLAY_FPS_RANGE = (0.1, 1000)  # what MPEG-4 files hold; the overlay video's rate is clamped into it


def build_parser(prog: str = "predict.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SavedModel folder, .keras, .tflite, .onnx or OpenVINO .xml file")
    parser.add_argument("--input", required=True, help="an image, a folder of images, or a video")
    parser.add_argument("--output", required=True, help="folder for keypoints.json and the overlays")
    parser.add_argument("--dataset", default="mpii", choices=tuple(JOINT_SPECS),
                        help="joint names for a .keras model, which carries none (default mpii)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="average with the mirrored image's heatmaps, as training evaluates (default on; a model "
                             "with the flip test in its graph is not flipped twice; off for joints without left/right)")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--box", action="append", metavar="X1,Y1,X2,Y2",
                       help="a person box on every image or frame, pixel-centre coordinates (repeat for more people; "
                            "write --box=-0.5,0,99,99 when the first number is negative)")
    boxes.add_argument("--boxes", metavar="FILE",
                       help="person boxes from a COCO detection-results JSON (image_id, category_id, bbox, score)")
    parser.add_argument("--min-box-score", type=float, default=0.0,
                        help="--boxes: keep detections scoring at least this (default 0: all)")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="multi-person models: the lowest heatmap value a joint is found at (default 0.1, the "
                             "reference's)")
    parser.add_argument("--every", type=int, default=1, help="video: every N-th frame")
    parser.add_argument("--smooth", action="store_true",
                        help="video: smooth each person's keypoints over time (1-euro filter)")
    parser.add_argument("--no-overlays", action="store_true", help="write the JSON only")
    return parser


def box_argument(text: str) -> list[float]:
    """`--box X1,Y1,X2,Y2` as four finite numbers with x2 > x1 and y2 > y1."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    from keras_hourglass.data.coco import MAX_BOX_COORDINATE, MIN_BOX_SIDE

    if (len(values) != 4 or not np.isfinite(values).all() or values[2] - values[0] < MIN_BOX_SIDE
            or values[3] - values[1] < MIN_BOX_SIDE or np.abs(values).max() > MAX_BOX_COORDINATE):
        raise ValueError(f"--box: expected X1,Y1,X2,Y2, four numbers with X2 - X1 and Y2 - Y1 at least "
                         f"{MIN_BOX_SIDE} pixel, each within {MAX_BOX_COORDINATE:,} pixels of the origin; got "
                         f"{text!r}.")
    return values


def check_boxes(boxes, image, where: str) -> None:
    """At most `MAX_BOXES` boxes, each overlapping `image` (a box beside the photo holds nobody of it)."""
    if len(boxes) > MAX_BOXES:
        raise ValueError(f"{where}: {len(boxes)} person boxes; at most {MAX_BOXES} are taken per image "
                         "(--min-box-score keeps the likelier ones).")
    height, width = image.shape[:2]
    for box in boxes:
        x1, y1, x2, y2 = box
        if x2 < -0.5 or y2 < -0.5 or x1 > width - 0.5 or y1 > height - 0.5:
            raise ValueError(f"{where}: the box {[round(float(v), 2) for v in box]} lies outside the "
                             f"{width}x{height} image.")


def detection_keys(name: str) -> list:
    """The `image_id` values that name an image file `name` (name, stem, the stem's number) or a video frame (its index)."""
    if FRAME_MARK in name:
        return [int(name.rpartition(FRAME_MARK)[2])]
    stem = os.path.splitext(name)[0]
    return [name, stem] + ([int(stem)] if stem.isdigit() else [])


def rounded(values, decimals: int) -> list:
    """`values` as JSON lists rounded to `decimals` (through float64, so that 12.84 is written as 12.84); NaN as null."""
    values = np.round(np.asarray(values, np.float64), decimals)
    return np.where(np.isnan(values), None, values).tolist()


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
    from keras_hourglass.data.records import decode_photo, read_image_file

    data, problem = read_image_file(path)
    return (None, problem) if problem else decode_photo(data, path)


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
                yield f"{os.path.basename(path)}{FRAME_MARK}{index:06d}", frame[..., ::-1], None
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


class People:
    """Finds the people of one image: `find(name, image) -> (boxes, box scores, keypoints, scores, person scores)`.

    Bottom-up with a multi-person model; otherwise top-down, one person per
    box (from `--box`, from the detections by the image's id, or the whole
    image). Keypoints `[P, K, 2]` are image pixels; a joint a multi-person
    model did not find is NaN with score 0.
    """

    def __init__(self, args: argparse.Namespace, detections: dict | None):
        from keras_hourglass.multiperson import is_multi_person, load_multi_person_model

        self.args, self.detections, self.matched = args, detections, set()
        self.multi_person = os.path.isdir(args.model) and is_multi_person(args.model)
        if self.multi_person and (args.box or detections is not None):
            raise ValueError(f"{args.model}: a multi-person model finds every person itself; --box and --boxes are "
                             "for single-person models (one person per box).")
        threshold = detection_threshold(args.detection_threshold, self.multi_person)
        if self.multi_person:
            from keras_hourglass.codec import AssociativeEmbeddingCodec

            self.codec = AssociativeEmbeddingCodec(detection_threshold=threshold)
            self.model = load_multi_person_model(args.model)
            self.names, self.size = self.model.keypoint_names, self.model.input_size
            self.spec = JointSpec("multi-person", tuple(self.names), limbs=self.model.limbs)
        else:
            self.spec = get_joint_spec(args.dataset)
            self.predict, self.size, pose_model = load_predictor(args.model, self.spec, args.flip_test)
            self.names = pose_model.keypoint_names
            if list(self.names) != list(self.spec.names):  # a model of another skeleton: its own names and limbs
                self.spec = JointSpec("custom", tuple(self.names), limbs=pose_model.limbs)
        self.boxed = self.multi_person or bool(args.box) or detections is not None  # else: one filling the image

    def find(self, name: str, image):
        from keras_hourglass.inference import box_crops, whole_image_crop
        from keras_hourglass.multiperson import predict_people

        if self.multi_person:  # bottom-up: the people found, each boxed by its joints
            keypoints, scores, person_scores = predict_people(self.model, image, self.codec,
                                                              flip_test=self.args.flip_test)
            keypoints = np.where((scores > 0)[..., None], keypoints, np.nan)  # a joint the person lacks
            boxes = [np.concatenate([np.nanmin(points, 0), np.nanmax(points, 0)]) for points in keypoints]
            return boxes, [None] * len(boxes), keypoints, scores, person_scores
        height, width = image.shape[:2]
        if self.detections is not None:  # every id that names the image: its file name, stem or number
            keys = [k for k in detection_keys(name) if k in self.detections]
            self.matched.update(keys)
            found = sorted((item for k in keys for item in self.detections[k]), key=lambda item: -item[1])
            boxes, box_scores = [box for box, _ in found], [score for _, score in found]
        elif self.args.box:
            boxes, box_scores = self.args.box, [None] * len(self.args.box)
        else:  # one person filling the image: its edges as the box
            boxes, box_scores = [[-0.5, -0.5, width - 0.5, height - 0.5]], [None]
        if not boxes:
            joints = len(self.names)
            return [], [], np.zeros((0, joints, 2)), np.zeros((0, joints)), np.zeros(0)
        if not self.boxed:
            keypoints, scores = self.predict(*whole_image_crop(image, self.size))
            return boxes, box_scores, keypoints, scores, scores.mean(axis=1)
        check_boxes(boxes, image, name)
        found = [self.predict(*box_crops(image, boxes[i:i + CROPS_PER_CALL], self.size))
                 for i in range(0, len(boxes), CROPS_PER_CALL)]
        keypoints, scores = (np.concatenate(parts) for parts in zip(*found))
        return boxes, box_scores, keypoints, scores, scores.mean(axis=1)


def run(args: argparse.Namespace) -> dict:
    """Predicts every image or frame; a bad one in a folder is named and skipped, and `failed` counts them."""
    if args.every < 1:
        raise ValueError(f"--every must be positive, got {args.every}.")
    if not os.path.exists(args.input):
        raise ValueError(f"{args.input}: no such file or folder.")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output}: a file is there; give a folder.")
    quiet_tensorflow()  # the box checks import the data package, which starts TensorFlow
    args.box = [box_argument(text) for text in args.box or []]
    if args.min_box_score != 0.0 and not args.boxes:
        raise ValueError("--min-box-score applies to --boxes FILE only.")
    if not np.isfinite(args.min_box_score):
        raise ValueError(f"--min-box-score must be a finite number, got {args.min_box_score}.")
    video = os.path.isfile(args.input) and args.input.lower().endswith(VIDEO_EXTENSIONS)
    if args.smooth and not video:
        raise ValueError("--smooth is for a video (each person's keypoints over its frames).")
    if args.every != 1 and not video:
        raise ValueError("--every is for a video (every N-th frame).")
    detections = None
    if args.boxes:
        from keras_hourglass.data.coco import read_person_detections

        detections = read_person_detections(args.boxes, args.min_box_score)
    from keras_hourglass.fileio import write_json
    from keras_hourglass.plotting import plot_pose_overlay, save_figure

    people_in = People(args, detections)
    spec = people_in.spec
    track = VideoTrack(args) if video else None
    results, failed, overlays = [], [], set()
    with contextlib.ExitStack() as cleanup:
        if track is not None:
            cleanup.enter_context(track)
        for name, image, problem in frames(args.input, args.every):
            if problem:
                print(f"error: {problem}; skipped", file=sys.stderr)
                failed.append({"source": name, "error": problem})
                continue
            boxes, box_scores, keypoints, scores, person_scores = people_in.find(name, image)
            ids = None if track is None else track.follow(name, keypoints, scores, boxes)  # smooths with --smooth
            people = [{"box": rounded(box, 2), "box_score": box_score, "keypoints": rounded(points, 2),
                       "scores": rounded(peaks, 4), "score": rounded(score, 4)}
                      for box, box_score, points, peaks, score in zip(boxes, box_scores, keypoints, scores,
                                                                      person_scores)]
            for person, person_id in zip(people, ids or []):
                person["id"] = person_id
            entry = {"source": name, "people": people}
            if not args.no_overlays:
                if people_in.boxed:
                    labels = [str(i) for i in ids] if ids else [str(i + 1) for i in range(len(boxes))]
                    figure = plot_pose_overlay(image, keypoints, spec, scores, title=name, boxes=boxes, labels=labels)
                else:
                    figure = plot_pose_overlay(image, keypoints[0], spec, scores[0], title=name)
                if track is not None:
                    track.write(figure)
                else:
                    stem, extension = os.path.splitext(name)
                    if stem in overlays:  # x.jpg and x.png in one folder: keep both overlays
                        stem = f"{stem}_{extension.lstrip('.')}"
                    overlays.add(stem)
                    entry["overlay"] = save_figure(figure, os.path.join(args.output, f"{stem}.png"))
            results.append(entry)
    report = {"model": args.model, "keypoint_names": list(people_in.names),
              "limbs": [list(limb) for limb in spec.limbs], "input_size": list(people_in.size),
              "flip_test": bool(args.flip_test), "multi_person": people_in.multi_person, "results": results,
              "failed": failed}
    if people_in.multi_person:
        report["detection_threshold"] = people_in.codec.detection_threshold
    if track is not None:
        report.update(track.summary())
    path = write_json(os.path.join(args.output, "keypoints.json"), report, indent=1)
    count = sum(len(entry["people"]) for entry in results)
    print(f"{len(results)} {'frame' if video else 'image'}(s), {count} {'person' if count == 1 else 'people'} -> {path}"
          + (f"; {len(failed)} failed (listed there)" if failed else "")
          + (f"; overlay video {report['overlay_video']}" if report.get("overlay_video") else ""))
    if detections is not None:
        unmatched = len(set(detections) - people_in.matched)
        if unmatched:
            print(f"note: {unmatched} image id(s) of {args.boxes} named none of the inputs (ids match a file's name, "
                  "its stem or the stem's number, or a video frame's index)")
    return report


class VideoTrack:
    """A video's people over its frames: ids (`PersonTracker`), optional smoothing (`OneEuroFilter`) and the
    overlay video `<video>_overlay.mp4` beside the JSON (written whole, then renamed; a failed run leaves none).
    Its frames are the overlays, at the video's rate divided by `--every` (kept within `OVERLAY_FPS_RANGE`).

    Used as a context manager around the frames.
    """

    def __init__(self, args: argparse.Namespace):
        import cv2

        from keras_hourglass.tracking import PersonTracker

        capture = cv2.VideoCapture(args.input)
        rate = capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        # a file that does not say, or says nonsense: the common rate
        self.fps = rate if rate and 0 < rate <= MAX_VIDEO_FPS else DEFAULT_FPS
        low, high = OVERLAY_FPS_RANGE
        self.overlay_fps = min(max(self.fps / args.every, low), high)
        self.smooth, self.filters, self.tracker = args.smooth, {}, PersonTracker()
        self.path = None if args.no_overlays else os.path.join(
            args.output, os.path.splitext(os.path.basename(args.input))[0] + "_overlay.mp4")
        if self.path is not None and os.path.isdir(self.path):
            raise ValueError(f"{self.path}: a folder is where the overlay video goes; move it or choose another "
                             "--output.")
        self.every, self.writer = args.every, None

    def __enter__(self):
        return self

    def __exit__(self, error_type, *_):
        if self.writer is None:
            return False
        self.writer.release()
        if error_type is None:
            os.replace(self.temporary, self.path)
        else:  # a failed run leaves no half-written video
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.temporary)
        return False

    def follow(self, name: str, keypoints, scores, boxes) -> list[int]:
        """The people's ids in this frame; with smoothing, `keypoints` are smoothed in place."""
        from keras_hourglass.tracking import OneEuroFilter

        ids = self.tracker.update(keypoints, scores > 0, boxes)
        if self.smooth:
            seconds = int(name.rpartition(FRAME_MARK)[2]) / self.fps
            for row, person_id in enumerate(ids):
                keypoints[row] = self.filters.setdefault(person_id, OneEuroFilter()).filter(keypoints[row], seconds)
        return ids

    def write(self, figure) -> None:
        import cv2

        from keras_hourglass.plotting import figure_pixels

        pixels = figure_pixels(figure)
        if self.writer is None:
            height, width = pixels.shape[:2]
            self.size = (width, height)
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.temporary = os.path.splitext(self.path)[0] + PARTIAL + ".mp4"
            self.writer = cv2.VideoWriter(self.temporary, cv2.VideoWriter_fourcc(*"mp4v"), self.overlay_fps,
                                          self.size)
            if not self.writer.isOpened():
                raise ValueError(f"{self.path}: OpenCV cannot write an MP4 video here.")
        if pixels.shape[1::-1] != self.size:
            pixels = cv2.resize(pixels, self.size)
        self.writer.write(np.ascontiguousarray(pixels[..., ::-1]))

    def summary(self) -> dict:
        return {"fps": self.fps, "smoothing": "one-euro" if self.smooth else None,
                "overlay_video": self.path if self.writer is not None else None,
                "overlay_fps": self.overlay_fps if self.writer is not None else None}


def main(argv=None, prog: str = "predict.py") -> int:
    """Exit status 0, 2 for bad arguments or input, 1 when some images of a folder failed (named in the JSON)."""
    outcome = {}
    code = run_command(prog, lambda args: outcome.update(run(args)), build_parser(prog).parse_args(argv))
    return 1 if code == 0 and outcome.get("failed") else code
