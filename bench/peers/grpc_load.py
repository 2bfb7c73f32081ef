"""gRPC load for the overhead benchmark: unary calls of sonde.test.Echo (the test peer's
service, tests/peers/grpc) from a grpcio client, at saturation or at a fixed rate.

Usage: grpc_load.py PORT SECONDS [RATE]
Threads share one channel (one HTTP/2 connection, many concurrent streams). Prints one JSON
line: {"requests", "errors", "rps", "p50_ms", "p99_ms"}.
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "peers", "grpc"))

import grpc  # noqa: E402

from gen import load  # noqa: E402

pb, pb_grpc = load()
THREADS = 8


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else None
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = pb_grpc.EchoStub(channel)
    msg = pb.Msg(text="bench", count=2)
    lat = [[] for _ in range(THREADS)]
    errors = [0] * THREADS
    start = time.monotonic()
    end = start + seconds

    def worker(i):
        interval = THREADS / rate if rate else 0.0
        nxt = start + i * interval / THREADS
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if interval:
                if now < nxt:
                    time.sleep(nxt - now)
                    continue
                nxt += interval
            t0 = time.monotonic()
            try:
                stub.Unary(msg, timeout=5)
            except grpc.RpcError:
                errors[i] += 1
                continue
            lat[i].append(time.monotonic() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    all_lat = sorted(x for lst in lat for x in lst)
    n = len(all_lat)

    def pct(p):
        return all_lat[min(n - 1, int(n * p))] * 1000.0 if n else 0.0

    print(json.dumps({"requests": n, "errors": sum(errors), "rps": n / took,
                      "p50_ms": pct(0.50), "p99_ms": pct(0.99)}), flush=True)


if __name__ == "__main__":
    main()
