"""The server under the heaviest JSON it takes: concurrent requests of an image as nested pixel lists.

    python -m bench.serve_json_load [--clients 16] [--side 591]

KServe parses a JSON body on the server's event loop, so while it parses,
nothing else is answered, the health check included; the server refuses
bodies of more than `keras_hourglass.serving.MAX_JSON_VALUES` values for
that reason. This sends `--clients` requests at once, each one image of
`--side` x `--side` RGB pixels as V1 `instances` lists (591: just under the
limit), and polls `/v2/health/ready` meanwhile. It prints the statuses, the
wall time and how long the health check took (the longest and the median),
with the CPU.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time

from bench.cpu import describe_cpu
from bench.serve_speed import DEMO_MODEL, free_port, start_server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEMO_MODEL), help="SavedModel folder or .keras file (default: the demo model)")
    parser.add_argument("--clients", type=int, default=16, help="requests sent at once (default 16, the queue's size)")
    parser.add_argument("--side", type=int, default=591, help="image side in pixels (default 591: under the limit)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.side < 1:
        parser.error("--clients and --side must be positive")
    row = "[" + ",".join(["[0,0,0]"] * args.side) + "]"
    body = ('{"instances": [[' + ",".join([row] * args.side) + "]]}").encode()
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".log") as log:
        server = start_server(args.model, port, log)
        statuses, delays = [], []

        def post():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            connection.request("POST", "/v1/models/hourglass:predict", body, {"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)

        threads = [threading.Thread(target=post) for _ in range(args.clients)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            asked = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            connection.request("GET", "/v2/health/ready")
            connection.getresponse().read()
            delays.append(time.monotonic() - asked)
            time.sleep(0.1)
        wall = time.monotonic() - start
        server.terminate()
        server.wait(60)
    print(describe_cpu())
    print(f"{args.clients} requests of {args.side}x{args.side} pixels as JSON lists ({body.count(b','):,} values, "
          f"{len(body) / 1e6:.1f} MB each): statuses {sorted(statuses)}, {wall:.1f} s")
    print(f"health check meanwhile: longest {max(delays):.2f} s, median {statistics.median(delays):.2f} s "
          f"({len(delays)} checks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
