"""A fake Kubernetes API server over HTTPS, for tests (no real one can run on our machines).

It serves what sonde's watchers use, the way kube-apiserver does: list (with resourceVersion,
field selector spec.nodeName=...) and watch (chunked JSON lines from a resourceVersion, with
BOOKMARK events, `410 Gone` as an ERROR event for a compacted resourceVersion) for pods and
namespaces, and checks the bearer token. Tests drive it over /fake/* on the same port:

  POST /fake/pods          body: a Pod object (created or replaced, by metadata.uid)
  POST /fake/pods/delete   body: {"uid": "..."}
  POST /fake/namespaces    body: a Namespace object (by metadata.name)
  POST /fake/expire        compact history: watches from older resourceVersions get 410 Gone
  POST /fake/disconnect    drop every open watch connection mid-stream (no final chunk)
  GET  /fake/log           the API requests served so far, as JSON

Usage: fake_apiserver.py --cert C --key K [--port 0] [--token T] [--bookmark-interval S]
Prints "LISTENING <https port> <control port>" when ready: the control port serves the same
routes over plain HTTP on 127.0.0.1, for the test itself (sonde is given the HTTPS one).
"""

import argparse
import copy
import json
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
STATE = {
    "rv": 1,
    "compacted": 0,  # watches from a resourceVersion below this get 410 Gone
    "disconnects": 0,
    "pods": {},  # uid -> object
    "namespaces": {},  # name -> object
    "events": [],  # (rv, kind, type, object)
    "log": [],
}
ARGS = None
KINDS = {"pods": ("Pod", "pods"), "namespaces": ("Namespace", "namespaces")}


def bump():
    STATE["rv"] += 1
    return str(STATE["rv"])


def record(kind, typ, obj):
    STATE["events"].append((int(obj["metadata"]["resourceVersion"]), kind, typ, copy.deepcopy(obj)))
    # Bounded history, like etcd compaction.
    if len(STATE["events"]) > 10000:
        del STATE["events"][:5000]
    LOCK.notify_all()


def matches(obj, selector):
    if not selector:
        return True
    for term in selector.split(","):
        k, _, v = term.partition("=")
        if k == "spec.nodeName" and (obj.get("spec") or {}).get("nodeName") != v:
            return False
        if k == "metadata.name" and obj["metadata"].get("name") != v:
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    # --- control ---------------------------------------------------------------------------
    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        body = self.body()
        with LOCK:
            if url.path == "/fake/pods":
                obj = body
                obj.setdefault("apiVersion", "v1")
                obj.setdefault("kind", "Pod")
                uid = obj["metadata"]["uid"]
                typ = "MODIFIED" if uid in STATE["pods"] else "ADDED"
                obj["metadata"]["resourceVersion"] = bump()
                STATE["pods"][uid] = obj
                record("pods", typ, obj)
            elif url.path == "/fake/pods/delete":
                obj = STATE["pods"].pop(body["uid"], None)
                if obj is not None:
                    obj["metadata"]["resourceVersion"] = bump()
                    record("pods", "DELETED", obj)
            elif url.path == "/fake/namespaces":
                obj = body
                obj.setdefault("apiVersion", "v1")
                obj.setdefault("kind", "Namespace")
                name = obj["metadata"]["name"]
                obj["metadata"].setdefault("uid", "ns-" + name)
                typ = "MODIFIED" if name in STATE["namespaces"] else "ADDED"
                obj["metadata"]["resourceVersion"] = bump()
                STATE["namespaces"][name] = obj
                record("namespaces", typ, obj)
            elif url.path == "/fake/expire":
                STATE["compacted"] = STATE["rv"] + 1
                STATE["events"].clear()
                STATE["disconnects"] += 1
                LOCK.notify_all()
            elif url.path == "/fake/disconnect":
                STATE["disconnects"] += 1
                LOCK.notify_all()
            else:
                return self.send_json(404, {"error": url.path})
            rv = STATE["rv"]
        self.send_json(200, {"resourceVersion": str(rv)})

    # --- API ---------------------------------------------------------------------------------
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/fake/log":
            with LOCK:
                return self.send_json(200, STATE["log"])
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["api", "v1"] or parts[2] not in KINDS:
            return self.send_json(404, status(404, "NotFound", f"{url.path} is not served"))
        kind = parts[2]
        with LOCK:
            STATE["log"].append(
                {
                    "path": url.path,
                    "query": q,
                    "auth": self.headers.get("Authorization", ""),
                    "at": time.time(),
                }
            )
        if self.headers.get("Authorization") != f"Bearer {ARGS.token}":
            return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        if q.get("watch") in ("true", "1"):
            return self.watch(kind, q)
        return self.list(kind, q)

    def list(self, kind, q):
        sel = q.get("fieldSelector", "")
        with LOCK:
            items = [copy.deepcopy(o) for o in STATE[kind].values() if matches(o, sel)]
            rv = str(STATE["rv"])
        k, _ = KINDS[kind]
        self.send_json(
            200,
            {"kind": k + "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items},
        )

    def chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, kind, q):
        sel = q.get("fieldSelector", "")
        since = int(q.get("resourceVersion") or 0)
        timeout = float(q.get("timeoutSeconds") or 300)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        k, _ = KINDS[kind]
        deadline = time.time() + timeout
        with LOCK:
            if since < STATE["compacted"]:
                gone = status(410, "Expired", f"too old resource version: {since} ({STATE['compacted']})")
                self.chunk({"type": "ERROR", "object": gone})
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            disconnects = STATE["disconnects"]
        last_bookmark = time.time()
        sent = since
        try:
            while time.time() < deadline:
                with LOCK:
                    pending = [e for e in STATE["events"] if e[1] == kind and e[0] > sent]
                    if not pending and STATE["disconnects"] == disconnects:
                        LOCK.wait(timeout=0.1)
                        pending = [e for e in STATE["events"] if e[1] == kind and e[0] > sent]
                    dropped = STATE["disconnects"] != disconnects
                    rv_now = STATE["rv"]
                if dropped:
                    # Mid-stream: close the connection without the final chunk.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                for rv, _, typ, obj in pending:
                    sent = max(sent, rv)
                    if matches(obj, sel):
                        self.chunk({"type": typ, "object": obj})
                if bookmarks and time.time() - last_bookmark >= ARGS.bookmark_interval:
                    last_bookmark = time.time()
                    sent = max(sent, rv_now)
                    self.chunk(
                        {
                            "type": "BOOKMARK",
                            "object": {"kind": k, "apiVersion": "v1", "metadata": {"resourceVersion": str(sent)}},
                        }
                    )
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="fake-token")
    p.add_argument("--bookmark-interval", type=float, default=1.0)
    ARGS = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    control = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"LISTENING {srv.server_address[1]} {control.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
