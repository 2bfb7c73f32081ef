"""Drives a service chain for sampling tests over keep-alive connections, from several threads.

    sampling_driver.py HOST:PORT --plain N --err N --slow N --parent0 N --parent1 N [--threads T]

`/item/<n>` plain requests, `/err/<n>`, `/slow/<n>`, and requests that arrive with a
`traceparent` whose sampled flag is 0 (`/p0/<n>`) or 1 (`/p1/<n>`). Prints one JSON line:
{"statuses": {status: count}, "parent0": [trace ids], "parent1": [trace ids]}.
"""
import argparse
import collections
import http.client
import json
import os
import threading


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    for k in ("plain", "err", "slow", "parent0", "parent1"):
        p.add_argument("--" + k, type=int, default=0)
    p.add_argument("--threads", type=int, default=4)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    work = []
    ids = {"parent0": [], "parent1": []}
    for i in range(a.plain):
        work.append((f"/item/{i}", None))
    for i in range(a.err):
        work.append((f"/err/{i}", None))
    for i in range(a.slow):
        work.append((f"/slow/{i}", None))
    for flag, key, n in (("00", "parent0", a.parent0), ("01", "parent1", a.parent1)):
        for i in range(n):
            tid = os.urandom(16).hex()
            ids[key].append(tid)
            work.append((f"/p{flag[1]}/{i}", f"00-{tid}-{os.urandom(8).hex()}-{flag}"))
    lock = threading.Lock()
    statuses = collections.Counter()

    def worker(items):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for path, tp in items:
            headers = {"traceparent": tp} if tp else {}
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            with lock:
                statuses[resp.status] += 1
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(work[i :: a.threads],)) for i in range(a.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"statuses": dict(statuses), **ids}), flush=True)


if __name__ == "__main__":
    main()
