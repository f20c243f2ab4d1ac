"""The inference server: an exported SavedModel behind KServe's Python model server, and the web page on top.

`serve` runs `PoseServingModel` in `kserve.ModelServer`, which brings the
protocols; this module only turns requests into calls of the SavedModel's
signatures (`keras_hourglass.export`) and answers back:

* V1, TensorFlow Serving's REST API: `POST /v1/models/NAME:predict` with
  `{"signature_name": ..., "instances": [...]}` (or the columnar
  `"inputs"`), answered by `{"predictions": [{"keypoints", "scores"}, ...]}`.
  An instance is an image (nested lists `[H, W, 3]` of 0-255 integers, or
  `{"b64": <base64 JPEG/PNG file>}`), or for the `boxes` and `center_scale`
  signatures a dict `{"images": ..., "boxes": [x1, y1, x2, y2]}` /
  `{"images": ..., "center": [x, y], "scale": s}`.
  `"output_filter": ["keypoints", "scores", "heatmaps"]` chooses the outputs.
* V2, the Open Inference Protocol: `POST /v2/models/NAME/infer` with the
  input `images` (`UINT8` `[N, H, W, 3]`, or `BYTES` `[N]` of encoded
  JPEG/PNG/BMP files, base64 in JSON) and optionally `boxes` (`[N, 4]`) or
  `center` (`[N, 2]`) and `scale` (`[N]`); outputs `keypoints` `FP32`
  `[N, K, 2]` and `scores` `[N, K]`, `heatmaps` only when the request's
  `outputs` names it. `GET /v2/models/NAME` adds the joint names, limbs and
  input size under `parameters`. One image with `M` boxes (or centres and
  scales), in V2 or in V1's columnar `inputs`, is `M` people of that image:
  `M` rows out, as if the image had been sent once per box.
* A multi-person SavedModel (`keras_hourglass.multiperson`) takes whole
  images only (no boxes, centre or scale) and answers every person found
  (`predict_people`, flip test on): V2 outputs are rows, one per person,
  `keypoints` `FP32` `[P, K, 2]`, `scores` `[P, K]` (0 for a joint the
  person lacks), `person_scores` `[P]` and `image_index` `INT32` `[P]` (the
  image of the request each person is in); V1 answers each image's people,
  `{"predictions": [{"keypoints": [...], "scores": [...], "person_scores":
  [...]}, ...]}`. The metadata's `parameters.multi_person` says which kind
  of model is served.
* `/` and `/web/`: the page (`keras_hourglass/web/`, static files).

Keypoints are `(x, y)` pixels of the image sent. Encoded files are checked
by TensorFlow's decoder and read with OpenCV, as `predict` reads them
(`keras_hourglass.data.records.decode_photo`). Limits: the request body
(`max_body_bytes`, answered 413), the image side (`max_image_side`, 400,
checked from a file's header before decoding) and the time a request may
take (`request_timeout`, 504). Every bad request is answered 4xx with
`{"error": message}` and the server goes on serving; SIGTERM lets the
requests in flight finish, then the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
import uuid
import warnings

import numpy as np

DEFAULT_NAME = "hourglass"
DEFAULT_PORT = 8080
MAX_BODY_BYTES = 32 * 1024 * 1024  # a few phone photos, base64-encoded
MAX_IMAGE_SIDE = 4096  # pixels
REQUEST_TIMEOUT = 30.0  # seconds
MAX_IMAGES = 32  # images in one request
MAX_PERSON_SCALE = 100.0  # a person box of 20,000 pixels: ten times the largest image side accepted
MIN_PERSON_SCALE = 0.005  # a person box of one pixel: the smallest crop that has a meaning
MAX_PIXELS = 64 * 2**20  # decoded pixels in one request, summed over its images (checked from the file headers)
WORKERS = 2  # threads that decode and run the model; requests beyond them wait in the queue
# Values (numbers, strings) in one JSON body: KServe parses JSON on the event loop, where 2 Mi numbers in nested
# lists take about 0.3 s (orjson, 2 cores of a Xeon) and hold up every other request, the health check included.
# Images past 1 Mi values (590x590 RGB as lists) come as files (base64) or in the binary extension instead.
MAX_JSON_VALUES = 2**20
MAX_QUEUED = 16  # requests running or waiting; beyond it a request is answered 503 at once
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
MAX_CONNECTIONS = 900  # open connections and requests at once (`serve` raises the descriptor limit to fit)
HEADER_TIMEOUT = 10  # seconds a connection has to send a request's headers (`header_timeout_protocol`)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# What a prediction POST may carry: a cross-site page can send only form and text/plain bodies without asking
# first (a CORS preflight, which this server never answers with CORS headers), so those are refused.
POST_CONTENT_TYPES = ("application/json", "application/octet-stream", "multipart/form-data")
OUTPUTS = ("keypoints", "scores", "heatmaps")
DEFAULT_OUTPUTS = ("keypoints", "scores")
# A multi-person model's outputs: every person found, as rows; `image_index` says whose image each row is.
PEOPLE_OUTPUTS = ("keypoints", "scores", "person_scores", "image_index")
# The signatures that take whole images, and the inputs each takes besides `images`.
SIGNATURE_INPUTS = {"serving_default": (), "boxes": ("boxes",), "center_scale": ("center", "scale")}
WEB_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")


def import_kserve():
    """Imports `kserve` with `sys.argv` hidden: it parses the command line of whoever imports it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
        import kserve.model_server  # noqa: F401
    finally:
        sys.argv = saved
    return kserve


@dataclasses.dataclass
class EncodedImage:
    """An image file of a request, checked from its header, to be decoded once all of the request's fit."""

    data: bytes
    field: str


class Abandoned(Exception):
    """The request was answered 504 while its work ran: the work stops (see `PoseServingModel.predict`)."""


class BadRequest(ValueError):
    """A request the model cannot answer; the server answers it with 400 and the message."""


def graph_error_line(message: str) -> str:
    """The line of a TensorFlow runtime error's message that says what went wrong (at most 300 characters).

    Such a message starts with "Graph execution error:" and where the failing op was defined (or "<stack
    traces unavailable>" for a loaded SavedModel), then the op's own words (an assertion's text, a missing
    file), then the node's name.
    """
    for line in message.splitlines():
        line = line.strip()
        if line and line not in ("Graph execution error:", "<stack traces unavailable>") and not line.startswith(
                ("Detected at node", "File ", "[[")):
            return line.split(" [Op:")[0][:300]
    return message.strip()[:300]


@dataclasses.dataclass
class PoseRequest:
    """One request, whatever its protocol: the signature, its inputs, and the outputs asked for.

    `images` is a uint8 array `[N, H, W, 3]`, or a list of `[H, W, 3]` arrays when the images differ in size.
    """

    signature: str
    images: object
    extra: dict
    outputs: tuple = DEFAULT_OUTPUTS

    @property
    def count(self) -> int:
        return len(self.images)


def check_image(image: np.ndarray, field: str, max_side: int) -> np.ndarray:
    """`image` `[H, W, 3]` uint8 with 1 to `max_side` pixels a side."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise BadRequest(f"{field} must be an image [height, width, 3] (RGB); got shape {list(image.shape)}.")
    if min(image.shape[:2]) < 1:
        raise BadRequest(f"{field} is empty: shape {list(image.shape)}; an image needs at least 1x1 pixels.")
    if max(image.shape[:2]) > max_side:
        raise BadRequest(f"{field} is {image.shape[1]}x{image.shape[0]} pixels; at most {max_side} pixels a side "
                         "are accepted.")
    return image


def pixel_array(value, field: str) -> np.ndarray:
    """JSON numbers (nested lists) as uint8, refusing anything that is not an integer from 0 to 255."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise BadRequest(f"{field} must be a rectangular array of pixels; its rows differ in length.") from None
    if array.dtype.kind not in "iub" or array.size and (array.min() < 0 or array.max() > 255):
        kind = {"f": "floats", "U": "strings", "O": "mixed values"}.get(array.dtype.kind, str(array.dtype))
        raise BadRequest(f"{field} must hold uint8 pixels (integers 0 to 255); got {kind}" +
                         (f" from {array.min()} to {array.max()}" if array.dtype.kind in "iuf" and array.size else "")
                         + ".")
    return array.astype(np.uint8)


def number_rows(value, field: str, columns: int | None, count: int) -> np.ndarray:
    """`value` as float32 `[count, columns]` (`[count]` when `columns` is None) of finite numbers."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(f"{field} must be numbers.") from None
    expected = [count, columns] if columns else [count]
    if list(array.shape) != expected:
        raise BadRequest(f"{field} must have shape {expected} (one row per image); got {list(array.shape)}.")
    if not np.all(np.isfinite(array)):
        raise BadRequest(f"{field} must be finite numbers; got {array.tolist()}.")
    return array


def check_extra(signature: str, extra: dict, count: int) -> dict:
    """The inputs of `signature` besides the images, shaped and checked as its graph expects."""
    if signature == "boxes":
        boxes = number_rows(extra.get("boxes"), "boxes", 4, count)
        if np.any(np.abs(boxes) > MAX_PERSON_SCALE * 200):
            raise BadRequest(f"boxes must lie near the image (|coordinates| at most {MAX_PERSON_SCALE * 200:g} "
                             f"pixels); got {boxes.tolist()}.")
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise BadRequest(f"boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1; got {boxes.tolist()}.")
        return {"boxes": boxes}
    if signature == "center_scale":
        center = number_rows(extra.get("center"), "center", 2, count)
        scale = number_rows(extra.get("scale"), "scale", None, count)
        if np.any(scale < MIN_PERSON_SCALE):
            raise BadRequest(f"scale must be at least {MIN_PERSON_SCALE:g} (units of 200 pixels: a person of one "
                             f"pixel); got {scale.tolist()}.")
        if np.any(scale > MAX_PERSON_SCALE) or np.any(np.abs(center) > MAX_PERSON_SCALE * 200):
            raise BadRequest(f"center and scale must describe a person near the image: scale at most "
                             f"{MAX_PERSON_SCALE:g} (units of 200 pixels), |center| at most "
                             f"{MAX_PERSON_SCALE * 200:g} pixels; got center {center.tolist()}, scale {scale.tolist()}.")
        return {"center": center, "scale": scale}
    return {}


def one_line_for_bad_requests(record: logging.LogRecord) -> bool:
    """KServe logs every refused request (`InvalidInput`: a 4xx; a model not ready: a 503) as an error with a
    traceback; keep one warning line.

    Errors of the server itself keep their traceback.
    """
    error = record.exc_info[1] if record.exc_info else None
    if error is not None and type(error).__name__ in ("InvalidInput", "ModelNotFound", "ModelNotReady"):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = f"refused a request: {error}", (), None, None
    return True


class PoseServingModel:
    """Loads an exported SavedModel and answers V1 and V2 requests with its image signatures.

    Built by `pose_serving_model` as a subclass of `kserve.Model` (imported only when serving).
    """

    def __init__(self, name: str, source, max_image_side: int = MAX_IMAGE_SIDE,
                 detection_threshold: float | None = None):
        from keras_hourglass.export import MULTI_PERSON_FORMAT, read_saved_model_metadata

        super().__init__(name)
        self.source = source
        self.max_image_side = max_image_side
        self.workers = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="pose")
        self.metadata = read_saved_model_metadata(source) if isinstance(source, str) else source.metadata()
        # A multi-person SavedModel (keras_hourglass.multiperson) finds every person of a whole image itself.
        self.multi_person = self.metadata.get("format") == MULTI_PERSON_FORMAT
        self.output_names = PEOPLE_OUTPUTS if self.multi_person else OUTPUTS
        self.default_outputs = PEOPLE_OUTPUTS if self.multi_person else DEFAULT_OUTPUTS
        self.detection_threshold = detection_threshold

    def load(self) -> bool:
        """Loads the SavedModel (or takes the estimator's functions); ready then, with the first calls after it.

        A signature's first call builds its graph, about 4 s for a full-size 8-stack model on 2 cores; no
        request needs that done before the server answers, so `serve` makes each signature's first call
        (`call_each_signature`) in threads once KServe has taken the ready model, and a request that comes
        meanwhile runs beside it.

        TensorFlow's graph optimizer (grappler) is turned off for the server's process first: it rewrites
        the whole network graph on the first call of each signature, which made that call take 10.4 s
        instead of 2.6 s for a full-size 8-stack model, and the calls after it were no faster (median
        415 ms with it, 411 ms without; keypoints equal to 1e-4 px; 2 cores of an AVX-512 Xeon).
        """
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

        if self.multi_person:
            from keras_hourglass.codec import AssociativeEmbeddingCodec
            from keras_hourglass.multiperson import load_multi_person_model

            self.people_model = load_multi_person_model(self.source)
            self.codec = AssociativeEmbeddingCodec(**({} if self.detection_threshold is None else
                                                      {"detection_threshold": self.detection_threshold}))
            self.detection_threshold = self.codec.detection_threshold
        elif isinstance(self.source, str):
            loaded = tf.saved_model.load(self.source)
            missing = sorted(set(SIGNATURE_INPUTS) - set(loaded.signatures))
            if missing:
                raise ValueError(f"{self.source}: the SavedModel has no signature {', '.join(missing)}.")
            self._loaded = loaded
            self.signatures = {name: loaded.signatures[name] for name in SIGNATURE_INPUTS}
            for name, function in self.signatures.items():
                lacking = sorted(set(OUTPUTS) - set(function.structured_outputs))
                if lacking:
                    raise ValueError(f"{self.source}: the SavedModel's signature {name} has no output "
                                     f"{', '.join(lacking)}; was it written by keras_hourglass.export_saved_model?")
        else:  # a PoseEstimator in this process: its graph functions, the same as its SavedModel's signatures
            self.signatures = {name: getattr(self.source, name) for name in SIGNATURE_INPUTS}
        self.ready = True
        return True

    def call_each_signature(self) -> None:
        """One call of each image signature (the people signature of a multi-person model) on a blank image.

        A model that fails its first call is no longer ready (`/v2/health/ready` answers 503), and the log
        says why in one line.
        """
        image = np.zeros((1, 32, 32, 3), np.uint8)
        extra = {"boxes": np.array([[0, 0, 8, 8]], np.float32), "center": np.array([[8, 8]], np.float32),
                 "scale": np.array([0.1], np.float32)}
        signatures = {"serving_default": ()} if self.multi_person else SIGNATURE_INPUTS
        failures = {}

        def call(name: str) -> None:
            try:
                self.run(PoseRequest(name, image, {k: extra[k] for k in signatures[name]}))
            except Exception as error:  # noqa: BLE001 - whatever the model raised, it cannot serve
                failures[name] = error

        start = time.perf_counter()
        # In parallel, as most of a first call is TensorFlow preparing the graph, which runs outside the GIL. Not
        # daemon threads: a server stopped meanwhile exits once they end (TensorFlow aborted the process, status
        # -6, when Python exited under a running call).
        threads = [threading.Thread(target=call, args=(name,), name=f"pose-first-call-{name}")
                   for name in signatures]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            self.ready = False
            name, error = next(iter(failures.items()))
            reason = str(error) if isinstance(error, BadRequest) else (
                f"{type(error).__name__}: {graph_error_line(getattr(error, 'message', str(error)))}")
            logging.getLogger("kserve").error(f"{self.name}: the model failed its first call of {name} and is not "
                                              f"ready ({reason})")
            return
        print(f"first call of each signature, after ready ... {time.perf_counter() - start:.1f} s", flush=True)

    # --- requests -> PoseRequest

    def encoded_photo(self, data, field: str, budget: dict) -> "EncodedImage":
        """An encoded image file (bytes, or base64 text), checked from its header, not yet decoded.

        Its declared pixels are taken from `budget["pixels"]` (`MAX_PIXELS` per request), so that a request
        whose files would decode to too many pixels is refused before any of them is decoded.
        """
        from keras_hourglass.data.records import JPEG_START, PNG_START, BMP_START, encoded_image_size

        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes):
            raise BadRequest(f"{field} must be an encoded image file (base64 text); got {type(data).__name__}.")
        if not data.startswith((JPEG_START, PNG_START, BMP_START)):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{field} is neither a JPEG, PNG or BMP file nor base64 text of one.") from None
        size = encoded_image_size(data)
        if size is not None and max(size) > self.max_image_side:
            raise BadRequest(f"{field} is {size[1]}x{size[0]} pixels; at most {self.max_image_side} pixels a side "
                             "are accepted.")
        pixels = size[0] * size[1] if size is not None else self.max_image_side ** 2
        budget["pixels"] -= pixels
        if budget["pixels"] < 0:
            raise BadRequest(f"the images of one request may have at most {MAX_PIXELS:,} pixels together; "
                             f"{field} ({pixels:,} pixels) goes over. Send fewer or smaller images per request.")
        return EncodedImage(data, field)

    def decoded(self, image, budget: dict) -> np.ndarray:
        """`image` itself, or an `EncodedImage` decoded to RGB uint8 and checked (unless the request was abandoned)."""
        from keras_hourglass.data.records import decode_photo

        if not isinstance(image, EncodedImage):
            return image
        if budget.get("cancelled") is not None and budget["cancelled"].is_set():
            raise Abandoned(f"before decoding {image.field}")
        pixels, problem = decode_photo(image.data, image.field, quiet=False)  # quiet would redirect every thread's stderr
        if problem:
            raise BadRequest(problem + ".")
        return check_image(pixels, image.field, self.max_image_side)

    def image_value(self, value, field: str, budget: dict):
        """A V1 image: `{"b64": file}` (an `EncodedImage`, decoded later) or nested lists of pixels."""
        if isinstance(value, dict):
            if set(value) != {"b64"}:
                raise BadRequest(f"{field} must be pixels or {{\"b64\": <base64 image file>}}; got keys {sorted(value)}.")
            return self.encoded_photo(value["b64"], f"{field}.b64", budget)
        return check_image(pixel_array(value, field), field, self.max_image_side)

    @staticmethod
    def check_count(count: int, field: str) -> None:
        if count > MAX_IMAGES:
            raise BadRequest(f"{field} holds {count} images; at most {MAX_IMAGES} are accepted in one request.")

    def parse_v1(self, body, budget: dict) -> PoseRequest:
        if isinstance(body, (bytes, str)):  # sent without a JSON content type, as `curl -d` does
            try:
                body = json.loads(body)
            except ValueError as error:
                raise BadRequest(f"the body is not JSON ({error}).") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with \"instances\" (or \"inputs\"); "
                             f"got {type(body).__name__}.")
        signature = body.get("signature_name", "serving_default")
        if signature not in SIGNATURE_INPUTS:
            raise BadRequest(f"signature_name must be one of {list(SIGNATURE_INPUTS)}; got {signature!r}.")
        self.check_signature(signature)
        outputs = self.outputs(body.get("output_filter", self.default_outputs), "output_filter")
        names = ("images", *SIGNATURE_INPUTS[signature])
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest("the body must have one of \"instances\" (a list, one entry per image) or \"inputs\".")
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise BadRequest("instances must be a non-empty list, one entry per image.")
            if SIGNATURE_INPUTS[signature]:
                if not all(isinstance(i, dict) and set(i) == set(names) for i in instances):
                    raise BadRequest(f"each instance of signature {signature} must be an object with {list(names)}.")
                columns = {name: [i[name] for i in instances] for name in names}
            else:
                extra = sorted({k for i in instances if isinstance(i, dict) and "images" in i for k in i} - {"images"})
                if extra:  # boxes sent without signature_name: not silently ignored
                    raise BadRequest(f"instances carry {extra}, which signature {signature} does not take; give "
                                     "\"signature_name\": \"boxes\" or \"center_scale\".")
                columns = {"images": [i["images"] if isinstance(i, dict) and "images" in i else i for i in instances]}
        else:
            columns = body["inputs"]
            if not isinstance(columns, dict) or set(columns) != set(names):
                raise BadRequest(f"inputs must be an object with {list(names)} for signature {signature}.")
            if not isinstance(columns["images"], list) or not columns["images"]:
                raise BadRequest("inputs.images must be a non-empty list of images.")
        self.check_count(len(columns["images"]), "instances" if "instances" in body else "inputs.images")
        images = [self.image_value(image, f"instances[{i}]" if "instances" in body else f"inputs.images[{i}]",
                                   budget) for i, image in enumerate(columns["images"])]
        images = [self.decoded(image, budget) for image in images]  # once every file's size is known to fit
        extra = {n: columns[n] for n in names[1:]}
        images = self.one_image_per_row(images, extra)
        return PoseRequest(signature, images, check_extra(signature, extra, len(images)), outputs)

    def parse_v2(self, request, budget: dict) -> PoseRequest:
        inputs = {}
        for tensor in request.inputs:
            if tensor.name in inputs:
                raise BadRequest(f"input {tensor.name!r} is given twice.")
            inputs[tensor.name] = tensor
        known = {"images", "boxes", "center", "scale"}
        if "images" not in inputs or set(inputs) - known:
            raise BadRequest(f"inputs must be images (UINT8 [N, H, W, 3] or BYTES [N] of image files) and optionally "
                             f"boxes [N, 4], or center [N, 2] and scale [N]; got {sorted(inputs)}.")
        signature = next((name for name, extra in SIGNATURE_INPUTS.items() if set(extra) == set(inputs) - {"images"}),
                         None)
        if signature is None:
            raise BadRequest(f"give boxes, or center and scale, or neither; got {sorted(set(inputs) - {'images'})}.")
        self.check_signature(signature)
        images = inputs["images"]
        if images.datatype == "BYTES":
            files = self.tensor_values(images)
            if files.ndim != 1 or not files.size:
                raise BadRequest(f"BYTES images must have shape [N] (N >= 1), one file each; got {list(files.shape)}.")
            self.check_count(len(files), "images")
            images = [self.encoded_photo(data, f"images[{i}]", budget) for i, data in enumerate(files)]
            images = [self.decoded(image, budget) for image in images]  # once every file's size is known to fit
        elif images.datatype == "UINT8":
            if isinstance(images.data, list) and images.data:  # JSON numbers: refuse what is not a pixel, as V1 does
                pixel_array(images.data, "images")
            array = self.tensor_values(images)
            if array.ndim != 4 or array.shape[-1] != 3:
                raise BadRequest(f"images must be UINT8 [N, height, width, 3] (RGB); got shape {list(array.shape)}.")
            if not array.shape[0]:
                raise BadRequest("images holds no image (N = 0).")
            self.check_count(array.shape[0], "images")
            images = np.stack([check_image(image, f"images[{i}]", self.max_image_side)
                               for i, image in enumerate(array)])
        else:
            raise BadRequest(f"images must be UINT8 [N, height, width, 3] or BYTES [N] (encoded JPEG/PNG files); got "
                             f"datatype {images.datatype}.")
        extra = {name: self.tensor_values(inputs[name]) for name in SIGNATURE_INPUTS[signature]}
        images = self.one_image_per_row(images, extra)
        outputs = [output.name for output in request.request_outputs or ()] or self.default_outputs
        return PoseRequest(signature, images, check_extra(signature, extra, len(images)),
                           self.outputs(outputs, "outputs"))

    def one_image_per_row(self, images, extra: dict):
        """One image with several boxes (or centres and scales): the image once per row, as the signatures
        take one person per image (the same array each time, not copies; run once per row)."""
        if len(images) != 1 or not extra:
            return images
        counts = {name: len(value) if isinstance(value, (list, np.ndarray)) and np.ndim(value) else 1
                  for name, value in extra.items()}
        rows = set(counts.values())
        if len(rows) != 1:
            raise BadRequest(f"{' and '.join(counts)} must have one row each per person; got "
                             f"{', '.join(f'{n} {c}' for n, c in counts.items())} rows.")
        if (count := rows.pop()) <= 1:
            return images
        if count > MAX_IMAGES:
            raise BadRequest(f"{' and '.join(extra)} hold {count} people of one image; at most {MAX_IMAGES} are "
                             "accepted in one request.")
        return [images[0]] * count

    @staticmethod
    def tensor_values(tensor) -> np.ndarray:
        try:
            return tensor.as_numpy()
        except (ValueError, TypeError, OverflowError) as error:
            raise BadRequest(f"{tensor.name}: the data do not fit datatype {tensor.datatype} and shape "
                             f"{list(tensor.shape)} ({str(error).splitlines()[0]}).") from None

    def outputs(self, names, field: str) -> tuple:
        if not isinstance(names, (list, tuple)) or not names or any(name not in self.output_names for name in names):
            raise BadRequest(f"{field} must name some of {list(self.output_names)}; got {names!r}.")
        return tuple(dict.fromkeys(names))

    def check_signature(self, signature: str) -> None:
        if self.multi_person and signature != "serving_default":
            raise BadRequest("this is a multi-person model: it finds every person of the whole image itself; boxes, "
                             "center and scale are for single-person models.")

    # --- inference

    def run(self, request: PoseRequest, cancelled: threading.Event | None = None) -> dict:
        """Calls the signature (once per image when the images differ in size); `{output: array [N, ...]}`.

        Stops before the next image once `cancelled` is set (the request was answered 504).
        """
        import tensorflow as tf

        if self.multi_person:
            return self.run_people(request, cancelled)
        function = self.signatures[request.signature]
        batches = ([(request.images, request.extra)] if isinstance(request.images, np.ndarray)
                   else [([image], {k: v[i:i + 1] for k, v in request.extra.items()})
                         for i, image in enumerate(request.images)])
        results = []
        for images, extra in batches:
            if cancelled is not None and cancelled.is_set():
                raise Abandoned(f"after {len(results)} of {len(batches)} model calls")
            try:
                outputs = function(images=tf.constant(np.asarray(images, np.uint8)),
                                   **{k: tf.constant(v) for k, v in extra.items()})
            except tf.errors.InvalidArgumentError as error:  # the graph's own checks
                raise BadRequest(graph_error_line(error.message)) from None
            results.append({name: outputs[name].numpy() for name in request.outputs})
        return {name: np.concatenate([r[name] for r in results]) for name in request.outputs}

    def run_people(self, request: PoseRequest, cancelled: threading.Event | None = None) -> dict:
        """A multi-person model on each whole image: every person as a row, with its image's index.

        `keras_hourglass.multiperson.predict_people` (flip test on); a joint a person lacks scores 0.
        """
        from keras_hourglass.multiperson import predict_people

        joints = len(self.metadata["keypoint_names"])
        rows = {"keypoints": [np.zeros((0, joints, 2), np.float32)], "scores": [np.zeros((0, joints), np.float32)],
                "person_scores": [np.zeros(0, np.float32)], "image_index": [np.zeros(0, np.int32)]}
        for index, image in enumerate(request.images):
            if cancelled is not None and cancelled.is_set():
                raise Abandoned(f"after {index} of {request.count} model calls")
            keypoints, scores, person_scores = predict_people(self.people_model, np.asarray(image, np.uint8),
                                                              self.codec)
            for name, value in (("keypoints", keypoints), ("scores", scores), ("person_scores", person_scores),
                                ("image_index", np.full(len(scores), index, np.int32))):
                rows[name].append(value)
        return {name: np.concatenate(value) for name, value in rows.items()}  # all: V1 groups rows by image

    async def predict(self, payload, headers=None):
        """V1 (a dict) or V2 (`InferRequest`).

        Decoding and the model run in the server's worker threads (`WORKERS`), off the event loop, so that
        health checks and other requests are answered meanwhile; when the request is abandoned (its 504),
        the work stops before its next image.
        """
        kserve = import_kserve()
        v2 = isinstance(payload, kserve.InferRequest)
        cancelled = threading.Event()

        def work():
            budget = {"pixels": MAX_PIXELS, "cancelled": cancelled}
            try:
                request = self.parse_v2(payload, budget) if v2 else self.parse_v1(payload, budget)
                return request, self.run(request, cancelled)
            except Abandoned as error:  # nobody awaits this any more: the log is where it is told
                logging.getLogger("kserve").warning(f"a request answered 504 stopped its work {error}")
                raise

        try:
            request, outputs = await asyncio.get_running_loop().run_in_executor(self.workers, work)
        except BadRequest as error:
            raise kserve.errors.InvalidInput(str(error)) from None
        except asyncio.CancelledError:
            cancelled.set()
            raise
        if not v2 and self.multi_person:  # per image, its people; a joint a person lacks is [null, null]
            rows, lacking = outputs["image_index"], outputs["scores"] <= 0
            keypoints = np.where(lacking[..., None], None, outputs["keypoints"].astype(object))
            columns = {**outputs, "keypoints": keypoints}
            return {"predictions": [{name: columns[name][rows == i].tolist() for name in request.outputs
                                     if name != "image_index"} for i in range(request.count)]}
        if not v2:
            return {"predictions": [{name: outputs[name][i].tolist() for name in request.outputs}
                                    for i in range(request.count)]}
        results = []
        for name in request.outputs:
            datatype = "INT32" if name == "image_index" else "FP32"
            output = kserve.InferOutput(name=name, shape=list(outputs[name].shape), datatype=datatype)
            output.set_data_from_numpy(outputs[name].astype(np.int32 if datatype == "INT32" else np.float32),
                                       binary_data=False)
            results.append(output)
        return kserve.InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                    infer_outputs=results)

    def get_input_types(self):
        if self.multi_person:  # whole images only
            return [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
        return [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "center", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "scale", "datatype": "FP32", "shape": [-1]}]

    def get_output_types(self):
        k = len(self.metadata["keypoint_names"])
        if self.multi_person:
            return [{"name": "keypoints", "datatype": "FP32", "shape": [-1, k, 2]},
                    {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
                    {"name": "person_scores", "datatype": "FP32", "shape": [-1]},
                    {"name": "image_index", "datatype": "INT32", "shape": [-1]}]
        height, width = self.metadata["codec"].get("heatmap_size", [-1, -1])
        return [{"name": "keypoints", "datatype": "FP32", "shape": [-1, k, 2]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
                {"name": "heatmaps", "datatype": "FP32", "shape": [-1, height, width, k]}]

    def model_metadata(self) -> dict:
        """The V2 model metadata, with the joints under `parameters` (V2 lets a server add fields)."""
        if self.multi_person:
            parameters = {"keypoint_names": self.metadata["keypoint_names"], "limbs": self.metadata["limbs"],
                          "input_size": self.metadata["input_size"], "flip_test": True,
                          "signatures": ["serving_default"], "detection_threshold": self.detection_threshold}
        else:
            parameters = {name: self.metadata[name] for name in
                          ("keypoint_names", "limbs", "input_size", "flip_test", "signatures")}
        return {"name": self.name, "versions": None, "platform": "tensorflow_savedmodel",
                "inputs": self.get_input_types(), "outputs": self.get_output_types(),
                "parameters": {**parameters, "multi_person": self.multi_person}}


def pose_serving_model(name: str, source, max_image_side: int = MAX_IMAGE_SIDE,
                       detection_threshold: float | None = None):
    """A loaded `PoseServingModel` (a `kserve.Model`) named `name`.

    `source`: a SavedModel folder written by `keras_hourglass.export`, or a
    `keras_hourglass.export.PoseEstimator` (a `.keras` model served without
    writing its SavedModel: the same graph functions, traced here).
    """
    kserve = import_kserve()
    model_class = type("PoseServingModel", (PoseServingModel, kserve.Model), {})
    model = model_class(name, source, max_image_side, detection_threshold)
    model.load()
    return model


class LimitsMiddleware:
    """ASGI middleware: refuses bodies over `max_body_bytes` (413) and requests longer than `timeout` s (504).

    The body is read here first, so the protocol handlers never see an oversized one.
    """

    DRAIN_FACTOR = 4

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES, timeout: float = REQUEST_TIMEOUT):
        self.app, self.max_body_bytes, self.timeout = app, max_body_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                body = await self.read_body(scope, receive)
                if body is None:
                    return await self.answer(send, 413, f"the request body is over the limit of "
                                                        f"{self.max_body_bytes} bytes.")
                if json_values(scope, body) > MAX_JSON_VALUES:
                    return await self.answer(send, 413, f"the JSON body holds more than {MAX_JSON_VALUES:,} values; "
                                                        "send images as files (base64 text) rather than lists of "
                                                        "pixels.")
                problem = binary_extension_problem(scope, body)
                if problem:
                    return await self.answer(send, *problem)
                messages = [{"type": "http.request", "body": body, "more_body": False}]

                async def replay():
                    return messages.pop() if messages else await receive()

                await self.app(scope, replay, tracked_send)
        except TimeoutError:
            if not started:
                await self.answer(send, 504, f"the request took longer than {self.timeout:g} s and was abandoned.")

    async def read_body(self, scope, receive) -> bytes | None:
        """The whole body, or None when it is over the limit.

        An oversized body is still read (and dropped), up to `DRAIN_FACTOR` times the limit, so that a
        client still sending it gets the 413 answer rather than a broken connection.
        """
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            size += len(message.get("body", b""))
            if size <= self.max_body_bytes:
                chunks.append(message.get("body", b""))
            elif chunks:
                chunks = []  # over the limit: drop what was kept
            if not message.get("more_body", False) or size > self.DRAIN_FACTOR * self.max_body_bytes:
                return b"".join(chunks) if size <= self.max_body_bytes else None

    @staticmethod
    async def answer(send, status: int, message: str):
        logging.getLogger("kserve").warning(f"refused a request: {status} {message}")
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def json_values(scope, body: bytes) -> int:
    """About how many values a JSON body holds (its commas, counted at C speed), 0 for other content types."""
    headers = dict(scope.get("headers", ()))
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return body.count(b",") if kind == b"application/json" else 0


BINARY_ITEM_BYTES = {"UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
                     "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BOOL": 1}


def binary_extension_problem(scope, body: bytes) -> tuple[int, str] | None:
    """`(status, message)` for a V2 binary-extension body that KServe would mishandle, else None.

    KServe (0.21) turns binary tensor data into Python lists on the event loop (27 M pixels: 9 s with every
    other request, the health check included, waiting), and answers BYTES tensors sent in binary with a 500
    that echoes the data. So binary data are held to the JSON bodies' `MAX_JSON_VALUES` values, and images as
    files come as base64 text in the JSON part.
    """
    headers = dict(scope.get("headers", ()))
    declared = headers.get(b"inference-header-content-length")
    if declared is None:
        return None
    try:
        length = int(declared)
        if not 0 < length <= len(body):
            raise ValueError(f"{length} is not within the body's {len(body)} bytes")
        header = json.loads(body[:length])
        tensors = [t for key in ("inputs", "outputs") for t in header.get(key) or ()]
        sizes = [(t.get("datatype"), (t.get("parameters") or {}).get("binary_data_size")) for t in tensors]
    except (ValueError, TypeError, AttributeError, RecursionError) as error:
        return 400, f"the binary extension's JSON header is not readable ({str(error)[:200]})."
    for datatype, size in sizes:
        if size is None:
            continue
        if datatype == "BYTES":
            return 400, ("BYTES tensors are not taken in the binary extension; send image files as base64 text in "
                         "the JSON body.")
        if not isinstance(size, int) or size < 0 or datatype not in BINARY_ITEM_BYTES:
            return 400, f"binary_data_size must be a byte count of a known datatype; got {size!r} for {datatype!r}."
        if size // BINARY_ITEM_BYTES[datatype] > MAX_JSON_VALUES:
            return 413, (f"binary tensor data of more than {MAX_JSON_VALUES:,} values are not taken; send images as "
                         "files (base64 text in the JSON body).")
    return None


class RequestGuard:
    """ASGI middleware: what a server reachable by other machines and other people's web pages must refuse.

    * a `Host` header that is not one of `allowed_hosts` (400): a page on another site that makes its
      own name resolve to this machine (DNS rebinding) still sends its own name;
    * the model-control routes, `/v2/repository/...` (load, unload), unless `allow_model_control` (403);
    * a POST whose content type is not one of `POST_CONTENT_TYPES` (415): the bodies a cross-site page can
      send without a preflight;
    * a prediction beyond `max_queued` running or waiting ones (503, at once, rather than a growing queue).
    """

    DRAIN_SECONDS = 5  # how long a refused request's body is read before the answer, at most

    def __init__(self, app, allowed_hosts=LOOPBACK_NAMES, allow_model_control: bool = False,
                 max_queued: int = MAX_QUEUED, max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.allowed_hosts = app, {host_name(name) for name in allowed_hosts}
        self.allow_model_control, self.max_queued, self.queued = allow_model_control, max_queued, 0
        self.drain_bytes = LimitsMiddleware.DRAIN_FACTOR * max_body_bytes

    async def refuse(self, receive, send, status: int, message: str):
        """Answers `status` after reading (and dropping) the request's body, as far as `drain_bytes` and
        `DRAIN_SECONDS` allow: a client still sending its body gets the answer, not a reset connection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.DRAIN_SECONDS):
                size = 0
                while True:
                    received = await receive()
                    size += len(received.get("body", b""))
                    if received["type"] != "http.request" or not received.get("more_body") or size > self.drain_bytes:
                        break
        await LimitsMiddleware.answer(send, status, message)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host, path = headers.get("host", ""), scope["path"]
        if host_name(host) not in self.allowed_hosts:
            return await self.refuse(receive, send, 400, f"this server does not answer to the host name "
                                                         f"{host[:100]!r}; start it with --allowed-host NAME to add it.")
        origin = headers.get("origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != host.strip().lower():
            return await self.refuse(receive, send, 403, f"a request from the page of another site ({origin[:100]!r}) "
                                                         "is refused; this server answers its own page and clients "
                                                         "that are not browsers.")
        if path.startswith("/v2/repository/") and not self.allow_model_control:
            return await self.refuse(receive, send, 403, "loading and unloading models is off; start the server "
                                                         "with --allow-model-control to allow it.")
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in POST_CONTENT_TYPES:
                return await self.refuse(receive, send, 415, f"a POST must have content type "
                                                             f"{', '.join(POST_CONTENT_TYPES)}; got {kind[:60]!r}.")
            if self.queued >= self.max_queued:
                return await self.refuse(receive, send, 503, f"{self.queued} requests are running or waiting; "
                                                             "try again shortly.")
            self.queued += 1
            try:
                return await self.app(scope, receive, send)
            finally:
                self.queued -= 1
        return await self.app(scope, receive, send)


def header_timeout_protocol(protocol_class, seconds: float = HEADER_TIMEOUT):
    """Uvicorn's HTTP protocol class, closing connections that take over `seconds` to send a request's headers.

    Uvicorn waits for ever for the headers of a connection's request (it times out only idle keep-alive
    connections), so connections that send a header line now and then ("slowloris") would pile up until the
    process runs out of file descriptors. The clock starts when the connection opens and again after each
    answer; a connection whose next request has not begun by then, and that is not being answered, is closed.
    A request whose headers have arrived is bounded by the request timeout instead (`LimitsMiddleware`).
    """

    class HeaderTimeout(protocol_class):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def _arm_header_timer(self):
            waiting_after = self.cycle  # a new request replaces the cycle once its headers are in

            def expire():
                between_requests = waiting_after is None or waiting_after.response_complete
                if self.cycle is waiting_after and between_requests and not self.transport.is_closing():
                    self.transport.close()

            self._header_timer = self.loop.call_later(seconds, expire)

        def connection_lost(self, exc):
            if getattr(self, "_header_timer", None) is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{protocol_class.__name__}"
    return HeaderTimeout


def host_name(host: str) -> str:
    """The name in a `Host` header or an address, without the port or IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def add_routes(app, model) -> None:
    """The page at `/` and `/web/`, the joints in the V2 model metadata, 4xx for unparsable bodies.

    Added before KServe adds its own routes, so these answer first.
    """
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def page():
        return FileResponse(os.path.join(WEB_FOLDER, "index.html"))

    async def model_metadata(model_name: str):
        if model_name != model.name:
            return JSONResponse({"error": f"Model with name {model_name} does not exist."}, status_code=404)
        return JSONResponse(model.model_metadata())

    async def server_ready():  # KServe's answers 200 whatever its model says: not after a failed first call
        return JSONResponse({"ready": bool(model.ready)}, status_code=200 if model.ready else 503)

    async def invalid_body(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors()[:3])
        return JSONResponse({"error": f"the request body is not a valid inference request ({problems})."},
                            status_code=422)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/web", lambda: RedirectResponse("/"), methods=["GET"], include_in_schema=False)
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.mount("/web", StaticFiles(directory=WEB_FOLDER), name="web")
    async def client_error(request: Request, error: Exception):
        """A `ValueError` while KServe decodes a request (e.g. binary data that do not fit the declared shape)."""
        return JSONResponse({"error": f"the request does not fit its declared inputs ({str(error)[:300]})."},
                            status_code=400)

    async def http_error(request: Request, error: StarletteHTTPException):
        """FastAPI's own refusals (an unparsable body, an unknown path) in this server's `{"error": ...}` form."""
        return JSONResponse({"error": str(error.detail)[:300]}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(ValueError, client_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def raise_file_limit(needed: int) -> None:
    """Raises the soft limit on open files towards `needed` (as far as the hard limit allows): at the common
    default of 1024, connections beyond it fail in `accept()`, each with a traceback in the log."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(model, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          grpc_port: int | None = None, max_body_bytes: int = MAX_BODY_BYTES, request_timeout: float = REQUEST_TIMEOUT,
          on_ready=None, allowed_hosts=(), allow_model_control: bool = False) -> None:
    """Serves `model` (from `pose_serving_model`) until SIGTERM or SIGINT (requests in flight finish first).

    `grpc_port` turns on KServe's gRPC endpoint (V2 over gRPC), which KServe binds on every interface.
    `on_ready()` is called once the model is loaded, before the port opens. `Host` headers answered: the
    loopback names, `host` itself and `allowed_hosts` (`RequestGuard`); the model-control routes only
    with `allow_model_control`.
    """
    kserve = import_kserve()
    from kserve.model_server import app

    class ModelServer(kserve.ModelServer):
        def setup_event_loop(self):  # called after the servers are made, before they start
            super().setup_event_loop()
            self._rest_server.config.host = host  # KServe binds 0.0.0.0 otherwise
            config = self._rest_server.config
            config.timeout_keep_alive = KEEP_ALIVE  # KServe keeps idle connections 65 s
            # h11, not httptools: h11 refuses a request line and headers over 16 KiB (h11_max_incomplete_event_size);
            # httptools takes any number of header lines and keeps them.
            from uvicorn.protocols.http.h11_impl import H11Protocol

            config.http = header_timeout_protocol(H11Protocol)
            config.limit_concurrency = MAX_CONNECTIONS  # beyond: 503, before a file descriptor limit is reached
            # The first calls, now that KServe has taken the model as ready: begun before, one that failed
            # quickly made KServe refuse to start (NoModelReady, a traceback) instead of serving it not ready.
            threading.Thread(target=model.call_each_signature, name="pose-first-calls").start()

        def stop(self, sig: int):
            """KServe's handler of SIGTERM and SIGINT, until uvicorn's replaces it: it stops uvicorn too.

            KServe's own stops only its gRPC server; a signal that came before uvicorn took over the
            handlers left uvicorn serving, and the server ran on, not ready, until killed.
            """
            if self._rest_server is not None:
                self._rest_server._server.should_exit = True  # uvicorn ends, even before it has begun serving
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # the event loop has ended (a second signal while the first calls end): done
                return
            super().stop(sig)

    server = ModelServer(http_port=port, grpc_port=grpc_port or 0, enable_grpc=grpc_port is not None,
                         enable_docs_url=False, enable_latency_logging=False, workers=1,
                         grace_period=max(1, int(request_timeout)))
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # two timing lines per request otherwise
    logging.getLogger("kserve").addFilter(one_line_for_bad_requests)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, twice per request
    add_routes(app, model)
    app.add_middleware(LimitsMiddleware, max_body_bytes=max_body_bytes, timeout=request_timeout)
    app.add_middleware(RequestGuard, allowed_hosts=(*LOOPBACK_NAMES, host, *allowed_hosts),
                       allow_model_control=allow_model_control, max_body_bytes=max_body_bytes)
    raise_file_limit(MAX_CONNECTIONS + 100)
    if on_ready is not None:
        on_ready()
    with contextlib.suppress(KeyboardInterrupt):
        server.start([model])
