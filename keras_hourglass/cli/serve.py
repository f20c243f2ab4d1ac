"""Serves a model over HTTP (KServe's model server: V1 and V2 protocols, metrics), with a web page at `/`.

(`keras-hourglass serve`, `python serve.py`.)

    python serve.py runs/synthetic-small/checkpoints/best               # http://127.0.0.1:8080/
    python serve.py model.keras --dataset mpii --name hourglass --port 8080 --host 127.0.0.1

MODEL is a SavedModel folder written by `keras_hourglass.export` (training's
checkpoints, `import_weights.py`'s `saved_model/`) or a `.keras` file, served
with the same signatures as its SavedModel would have (joint names from
`--dataset`), without writing one. A multi-person SavedModel (an imported
pose-ae-train network) answers every person of each whole image
(`--detection-threshold`, default 0.1).
The protocols, limits and answers are described in `keras_hourglass.serving`.
SIGTERM or Ctrl-C: the requests in flight finish, then the server exits.
"""

from __future__ import annotations

import argparse
import os

from keras_hourglass.cli import detection_threshold, quiet_tensorflow, run_command, step
from keras_hourglass.joints import JOINT_SPECS, get_joint_spec

SERVER_PACKAGES = ("kserve", "fastapi", "uvicorn")  # installed by `pip install 'keras-hourglass[serve]'`


def build_parser(prog: str = "serve.py") -> argparse.ArgumentParser:
    from keras_hourglass.serving import DEFAULT_NAME, DEFAULT_PORT, MAX_BODY_BYTES, MAX_IMAGE_SIDE, REQUEST_TIMEOUT

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="SavedModel folder or .keras file")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name in the URLs (default {DEFAULT_NAME})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also serve V2 over gRPC on this port (KServe binds it on every interface; default off)")
    parser.add_argument("--dataset", default="mpii", choices=tuple(JOINT_SPECS),
                        help="joint names for a .keras model, which carries none (default mpii)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help=".keras only: export the flip test into the graph, as predict does (default on)")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                        help=f"largest request body in MiB (default {MAX_BODY_BYTES / 2**20:g})")
    parser.add_argument("--max-image-side", type=int, default=MAX_IMAGE_SIDE,
                        help=f"largest image side in pixels (default {MAX_IMAGE_SIDE})")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header names NAME (repeatable; default: the loopback "
                             "names and --host)")
    parser.add_argument("--allow-model-control", action="store_true",
                        help="allow KServe's model-control routes (/v2/repository/models/NAME/load, unload; "
                             "default off: anyone who reaches the port could unload the model)")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="multi-person models: the lowest heatmap value a joint is found at (default 0.1, the "
                             "reference's)")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help=f"seconds a request may take before it is answered 504 (default {REQUEST_TIMEOUT:g})")
    return parser


def check_server_installed() -> None:
    """The server's packages come with the `serve` extra; say so in one line before anything slow starts."""
    import importlib.util

    missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"the server needs {' and '.join(missing)}, installed by the serve extra: pip install "
                         "'keras-hourglass[serve]' (in a clone of the repository: pip install -e '.[serve]').")


def check_args(args: argparse.Namespace) -> None:
    check_server_installed()
    for flag, value in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if value is not None and not 0 < value < 65536:
            raise ValueError(f"{flag} must be a port number from 1 to 65535, got {value}.")
    for flag, value in (("--max-body-mb", args.max_body_mb), ("--max-image-side", args.max_image_side),
                        ("--request-timeout", args.request_timeout)):
        if not value > 0:
            raise ValueError(f"{flag} must be positive, got {value:g}.")
    if not args.name or "/" in args.name or ":" in args.name:
        raise ValueError(f"--name must be a non-empty name without '/' or ':', got {args.name!r}.")
    if not os.path.exists(args.model):
        raise ValueError(f"{args.model}: no such model file or folder.")
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if port is not None:
            check_port_free(args.host if flag == "--port" else "0.0.0.0", port, flag)


def check_port_free(host: str, port: int, flag: str) -> None:
    """Binds `host:port` as the server will (address reuse on, as uvicorn sets it), before the model loads."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: not an address of this machine ({error.strerror}).") from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ValueError(f"{flag} {port}: cannot listen on {host}:{port} ({error.strerror}); is another "
                             "server using it? Choose another port.") from None


def model_source(args: argparse.Namespace):
    """What to serve: MODEL itself (a SavedModel folder), or a `.keras` file as a `PoseEstimator` in memory.

    A `.keras` model is not written out as a SavedModel and read back: the
    server calls the same graph functions the SavedModel would hold.
    """
    from keras_hourglass.export import MULTI_PERSON_FORMAT, check_single_person, read_saved_model_metadata

    if not args.model.endswith(".keras"):
        if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
            raise ValueError(f"{args.model}: not a SavedModel folder (no saved_model.pb) or a .keras file.")
        metadata = read_saved_model_metadata(args.model)
        multi_person = metadata.get("format") == MULTI_PERSON_FORMAT
        if not multi_person:
            check_single_person(metadata, args.model)
        args.detection_threshold = detection_threshold(args.detection_threshold, multi_person)
        return args.model
    args.detection_threshold = detection_threshold(args.detection_threshold, False)  # a .keras: one person a crop
    from keras_hourglass.codec import HeatmapCodec
    from keras_hourglass.export import PoseEstimator, last_output_shape
    from keras_hourglass.pose_model import load_keras_model

    spec = get_joint_spec(args.dataset)
    model = load_keras_model(args.model)
    codec = HeatmapCodec(tuple(model.input_shape[1:3]), tuple(last_output_shape(model)[1:3]),
                         flip_index=spec.flip_index)
    if last_output_shape(model)[-1] != spec.num_keypoints:
        raise ValueError(f"{args.model}: the model predicts {last_output_shape(model)[-1]} keypoints but --dataset "
                         f"{args.dataset} has {spec.num_keypoints}.")
    return PoseEstimator(model, codec, spec.names, args.flip_test and spec.flip_index is not None, spec.limbs)


def run(args: argparse.Namespace) -> None:
    check_args(args)
    with step("starting TensorFlow"):
        quiet_tensorflow()
    from keras_hourglass.serving import import_kserve, pose_serving_model, serve

    saved_model = not args.model.endswith(".keras")
    with step(f"reading {args.model}'s metadata" if saved_model else f"loading {args.model}"):
        source = model_source(args)
    with step("starting KServe"):
        import_kserve()
    with step("loading the SavedModel" if saved_model else "taking the model's functions (each traced on its first call)"):
        model = pose_serving_model(args.name, source, args.max_image_side, args.detection_threshold)
    serve(model, args.host, args.port, args.grpc_port, int(args.max_body_mb * 2**20), args.request_timeout,
          allowed_hosts=args.allowed_host, allow_model_control=args.allow_model_control,
          on_ready=lambda: print(f"serving {args.model} as {args.name!r} on http://{args.host}:{args.port}/",
                                 flush=True))


def main(argv=None, prog: str = "serve.py") -> int:
    return run_command(prog, run, build_parser(prog).parse_args(argv))
