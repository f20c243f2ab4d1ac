"""The inference server (`keras_hourglass.serving`, `serve.py`) with real parts: a subprocess on a free loopback port,
real HTTP, and the web page in a real headless Chromium.

The served model is the demo's trained model (`tests/data/synthetic_small.keras`, 64x64, MPII joints), exported
by the `serve` command's own `.keras` path; its keypoints are compared with the same SavedModel called in-process.
"""

import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import PIXEL_TOLERANCE, ROOT, corrupt_jpeg, free_port

KERAS_MODEL = ROOT / "tests" / "data" / "synthetic_small.keras"
MAX_BODY_MB = 1
MAX_IMAGE_SIDE = 1500
REQUEST_TIMEOUT = 5  # seconds: the slowest request here takes under one
CHROMIUM = os.environ.get("KERAS_HOURGLASS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def request(url, body=None, headers=None, method=None, timeout=60):
    """`(status, parsed JSON answer or text)`; `body` a dict (sent as JSON) or bytes."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json",
                                                                         **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class Server:
    """`serve.py` as a subprocess on free loopback ports; `grpc=False` leaves gRPC off (KServe binds it on every
    interface). A server that does not get ready is killed before the error is raised."""

    def __init__(self, saved_model: str, log: pathlib.Path, *flags, grpc: bool = True):
        self.port, self.grpc_port = free_port(), (free_port() if grpc else None)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        grpc_flags = ["--grpc-port", str(self.grpc_port)] if grpc else []
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "serve.py"), saved_model, "--port", str(self.port), *grpc_flags,
             "--max-body-mb", str(MAX_BODY_MB), "--max-image-side", str(MAX_IMAGE_SIDE), "--request-timeout",
             str(REQUEST_TIMEOUT), *flags],
            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready()
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def _wait_until_ready(self):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self.log.read_text()[-3000:]}"
            try:
                if request(f"{self.url}/v2/health/ready", method="GET", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the server did not get ready: {self.log.read_text()[-3000:]}")

    def infer(self, inputs, outputs=None, name="hourglass"):
        body = {"inputs": inputs, **({"outputs": [{"name": n} for n in outputs]} if outputs else {})}
        return request(f"{self.url}/v2/models/{name}/infer", body)

    def stop(self) -> int:
        """SIGTERM, and its exit status; a server still running 60 s later is killed (and the status says so)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    """The demo model as `serve` serves a `.keras` file (joint names of `--dataset mpii`, flip test on), saved."""
    from keras_hourglass.cli.serve import build_parser, model_source
    from keras_hourglass.export import save_estimator

    estimator = model_source(build_parser().parse_args([str(KERAS_MODEL)]))
    return save_estimator(estimator, str(tmp_path_factory.mktemp("serve") / "saved_model"))


@pytest.fixture(scope="module")
def server(saved_model, tmp_path_factory):
    server = Server(saved_model, tmp_path_factory.mktemp("server") / "server.log")
    yield server
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def in_process(saved_model):
    """`call(signature, **arrays) -> {output: array}`: the SavedModel's signatures, in this process."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)
    return lambda signature, **inputs: {k: v.numpy() for k, v in loaded.signatures[signature](
        **{name: tf.constant(value) for name, value in inputs.items()}).items()}


@pytest.fixture(scope="module")
def photo(shared_data):
    """`(JPEG bytes of a real MPII image, its pixels as the server reads them, a small [2, 96, 72, 3] batch)`."""
    import cv2

    from keras_hourglass.data.records import decode_photo

    path = sorted((shared_data / "mpii" / "images").glob("*.jpg"))[0]
    data = path.read_bytes()
    pixels = decode_photo(data, str(path))[0]
    small = cv2.resize(pixels, (72, 96), interpolation=cv2.INTER_AREA)
    return path, data, pixels, np.stack([small, small[:, ::-1]])


def tensor(name, array):
    """A V2 input: uint8 arrays as UINT8, anything else as FP32."""
    array = np.asarray(array)
    array = array if array.dtype == np.uint8 else array.astype(np.float32)
    return {"name": name, "shape": list(array.shape), "datatype": "UINT8" if array.dtype == np.uint8 else "FP32",
            "data": array.ravel().tolist()}


def outputs_of(answer) -> dict:
    return {o["name"]: np.reshape(o["data"], o["shape"]) for o in answer["outputs"]}


def assert_same_keypoints(answer: dict, expected: dict):
    np.testing.assert_allclose(answer["keypoints"], expected["keypoints"], rtol=0, atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(answer["scores"], expected["scores"], rtol=0, atol=1e-5)


def test_v1_v2_and_uploads_answer_as_the_saved_model_in_process(server, in_process, photo):
    _, data, pixels, batch = photo
    boxes = np.array([[10, 8, 60, 90], [5.5, 0, 70, 80]], np.float32)
    center, scale = np.array([[36, 48], [30, 50]], np.float32), np.array([0.5, 0.4], np.float32)
    expected = in_process("serving_default", images=batch)

    status, answer = server.infer([tensor("images", batch)])
    assert status == 200, answer
    assert set(outputs_of(answer)) == {"keypoints", "scores"}  # heatmaps only when asked for
    assert_same_keypoints(outputs_of(answer), expected)
    status, answer = server.infer([tensor("images", batch), tensor("boxes", boxes)])
    assert_same_keypoints(outputs_of(answer), in_process("boxes", images=batch, boxes=boxes))
    status, answer = server.infer([tensor("images", batch), tensor("center", center), tensor("scale", scale)])
    assert_same_keypoints(outputs_of(answer), in_process("center_scale", images=batch, center=center, scale=scale))
    status, answer = server.infer([tensor("images", batch)], outputs=["heatmaps", "keypoints"])
    assert set(outputs_of(answer)) == {"heatmaps", "keypoints"}
    np.testing.assert_allclose(outputs_of(answer)["heatmaps"], expected["heatmaps"], rtol=0, atol=1e-5)

    # the uploaded file: keypoints in the photo's own pixels (1280x720 here)
    encoded = base64.b64encode(data).decode()
    status, answer = server.infer([{"name": "images", "datatype": "BYTES", "shape": [1], "data": [encoded]}])
    assert status == 200, answer
    assert_same_keypoints(outputs_of(answer), in_process("serving_default", images=pixels[None]))

    # V1, TensorFlow Serving's REST API: rows of pixels, {"b64": file}, and the boxes signature
    url = f"{server.url}/v1/models/hourglass:predict"
    status, answer = request(url, {"instances": batch.tolist()})
    assert status == 200, answer
    assert_same_keypoints({k: [p[k] for p in answer["predictions"]] for k in ("keypoints", "scores")}, expected)
    status, answer = request(url, {"instances": [{"b64": encoded}]})
    assert_same_keypoints(answer["predictions"][0], {k: v[0] for k, v in in_process(
        "serving_default", images=pixels[None]).items()})
    status, answer = request(url, {"signature_name": "boxes", "instances": [
        {"images": image.tolist(), "boxes": box.tolist()} for image, box in zip(batch, boxes)]})
    assert_same_keypoints({k: [p[k] for p in answer["predictions"]] for k in ("keypoints", "scores")},
                          in_process("boxes", images=batch, boxes=boxes))

    from keras_hourglass.joints import MPII

    status, metadata = request(f"{server.url}/v2/models/hourglass", method="GET")
    assert status == 200 and metadata["parameters"]["keypoint_names"] == list(MPII.names)
    assert [tuple(limb) for limb in metadata["parameters"]["limbs"]] == list(MPII.limbs)
    assert "keypoints" in [o["name"] for o in metadata["outputs"]]
    status, page = request(f"{server.url}/", method="GET")
    assert status == 200 and "<title>" in page and "/web/app.js" in page
    assert request(f"{server.url}/web/app.js", method="GET")[0] == 200
    status, metrics = request(f"{server.url}/metrics", method="GET")
    assert status == 200 and "request_predict_seconds" in metrics


def test_grpc_answers_v2_as_the_saved_model_in_process(server, in_process, photo):
    import asyncio

    from keras_hourglass.serving import import_kserve

    kserve = import_kserve()
    batch = photo[3]

    async def infer(array, datatype):
        images = kserve.InferInput("images", list(array.shape), datatype)
        images.set_data_from_numpy(array)
        client = kserve.InferenceGRPCClient(f"127.0.0.1:{server.grpc_port}")
        try:
            return await client.infer(kserve.InferRequest(model_name="hourglass", infer_inputs=[images]))
        finally:
            await client.close()

    answer = asyncio.run(infer(batch, "UINT8"))
    assert_same_keypoints({o.name: o.as_numpy() for o in answer.outputs}, in_process("serving_default", images=batch))
    with pytest.raises(Exception, match="INVALID_ARGUMENT[\\s\\S]*got datatype FP32"):
        asyncio.run(infer(batch.astype(np.float32), "FP32"))


def test_bad_requests_get_4xx_with_a_message_and_the_server_goes_on(server, photo, tmp_path):
    _, data, _, batch = photo
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data)
    corrupt_jpeg(truncated)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    files = lambda *items: {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(items)],  # noqa: E731
                                        "data": list(items)}]}
    images = tensor("images", batch)
    v2 = f"{server.url}/v2/models/hourglass/infer"
    v1 = f"{server.url}/v1/models/hourglass:predict"
    big = np.zeros((1, MAX_IMAGE_SIDE + 1, 2, 3), np.uint8)
    cases = [
        # (url, body, expected status, words of the message)
        (v2, b'{"inputs": [', 422, "not a valid inference request"),
        (v1, b'{"instances": [', 400, "request format"),
        (v2, files(b64(b"hello, not an image")), 400, "neither a JPEG"),
        (v2, files("%%% not base64"), 400, "base64"),
        (v2, files(b64(truncated.read_bytes())), 400, "cannot be decoded"),
        (v2, {"inputs": [tensor("images", batch.astype(np.float32))]}, 400, "datatype FP32"),
        (v2, {"inputs": [{**images, "data": [0.5] + images["data"][1:]}]}, 400, "integers 0 to 255"),
        (v2, {"inputs": [tensor("images", batch[0])]}, 400, "[N, height, width, 3]"),
        (v2, {"inputs": [tensor("images", batch[..., :2])]}, 400, "[N, height, width, 3]"),
        (v2, {"inputs": [tensor("images", np.zeros((1, 0, 5, 3), np.uint8))]}, 400, "empty"),
        (v2, {"inputs": [{**images, "data": images["data"][:-1]}]}, 400, "do not fit"),
        (v2, {"inputs": [tensor("images", big)]}, 400, f"at most {MAX_IMAGE_SIDE} pixels"),
        (v2, {"inputs": [images, tensor("boxes", [[0, 0, np.inf, 5], [0, 0, 5, 5]])]}, 400, "finite"),
        (v2, b'{"inputs": [' + json.dumps(images).encode() + b', {"name": "boxes", "datatype": "FP32", '
         b'"shape": [2, 4], "data": [NaN, 0, 5, 5, 0, 0, 5, 5]}]}', 400, "finite"),
        (v2, {"inputs": [images, tensor("boxes", [[5, 0, 1, 5], [0, 0, 5, 5]])]}, 400, "x2 > x1"),
        (v2, {"inputs": [images, tensor("boxes", [[0, 0, 5, 5]])]}, 400, "one row per image"),
        (v2, {"inputs": [images, tensor("scale", [1.0, 1.0])]}, 400, "center and scale"),
        (v2, {"inputs": [images], "outputs": [{"name": "logits"}]}, 400, "outputs must name"),
        (v1, {"instances": [[[[0, 0, 300]]]]}, 400, "integers 0 to 255"),
        (v1, {"instances": [[[0, 0, 0], [0, 0]]]}, 400, "rectangular"),
        (v1, {"signature_name": "crops", "instances": [batch[0].tolist()]}, 400, "signature_name"),
        (v1, {"images": []}, 400, "instances"),
        (f"{server.url}/v2/models/nobody/infer", {"inputs": [images]}, 404, "nobody"),
        (f"{server.url}/v1/models/nobody:predict", {"instances": batch.tolist()}, 404, "nobody"),
        (v2, b"x" * (MAX_BODY_MB * 2**20 + 1), 413, "over the limit"),
    ]
    good = {"inputs": [tensor("images", batch[:1])]}
    for url, body, status, words in cases:
        answer = request(url, body)
        assert answer[0] == status and words in answer[1]["error"], (url, str(body)[:200], answer)
        assert request(v2, good)[0] == 200, f"the server stopped answering after {str(body)[:200]}"
    # A refused request is one warning line in the server's log, not an error with a traceback.
    log = server.log.read_text()
    assert "refused a request: " in log and "Traceback" not in log, log[-3000:]


def raw_request(server, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, str]:
    """`(status, body)` of one request sent as written, with exactly these headers (`Host` included)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def png_header_only_file(width: int, height: int) -> bytes:
    """A valid PNG of width x height black pixels, small on the wire (its rows compress to almost nothing)."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"".join(b"\0" + bytes(3 * width) for _ in range(height)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def server_peak_mib(server) -> float:
    """The server process's peak resident memory so far (Linux's VmHWM), in MiB."""
    status = pathlib.Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def test_cross_site_rebinding_control_and_oversized_requests_are_refused(server, photo):
    """What another web page, another host name or a greedy client can send; the model keeps serving."""
    from keras_hourglass.serving import MAX_IMAGES, MAX_PIXELS

    good = {"inputs": [tensor("images", photo[3][:1])]}
    body = json.dumps(good).encode()
    local = {"host": f"127.0.0.1:{server.port}"}
    infer = "/v2/models/hourglass/infer"
    # a page on another site: a text/plain or form POST needs no preflight, so it is refused
    for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
        status, answer = raw_request(server, "POST", infer, {**local, "content-type": kind}, body)
        assert status == 415 and "content type" in answer, (kind, status, answer)
    # a page on another site whose POST needs no preflight (multipart is one such type): its Origin is refused
    for origin in ("http://attacker.example", "null", f"http://127.0.0.1:{server.port + 1}"):
        status, answer = raw_request(server, "POST", "/v1/models/hourglass:predict",
                                     {**local, "content-type": "multipart/form-data; boundary=x", "origin": origin},
                                     body)
        assert status == 403 and "the page of another site" in answer, (origin, status, answer)
    status, answer = raw_request(server, "POST", infer, {**local, "content-type": "application/json",
                                                         "origin": f"http://127.0.0.1:{server.port}"}, body)
    assert status == 200, answer  # the server's own page
    # headers without end: more than 16 KiB of them is refused (h11), not kept
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"x-a: b\r\n" * 20000 + b"\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while received := connection.recv(65536):
                answer += received
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"", answer[:200]
    # DNS rebinding: another site's name for this address
    status, answer = raw_request(server, "POST", infer, {"host": "attacker.example", "content-type":
                                                         "application/json"}, body)
    assert status == 400 and "does not answer to the host name 'attacker.example'" in answer, answer
    # model control is off: the model cannot be unloaded
    status, answer = raw_request(server, "POST", "/v2/repository/models/hourglass/unload",
                                 {**local, "content-type": "application/json"})
    assert status == 403 and "--allow-model-control" in answer, answer
    # too many images, or too many decoded pixels declared by small files: refused before decoding
    many = {"inputs": [tensor("images", np.zeros((MAX_IMAGES + 1, 4, 4, 3), np.uint8))]}
    status, answer = request(f"{server.url}{infer}", many)
    assert status == 400 and f"at most {MAX_IMAGES}" in answer["error"], answer
    side = MAX_IMAGE_SIDE
    wide = base64.b64encode(png_header_only_file(side, side)).decode()
    count = MAX_PIXELS // side ** 2 + 1
    assert count <= MAX_IMAGES
    files = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [count], "data": [wide] * count}]}
    peak_before = server_peak_mib(server)
    status, answer = request(f"{server.url}{infer}", files)
    assert status == 400 and "pixels together" in answer["error"] and f"images[{count - 1}]" in answer["error"], answer
    # decoded, these files would have taken count * side^2 * 3 bytes (193 MiB) at once, before any copy
    assert server_peak_mib(server) - peak_before < 50, (peak_before, server_peak_mib(server))
    # a person far outside any image
    status, answer = server.infer([tensor("images", photo[3][:1]), tensor("center", [[1e30, 0]]),
                                   tensor("scale", [1e30])])
    assert status == 400 and "near the image" in answer["error"], answer
    status, answer = server.infer([tensor("images", photo[3][:1]), tensor("center", [[30, 40]]),
                                   tensor("scale", [1e-45])])
    assert status == 400 and "scale must be at least 0.005" in answer["error"], answer
    # the binary extension with data that do not fit the declared shape; JSON nested too deep for the parser
    png = png_header_only_file(32, 32)
    header = json.dumps({"inputs": [{"name": "images", "shape": [5], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(png) + 4}}]}).encode()
    status, answer = raw_request(server, "POST", infer, {**local, "content-type": "application/octet-stream",
                                                         "inference-header-content-length": str(len(header))},
                                 header + struct.pack("<I", len(png)) + png)
    assert status == 400 and "not taken in the binary extension" in json.loads(answer)["error"], answer
    # binary pixels beyond what the event loop can turn into lists quickly: refused from the declared size
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 600, 600, 3], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 600 * 600 * 3}}]}).encode()
    status, answer = raw_request(server, "POST", infer, {**local, "content-type": "application/octet-stream",
                                                         "inference-header-content-length": str(len(header))},
                                 header + bytes(600 * 600))
    assert status == 413 and "binary tensor data" in json.loads(answer)["error"], answer
    small = photo[3][:1]
    header = json.dumps({"inputs": [{"name": "images", "shape": list(small.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": small.size}}]}).encode()
    status, answer = raw_request(server, "POST", infer, {**local, "content-type": "application/octet-stream",
                                                         "inference-header-content-length": str(len(header))},
                                 header + small.tobytes())
    assert status == 200, answer  # small binary images are taken
    status, answer = raw_request(server, "POST", infer, {**local, "content-type": "application/json"},
                                 b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    assert 400 <= status < 500 and json.loads(answer)["error"], (status, answer[:300])
    status, answer = raw_request(server, "GET", "/no/such/page", local)
    assert status == 404 and json.loads(answer)["error"], answer
    assert request(f"{server.url}{infer}", good)[0] == 200  # still loaded, still serving


def test_a_request_over_the_timeout_gets_504_and_the_server_goes_on(server, photo):
    """A client that announces a body and stops sending it holds the request until the timeout."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"POST /v2/models/hourglass/infer HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                           b"content-length: 100\r\n\r\n{\"inputs\"")
        start = time.monotonic()
        answer = b""
        while chunk := connection.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        waited = time.monotonic() - start
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 504") and f"longer than {REQUEST_TIMEOUT} s" in answer, (answer, waited)
    assert REQUEST_TIMEOUT - 1 < waited < REQUEST_TIMEOUT + 20, (answer, waited)
    assert server.infer([tensor("images", photo[3])])[0] == 200


def test_a_concurrent_burst_all_succeeds(server, photo):
    encoded = base64.b64encode(photo[1]).decode()
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [encoded]}]}
    statuses = []

    def client():
        for _ in range(4):
            statuses.append(server.infer(body["inputs"])[0])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == [200] * 32


def test_a_keras_file_is_served_as_its_saved_model_and_sigterm_lets_requests_finish(in_process, photo, tmp_path):
    server = Server(str(KERAS_MODEL), tmp_path / "server.log")
    status, answer = server.infer([tensor("images", photo[3])])
    assert status == 200, answer
    assert_same_keypoints(outputs_of(answer), in_process("serving_default", images=photo[3]))
    encoded = base64.b64encode(photo[1]).decode()
    inputs = [{"name": "images", "datatype": "BYTES", "shape": [6], "data": [encoded] * 6}]  # ~0.5 s each
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(server.infer(inputs)[0])) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # connected and running
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert server.process.wait(timeout=60) == 0, server.log.read_text()[-3000:]
    assert answers == [200] * 3
    with pytest.raises(OSError):
        request(f"{server.url}/v2/health/ready", method="GET", timeout=5)


@pytest.fixture(scope="module")
def browser():
    """Playwright's `sync_playwright` for the system Chromium, or a skip (a failure in CI) saying what is missing.

    Module-scoped and asked for first, so that a skip comes before the server starts.
    """
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[test]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KERAS_HOURGLASS_CHROMIUM)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {problem}")
        pytest.skip(problem)
    return sync_playwright


def test_the_web_page_draws_the_servers_skeleton_in_chromium(browser, server, photo, tmp_path):
    sync_playwright = browser
    path, data, pixels, _ = photo
    encoded = base64.b64encode(data).decode()
    expected = outputs_of(server.infer([{"name": "images", "datatype": "BYTES", "shape": [1], "data": [encoded]}])[1])
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, accept_downloads=True,
            viewport={"width": 1360, "height": 860}, device_scale_factor=1)
        try:
            page = chromium.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.goto(server.url + "/")
            page.wait_for_selector("#server-state.ok", timeout=20000)
            page.set_input_files("#file", str(path))
            page.wait_for_selector("body[data-state=done]", timeout=30000)

            drawn = page.eval_on_selector_all("#overlay circle.joint", """nodes => nodes.map(n => {
                const r = n.getBoundingClientRect();
                return {name: n.dataset.joint, x: +n.dataset.x, y: +n.dataset.y, cx: r.x + r.width / 2,
                        cy: r.y + r.height / 2}; })""")
            photo_box = page.eval_on_selector("#photo", "n => { const r = n.getBoundingClientRect(); "
                                                       "return [r.x, r.y, r.width, r.height]; }")
            from keras_hourglass.joints import MPII

            assert [d["name"] for d in drawn] == list(MPII.names)
            keypoints = np.array([[d["x"], d["y"]] for d in drawn])
            np.testing.assert_allclose(keypoints, expected["keypoints"][0], rtol=0, atol=PIXEL_TOLERANCE)
            # where each joint is on the screen: its pixel centre, through the photo's displayed size
            x0, y0, width, height = photo_box
            on_screen = np.array([[d["cx"], d["cy"]] for d in drawn])
            where = np.stack([x0 + (keypoints[:, 0] + 0.5) * width / pixels.shape[1],
                              y0 + (keypoints[:, 1] + 0.5) * height / pixels.shape[0]], axis=1)
            np.testing.assert_allclose(on_screen, where, atol=1.0)
            assert len(page.query_selector_all("#overlay line.limb")) == len(MPII.limbs)
            assert page.inner_text("#time").endswith("ms")
            page.hover(f"#overlay circle[data-joint={MPII.names[9]}]")
            assert MPII.names[9].replace("_", " ") in page.inner_text("#tooltip")
            page.screenshot(path=str(tmp_path / "page.png"))

            # boxes dragged around people: each is one more person, which the page asks the boxes signature for
            for left, right, count in ((0.55, 0.76, 1), (0.05, 0.45, 2)):  # the man, then the truck's hood
                page.mouse.move(x0 + width * left, y0 + height * 0.1)
                page.mouse.down()
                page.mouse.move(x0 + width * right, y0 + height * 0.95, steps=5)
                page.mouse.up()
                page.wait_for_function(f"window.poseResult && (window.poseResult.people || []).length === {count}",
                                       timeout=30000)
                page.wait_for_selector("body[data-state=done]", timeout=30000)
                result = page.evaluate("window.poseResult")
                boxes = np.array([person["box"] for person in result["people"]], np.float32)
                answer = outputs_of(server.infer([{"name": "images", "datatype": "BYTES", "shape": [1],
                                                   "data": [encoded]}, tensor("boxes", boxes)])[1])
                assert answer["keypoints"].shape == (count, len(MPII.names), 2)  # one image, a person per box
                np.testing.assert_allclose([[[k["x"], k["y"]] for k in person["keypoints"]]
                                            for person in result["people"]], answer["keypoints"],
                                           rtol=0, atol=PIXEL_TOLERANCE)
                assert len(page.query_selector_all("#overlay rect.box")) == count
            with page.expect_download() as download:
                page.click("#download")
            saved = json.loads(pathlib.Path(download.value.path()).read_text())
            assert [[k["name"] for k in p["keypoints"]] for p in saved["people"]] == [list(MPII.names)] * 2
            assert [p["box"] for p in saved["people"]] == [p["box"] for p in result["people"]]
            page.screenshot(path=str(tmp_path / "page-box.png"))
            if os.environ.get("KERAS_HOURGLASS_FIGURES"):  # docs/make_figures.py --page: the site's screenshot
                shutil.copy(tmp_path / "page-box.png", pathlib.Path(os.environ["KERAS_HOURGLASS_FIGURES"]) / "page.png")
            assert not errors, errors

            # a file that is not an image: a message, and nothing of the previous photo left on screen
            text = tmp_path / "notes.txt"
            text.write_text("not a photo")
            page.set_input_files("#file", str(text))
            page.wait_for_function("document.getElementById('stage').hidden", timeout=10000)
            assert "not an image" in page.inner_text("#message")
            assert page.inner_text("#image-size") == "–" and not page.query_selector_all("#joints li")
        finally:
            chromium.close()


def test_a_port_in_use_is_refused_before_the_model_loads(capsys):
    from keras_hourglass.cli import serve

    from tests.conftest import one_line_error

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        line = one_line_error(serve.main, [str(KERAS_MODEL), "--port", str(port)], capsys)
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in line and "Choose another port" in line
    assert time.monotonic() - started < 5  # refused at once, not after loading the model


def test_without_the_serve_extra_serve_names_it(monkeypatch, capsys):
    import importlib.util

    from keras_hourglass.cli import serve

    from tests.conftest import one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kserve" else real(name, *a))
    line = one_line_error(serve.main, [str(KERAS_MODEL)], capsys)
    assert "the server needs kserve" in line and "pip install 'keras-hourglass[serve]'" in line


def test_work_stops_at_the_next_image_once_its_request_is_answered_504(tiny_saved_model, caplog):
    """In process, with the real model: the request is abandoned (as `LimitsMiddleware` does at its timeout) while
    its first image runs; the second image never runs, and the log says so."""
    import asyncio
    import logging

    from keras_hourglass.serving import pose_serving_model

    model = pose_serving_model("hourglass", tiny_saved_model[2])
    model.call_each_signature()  # the signatures' first calls, which serve() makes once the server is up
    network, calls, running, release = model.signatures["serving_default"], [], threading.Event(), threading.Event()

    def first_call_waits(**inputs):
        calls.append(inputs["images"].shape)
        running.set()
        release.wait(30)
        return network(**inputs)

    model.signatures["serving_default"] = first_call_waits
    # images of two sizes: one model call each
    payload = {"instances": [np.zeros((40, 30, 3), np.uint8).tolist(), np.zeros((30, 40, 3), np.uint8).tolist()]}

    async def abandon():
        task = asyncio.ensure_future(model.predict(payload))
        await asyncio.get_running_loop().run_in_executor(None, running.wait, 30)
        task.cancel()  # the 504
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="kserve"):
        asyncio.run(abandon())
        model.workers.shutdown(wait=True)  # the abandoned work has ended
    assert calls == [(1, 40, 30, 3)]
    assert "a request answered 504 stopped its work after 1 of 2 model calls" in caplog.text


def failing_saved_model(folder: pathlib.Path, metadata_from: str) -> str:
    """A SavedModel with the five signatures and a real export's metadata, whose graphs fail when they run."""
    import tensorflow as tf

    images = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
    crops = tf.TensorSpec([None, 64, 64, 3], tf.float32, name="images")

    def fails(count):
        with tf.control_dependencies([tf.debugging.assert_less(count, 0, message="a deliberately broken model")]):
            return {"keypoints": tf.zeros([count, 16, 2]), "scores": tf.zeros([count, 16]),
                    "heatmaps": tf.zeros([count, 16, 16, 16])}

    module = tf.Module()
    signatures = {
        "serving_default": tf.function(lambda images: fails(tf.shape(images)[0]), input_signature=[images]),
        "boxes": tf.function(lambda images, boxes: fails(tf.shape(images)[0]),
                             input_signature=[images, tf.TensorSpec([None, 4], tf.float32, name="boxes")]),
        "center_scale": tf.function(lambda images, center, scale: fails(tf.shape(images)[0]), input_signature=[
            images, tf.TensorSpec([None, 2], tf.float32, name="center"), tf.TensorSpec([None], tf.float32, name="scale")]),
        "crops": tf.function(lambda images: fails(tf.shape(images)[0]), input_signature=[crops]),
        "heatmaps": tf.function(lambda images: fails(tf.shape(images)[0]), input_signature=[crops]),
    }
    path = folder / "broken"
    tf.saved_model.save(module, str(path), signatures={k: f.get_concrete_function() for k, f in signatures.items()})
    shutil.copytree(pathlib.Path(metadata_from) / "assets.extra", path / "assets.extra")
    return str(path)


def test_a_model_that_fails_its_first_calls_is_ready_then_not_with_one_line(tiny_saved_model, tmp_path):
    """The signatures' first calls run after ready; a model that fails them answers 503 to /v2/health/ready (KServe's
    own route says 200 whatever its model says) and to predictions, the log says why in one line each, and SIGTERM
    still stops it with status 0."""
    broken = failing_saved_model(tmp_path, tiny_saved_model[2])
    port, log = free_port(), tmp_path / "server.log"
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), broken, "--port", str(port)], cwd=ROOT,
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "failed its first call" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:  # the port opens a moment after the first calls begin
            with contextlib.suppress(OSError):
                if request(f"{url}/v2/health/live", method="GET", timeout=2)[0] == 200:
                    break
            time.sleep(0.1)
        assert request(f"{url}/v2/health/ready", method="GET") == (503, {"ready": False})
        assert request(f"{url}/v2/health/live", method="GET")[0] == 200
        status, body = request(f"{url}/v1/models/hourglass:predict", {"instances": [[[[0, 0, 0]]]]})
        assert status == 503 and "not ready" in body["error"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    failed = [line for line in lines if "failed its first call" in line]
    assert len(failed) == 1, failed
    assert "the model failed its first call of" in failed[0]
    assert "is not ready (assertion failed: [a deliberately broken model]" in failed[0]
    assert "Traceback" not in log.read_text()


def test_a_full_queue_answers_503_and_slow_headers_are_cut_off(server, photo):
    """`MAX_QUEUED` requests whose bodies never come hold the queue: the next prediction is answered 503 at once,
    health checks still 200. Connections that send no headers, or a header line now and then, are closed
    `HEADER_TIMEOUT` s after they open."""
    from keras_hourglass.serving import HEADER_TIMEOUT, MAX_QUEUED

    silent = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    trickling = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    opened = time.monotonic()
    stalled = []
    try:
        for _ in range(MAX_QUEUED):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            connection.sendall(b"POST /v2/models/hourglass/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            stalled.append(connection)
        time.sleep(0.5)  # the server has read their headers
        status, answer = server.infer([tensor("images", photo[3])])
        assert status == 503 and f"{MAX_QUEUED} requests are running or waiting" in answer["error"], answer
        # a client still sending its body, slowly, reads the answer too: the body is read first, not cut off
        chunk, chunks = b" " * (256 * 1024), 8
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
            slow.sendall(b"POST /v2/models/hourglass/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % (len(chunk) * chunks))
            for _ in range(chunks):
                time.sleep(0.1)
                slow.sendall(chunk)
            answer = b""
            while received := slow.recv(65536):  # the server closes the connection after its answer
                answer += received
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 503") and "running or waiting" in answer, answer
        assert request(f"{server.url}/v2/health/ready", method="GET")[0] == 200
    finally:
        for connection in stalled:
            connection.close()
    trickling.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
    closed = {}
    while len(closed) < 2 and time.monotonic() - opened < HEADER_TIMEOUT + 20:
        for name, connection in (("silent", silent), ("trickling", trickling)):
            if name in closed:
                continue
            try:
                if name == "trickling":
                    connection.sendall(b"x-slow: 1\r\n")
                connection.settimeout(0.5)
                if connection.recv(1) == b"":
                    closed[name] = time.monotonic() - opened
            except socket.timeout:
                pass
            except OSError:  # reset while sending
                closed[name] = time.monotonic() - opened
    silent.close()
    trickling.close()
    assert set(closed) == {"silent", "trickling"}, closed
    assert all(HEADER_TIMEOUT - 1 < seconds < HEADER_TIMEOUT + 10 for seconds in closed.values()), closed
    assert server.infer([tensor("images", photo[3])])[0] == 200


def test_json_bodies_of_too_many_values_are_refused_before_kserve_parses_them():
    """KServe parses JSON on the event loop: a body of millions of numbers would hold up every request. Here the
    middleware in front of it, in process, with a stand-in for the app behind it (which must not be reached)."""
    import asyncio

    from keras_hourglass.serving import MAX_JSON_VALUES, LimitsMiddleware

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(await receive())

    async def call(body: bytes, kind: bytes):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop()

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"content-type", kind)]}
        await LimitsMiddleware(app, max_body_bytes=8 * 2**20)(scope, receive, send)

    many = b"[" + b"0," * (MAX_JSON_VALUES + 1) + b"0]"
    asyncio.run(call(many, b"application/json"))
    assert not reached and sent[0]["status"] == 413 and b"more than 1,048,576 values" in sent[1]["body"]
    sent.clear()
    asyncio.run(call(b"[" + b"0," * (MAX_JSON_VALUES - 1) + b"0]", b"application/json"))
    asyncio.run(call(many, b"application/octet-stream"))  # binary data: commas are bytes, not values
    assert len(reached) == 2 and not sent


TWO_PEOPLE = "052475643.jpg"  # two men seated side by side


@pytest.fixture(scope="module")
def people_server(browser, tmp_path_factory):
    """`serve.py` on a multi-person SavedModel: the pose-ae-train fixture network imported at 64x64.

    Its weights are the reference's initial ones, whose heatmaps peak near 0.14: `--detection-threshold 0.05`.
    """
    from keras_hourglass.cli import import_weights

    folder = tmp_path_factory.mktemp("people")
    checkpoint = ROOT / "tests" / "data" / "associative_embedding" / "ae_s2_w8_legacy.pt"
    assert import_weights.main([str(checkpoint), "--output", str(folder / "ae"), "--image-size", "64",
                                "--no-tflite"]) == 0
    server = Server(str(folder / "ae" / "saved_model"), folder / "server.log", "--detection-threshold", "0.05")
    yield server, str(folder / "ae" / "saved_model")
    assert server.stop() == 0, server.log.read_text()[-3000:]


def test_a_multi_person_model_answers_every_person_over_v1_v2_and_on_the_page(browser, people_server, shared_data,
                                                                             tmp_path):
    from keras_hourglass.codec import AssociativeEmbeddingCodec
    from keras_hourglass.data.records import decode_photo
    from keras_hourglass.joints import COCO_PERSON
    from keras_hourglass.multiperson import load_multi_person_model, predict_people

    server, saved_model = people_server
    path = shared_data / "mpii" / "images" / TWO_PEOPLE
    data = path.read_bytes()
    pixels = decode_photo(data, str(path))[0]
    expected = predict_people(load_multi_person_model(saved_model), pixels, AssociativeEmbeddingCodec(0.05))
    encoded = base64.b64encode(data).decode()
    status, answer = server.infer([{"name": "images", "datatype": "BYTES", "shape": [2], "data": [encoded] * 2}])
    assert status == 200, answer
    rows = outputs_of(answer)
    people = len(expected[0])
    assert people > 1 and rows["image_index"].tolist() == [0] * people + [1] * people  # every person of both
    for name, value in zip(("keypoints", "scores", "person_scores"), expected):
        np.testing.assert_allclose(rows[name][:people], value, rtol=0, atol=1e-3)
    status, v1 = request(f"{server.url}/v1/models/hourglass:predict", {"instances": [{"b64": encoded}]})
    assert status == 200 and len(v1["predictions"][0]["keypoints"]) == people
    assert sorted(v1["predictions"][0]) == ["keypoints", "person_scores", "scores"]
    lacking = [[xy == [None, None] for xy in person] for person in v1["predictions"][0]["keypoints"]]
    assert lacking == (expected[1] <= 0).tolist() and any(map(any, lacking))  # V1: null where a person lacks a joint
    status, refused = server.infer([tensor("images", pixels[None, :32, :32]), tensor("boxes", [[0, 0, 9, 9]])])
    assert status == 400 and "multi-person model" in refused["error"]
    status, metadata = request(f"{server.url}/v2/models/hourglass", method="GET")
    assert metadata["parameters"]["multi_person"] is True and [i["name"] for i in metadata["inputs"]] == ["images"]

    with browser() as playwright:  # the page, in Chromium
        chromium = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 860}, device_scale_factor=1)
        try:
            page = chromium.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            page.wait_for_selector("#server-state.ok", timeout=20000)
            page.set_input_files("#file", str(path))
            page.wait_for_selector("body[data-state=done]", timeout=30000)
            result = page.evaluate("window.poseResult")
            assert len(result["people"]) == people and f"{people} people found" in page.inner_text("#message")
            assert page.is_hidden("#legend") and "finds every person" in page.inner_text("#box-hint")
            drawn = page.eval_on_selector_all("#overlay circle.joint", """nodes => nodes.map(n => ({
                person: +n.dataset.person, name: n.dataset.joint, x: +n.dataset.x, y: +n.dataset.y}))""")
            found = expected[1] > 0
            assert len(drawn) == found.sum()  # the joints each person has, no others
            for joint in drawn:
                index = COCO_PERSON.names.index(joint["name"])
                np.testing.assert_allclose([joint["x"], joint["y"]], expected[0][joint["person"] - 1, index],
                                           atol=1e-3)
            assert len(page.query_selector_all("#joints li")) == people
            colours = {n.get_attribute("fill") for n in page.query_selector_all("#overlay circle[data-person='1']")}
            assert len(colours) == 1 and colours != {n.get_attribute("fill") for n in
                                                     page.query_selector_all("#overlay circle[data-person='2']")}
            inside = next(n for n in reversed(page.query_selector_all("#overlay circle.joint"))  # the top one; the
                          # overlay clips the joints outside the photo
                          if 0 <= float(n.get_attribute("data-x")) < pixels.shape[1]
                          and 0 <= float(n.get_attribute("data-y")) < pixels.shape[0])
            inside.hover()
            assert f"person {inside.get_attribute('data-person')} ·" in page.inner_text("#tooltip")
            page.screenshot(path=str(tmp_path / "page-people.png"))
            assert not errors, errors
        finally:
            chromium.close()



def test_one_image_with_several_boxes_is_one_person_per_box(server, photo):
    _, _, _, small = photo
    image = small[0]
    boxes = [[5, 5, 60, 90], [10, 0, 70, 95]]
    status, answer = request(f"{server.url}/v1/models/hourglass:predict",
                             {"signature_name": "boxes", "inputs": {"images": [image.tolist()], "boxes": boxes}})
    assert status == 200 and len(answer["predictions"]) == 2
    for box, prediction in zip(boxes, answer["predictions"]):  # each as if the image came once with its box
        status, alone = request(f"{server.url}/v1/models/hourglass:predict",
                                {"signature_name": "boxes", "instances": [{"images": image.tolist(), "boxes": box}]})
        np.testing.assert_allclose(prediction["keypoints"], alone["predictions"][0]["keypoints"], atol=1e-4)
    status, refused = server.infer([tensor("images", image[None]), tensor("boxes", [[5, 5, 60, 90]] * 33)])
    assert status == 400 and "33 people of one image; at most 32" in refused["error"]
    status, refused = server.infer([tensor("images", image[None]), tensor("center", [[30, 40]] * 3),
                                    tensor("scale", [0.5] * 2)])
    assert status == 400 and "center 3, scale 2 rows" in refused["error"]
    status, refused = request(f"{server.url}/v1/models/hourglass:predict",  # boxes without their signature
                              {"instances": [{"images": image.tolist(), "boxes": boxes[0]}]})
    assert status == 400 and "which signature serving_default does not take" in refused["error"]
