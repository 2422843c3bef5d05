"""digitnet.serve on loopback: latency of one-image requests, and throughput with 8 concurrent clients.

    python bench/serve_latency.py CHECKPOINT [--requests 200] [--clients 8] [--per-client 50] [--time-limit 120]

Starts `python -m digitnet.serve CHECKPOINT --port 0` (127.0.0.1, a free port), warms it up, then sends
`--requests` sequential requests of samples/sample_image.png (p50/p99 latency), then `--clients` threads that each
send `--per-client` requests (requests/s). Bounded in count and in time (--time-limit seconds for each phase); the
server is stopped at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample_image.png"


def make_client() -> httpx.Client:
    return httpx.Client(timeout=30)  # one kept-alive connection per client, as a browser or a script would use


def post(client: httpx.Client, url: str, data: bytes) -> float:
    start = time.perf_counter()
    response = client.post(url, files=[("files", ("sample.png", data, "image/png"))])
    response.raise_for_status()
    assert response.json()["results"][0]["digit"] in range(10)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--time-limit", type=float, default=120.0)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "digitnet.serve", args.checkpoint, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        match = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
        assert match, "the server did not start"
        url = match.group(0) + "api/predict"
        data = SAMPLE.read_bytes()
        with make_client() as client:
            for _ in range(10):
                post(client, url, data)
            latencies, deadline = [], time.perf_counter() + args.time_limit
            while len(latencies) < args.requests and time.perf_counter() < deadline:
                latencies.append(post(client, url, data))
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"one image, {len(latencies)} sequential requests: p50 {1000 * statistics.median(latencies):.1f} ms, "
            f"p99 {1000 * p99:.1f} ms"
        )

        done, errors, deadline = [], [], time.perf_counter() + args.time_limit

        def client_loop():
            with make_client() as client:
                for _ in range(args.per_client):
                    if time.perf_counter() > deadline:
                        return
                    try:
                        done.append(post(client, url, data))
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        errors.append(exc)

        threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        print(
            f"{args.clients} concurrent clients: {len(done)} requests in {seconds:.1f} s = {len(done) / seconds:.1f} "
            f"requests/s, p50 {1000 * statistics.median(done):.1f} ms, {len(errors)} errors"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
