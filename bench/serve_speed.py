"""A bounded load test of `keras-hourglass serve` on loopback, and the same model called in-process.

    python -m bench.serve_speed                                  # the demo model, 500 requests, 8 clients
    python -m bench.serve_speed --model runs/x/checkpoints/best --requests 200 --clients 4

Starts the server as a subprocess on a free loopback port, sends `--requests`
V2 requests, each one MPII-sized JPEG file (`--image`, default the first image
of `../shared/data/mpii/images`), from `--clients` concurrent clients (one
keep-alive connection each), and prints requests/s, p50/p95/p99 latency and
the errors (any non-200 answer). Then it calls the same model in this
process (the file decoded as the server decodes it, then `serving_default`),
one image at a time, and prints its images/s. The server is stopped with
SIGTERM and must exit with status 0.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench.cpu import describe_cpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "tests" / "data" / "synthetic_small.keras"
SHARED_IMAGES = pathlib.Path(os.environ.get("KERAS_HOURGLASS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mpii" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "keras_hourglass", "serve", model, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}; see {log.name}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not get ready in 300 s")


def load(port: int, body: bytes, requests: int, clients: int, path: str) -> tuple[list, list, float]:
    """`(latencies in s, error descriptions, wall seconds)` of `requests` POSTs spread over `clients` threads."""
    latencies, errors = [], []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                connection.request("POST", path, body, {"content-type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                ok = response.status == 200
            except OSError as error:
                ok, answer = False, str(error).encode()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                (latencies.append(time.perf_counter() - start) if ok
                 else errors.append(answer[:200].decode(errors="replace")))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEMO_MODEL), help="SavedModel folder or .keras file (default: the demo model)")
    parser.add_argument("--image", default=None, help="a JPEG file (default: the first MPII image in ../shared/data)")
    parser.add_argument("--requests", type=int, default=500, help="requests to send (default 500)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--in-process", type=int, default=100, help="in-process calls to time (default 100)")
    args = parser.parse_args(argv)
    if min(args.requests, args.clients, args.in_process) < 1:
        parser.error("--requests, --clients and --in-process must be positive")
    image = pathlib.Path(args.image) if args.image else min(SHARED_IMAGES.glob("*.jpg"), default=None)
    if image is None:
        parser.error(f"no --image given and no JPEG in {SHARED_IMAGES}")
    try:
        data = image.read_bytes()
    except OSError as error:
        parser.error(f"--image {image}: {error.strerror}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_hourglass.cli import quiet_tensorflow
    from keras_hourglass.cli.serve import build_parser, model_source

    quiet_tensorflow()
    import tensorflow as tf

    from keras_hourglass.data.records import decode_photo

    pixels, problem = decode_photo(data, str(image))
    if problem:
        parser.error(f"--image {problem}")
    try:
        # what the server calls: the SavedModel's signatures, or a .keras file's estimator in memory, as serve does
        source = model_source(build_parser().parse_args([args.model]))
    except ValueError as error:  # not a model: the command's own one-line message
        parser.error(str(error))
    with tempfile.TemporaryDirectory(prefix="serve-speed-") as workdir:
        print(f"CPU: {describe_cpu()}")
        print(f"model: {os.path.relpath(args.model)}; image: {image.name}, {pixels.shape[1]}x{pixels.shape[0]}, {len(data):,} bytes")

        port = free_port()
        log_path = os.path.join(workdir, "server.log")
        with open(log_path, "w") as log:
            server = start_server(args.model, port, log)
            body = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                           "data": [base64.b64encode(data).decode()]}]}).encode()
            path = "/v2/models/hourglass/infer"
            load(port, body, 2 * args.clients, args.clients, path)  # warm-up, not counted
            latencies, errors, wall = load(port, body, args.requests, args.clients, path)
            server.send_signal(signal.SIGTERM)
            status = server.wait(timeout=120)
        ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99]) if latencies else [float("nan")] * 3
        print(f"server: {args.requests} requests from {args.clients} clients over loopback in {wall:.2f} s: "
              f"{len(latencies) / wall:.1f} requests/s; latency p50 {ms[0]:.1f} ms, p95 {ms[1]:.1f} ms, "
              f"p99 {ms[2]:.1f} ms; errors {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
        print(f"server exit status after SIGTERM: {status}")

        serving = (tf.saved_model.load(source).signatures["serving_default"] if isinstance(source, str)
                   else source.serving_default)

        def in_process():
            serving(images=tf.constant(decode_photo(data, str(image))[0][None]))

        for _ in range(5):
            in_process()
        times = []
        for _ in range(args.in_process):
            start = time.perf_counter()
            in_process()
            times.append(time.perf_counter() - start)
        times = np.array(times) * 1000
        print(f"in-process, one image at a time (decode + serving_default): {1000 / times.mean():.1f} images/s; "
              f"p50 {np.percentile(times, 50):.1f} ms, p95 {np.percentile(times, 95):.1f} ms "
              f"over {args.in_process} calls")
    return 0 if not errors and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
