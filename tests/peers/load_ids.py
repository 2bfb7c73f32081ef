"""A load generator whose every request is unique: N GETs of BASE/ID (ID = 0..N-1) from C
threads, each on its own keep-alive HTTP/1.1 connection, so that a test can tell which request
each span of a traced chain belongs to (the chain forwards the path to its next hop).

Usage: load_ids.py HOST PORT PREFIX N C
Prints "ok K" where K is the number of 200 answers.
"""
import http.client
import sys
import threading

host, port, prefix, n, c = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ok = 0
lock = threading.Lock()


def worker(first):
    global ok
    conn = http.client.HTTPConnection(host, port, timeout=30)
    mine = 0
    for i in range(first, n, c):
        conn.request("GET", f"{prefix}/{i}")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            mine += 1
    conn.close()
    with lock:
        ok += mine


threads = [threading.Thread(target=worker, args=(k,)) for k in range(c)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"ok {ok}")
