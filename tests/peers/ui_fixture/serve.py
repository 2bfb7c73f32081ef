"""A stand-in for `sonde run --ui` to work on the trace view page without an agent: serves
export/src/ui/assets and the JSON of ui-api.md (with the same Content-Security-Policy header and
the same filters) from fixture.json plus generated traces. Loopback only.

Usage: serve.py [--port 9465] [--prefix /sonde/] [--live] [--span-metrics-off] [--map FILE]
  --live  adds a new trace every second (and late spans to it), and bumps the edge counters
  --map   serves FILE (JSON of api/services) instead of the fixture's service map
"""

import argparse
import copy
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parents[2] / "export" / "src" / "ui" / "assets"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {"index.html": "text/html; charset=utf-8", "ui.js": "text/javascript; charset=utf-8",
         "ui.css": "text/css; charset=utf-8"}

FIXTURE = json.loads((HERE / "fixture.json").read_text())
LOCK = threading.Lock()
TRACES = {}  # trace_id -> full trace (with start_unix_ms)
SERVICES = copy.deepcopy(FIXTURE["services"])
RNG = random.Random(7)

# caller -> (callee, server span name, client span name) choices for generated traces
CALLS = {
    "nginx": [("python3.11", "GET /status/{id}", "GET"), ("node", "POST /api/cart", "POST")],
    "python3.11": [("postgres", "SELECT orders", "SELECT orders"), ("redis", "GET", "GET")],
    "node": [("redis", "SET", "SET"), ("postgres", "INSERT cart_items", "INSERT cart_items")],
}
ROOTS = [("curl", "GET", "GET /api/status/{id}"), ("loadgen", "POST", "POST /api/cart"),
         ("curl", "GET", "GET /healthz")]


def hexid(n):
    return "".join(RNG.choice("0123456789abcdef") for _ in range(n))


def resource(service):
    return [["service.name", service], ["process.pid", str(1000 + sum(map(ord, service)) % 9000)],
            ["k8s.namespace.name", "shop"], ["k8s.pod.name", f"{service.replace('.', '')}-6f7c9-{service[:3]}q"]]


def generate(start_ms):
    """A random trace: root client -> nginx server -> nginx client -> app server -> ... ."""
    root_svc, method, route = RNG.choice(ROOTS)
    total = round(RNG.uniform(0.8, 120.0), 3)
    spans = []

    def span(parent, depth, name, kind, service, off, dur, err=False, attrs=()):
        s = {"span_id": hexid(16), "parent_span_id": parent, "depth": depth, "orphan": False,
             "name": name, "kind": kind, "service": service, "offset_ms": round(off, 3),
             "duration_ms": round(dur, 3), "status": "error" if err else "unset",
             "status_message": "HTTP 500 Internal Server Error" if err else "",
             "attributes": [["http.request.method", method], *attrs], "resource": resource(service),
             "links": []}
        spans.append(s)
        return s

    err = RNG.random() < 0.18
    code = "500" if err else "200"
    root = span(None, 0, method, "client", root_svc, 0.0, total, False,
                [["http.response.status_code", code]])
    srv = span(root["span_id"], 1, route, "server", "nginx", total * 0.01, total * 0.97, False,
               [["http.route", route.split(" ", 1)[1]], ["http.response.status_code", code]])
    if not route.endswith("healthz"):
        caller, depth, off, dur = "nginx", 2, total * 0.02, total * 0.93
        parent = srv["span_id"]
        for hop in range(2):
            callee, sname, cname = RNG.choice(CALLS[caller])
            cl = span(parent, depth, cname, "client", caller, off, dur)
            last = hop == 1 or callee not in CALLS
            sv = span(cl["span_id"], depth + 1, sname, "server", callee, off + dur * 0.02, dur * 0.95,
                      err and last, [["http.response.status_code", "500" if err and last else "200"]])
            if last:
                break
            caller, depth, parent = callee, depth + 2, sv["span_id"]
            off, dur = off + dur * 0.1, dur * RNG.uniform(0.3, 0.8)
    return {"trace_id": hexid(32), "start_unix_ms": start_ms, "duration_ms": total, "spans": spans}


def summary(t):
    spans = t["spans"]
    root = spans[0] if spans else {}
    services = []
    for s in spans:
        if s["service"] not in services:
            services.append(s["service"])
    return {"trace_id": t["trace_id"], "root_service": root.get("service", ""),
            "root_name": root.get("name", ""), "root_kind": root.get("kind", ""),
            "start_unix_ms": t["start_unix_ms"], "duration_ms": t["duration_ms"], "spans": len(spans),
            "services": services, "error": any(s["status"] == "error" for s in spans)}


def list_traces(qs):
    one = lambda k: (qs.get(k) or [""])[0].strip()
    service, operation, status, q = one("service"), one("operation"), one("status") or "any", one("q").lower()
    try:
        min_ms = float(one("min_ms") or 0)
    except ValueError:
        min_ms = 0.0
    try:
        limit = int(one("limit") or 100)
    except ValueError:
        limit = 100
    with LOCK:
        traces = sorted(TRACES.values(), key=lambda t: t["start_unix_ms"], reverse=True)
        all_services = sorted({s["service"] for t in traces for s in t["spans"]})
        operations = sorted({t["spans"][0]["name"] for t in traces if t["spans"]})
        out = []
        for t in traces:
            sm = summary(t)
            if service and service not in sm["services"]:
                continue
            if operation and operation not in sm["root_name"]:
                continue
            if status == "error" and not sm["error"] or status == "ok" and sm["error"]:
                continue
            if t["duration_ms"] < min_ms:
                continue
            if q and not any(q in s["name"].lower() or q in s["service"].lower()
                             or any(q in str(v).lower() for _, v in s["attributes"]) for s in t["spans"]):
                continue
            out.append(sm)
        return {"traces": out[:limit], "matched": len(out), "stored": len(TRACES), "capacity": 1000,
                "evicted": 0, "services": all_services, "operations": operations}


def seed(span_metrics):
    now = time.time() * 1000
    gen = [generate(now - 300_000 + i * 9_000 + RNG.uniform(0, 4000)) for i in range(30)]
    main = copy.deepcopy(FIXTURE["trace"])
    main["start_unix_ms"] = now - 2_000
    for s in main["spans"]:
        for link in s["links"]:
            if link["trace_id"] == "LINKED":
                link["trace_id"] = gen[0]["trace_id"]
                link["span_id"] = gen[0]["spans"][0]["span_id"]
    for t in gen + [main]:
        TRACES[t["trace_id"]] = t
    if not span_metrics:
        SERVICES.update({"span_metrics": False, "edges": [], "services": []})


def live_loop():
    while True:
        time.sleep(1.0)
        with LOCK:
            t = generate(time.time() * 1000)
            # the last span arrives a second later: the open trace grows
            late = t["spans"].pop() if len(t["spans"]) > 2 else None
            TRACES[t["trace_id"]] = t
            for e in SERVICES["edges"]:
                e["requests"] += RNG.randint(2, 6)
                e["rate_per_s"] = round(max(0.1, e["rate_per_s"] + RNG.uniform(-0.3, 0.3)), 2)
        if late:
            time.sleep(0.5)
            with LOCK:
                t["spans"].append(late)


class Handler(BaseHTTPRequestHandler):
    prefix = "/"

    def send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if not url.path.startswith(self.prefix):
            return self.send(404, {"error": "outside the prefix"})
        path = url.path[len(self.prefix):]
        if path in ("", "index.html", "ui.js", "ui.css"):
            name = path or "index.html"
            return self.send(200, (ASSETS / name).read_bytes(), TYPES[name])
        if path == "api/traces":
            return self.send(200, list_traces(parse_qs(url.query)))
        if path.startswith("api/trace/"):
            tid = unquote(path[len("api/trace/"):])
            with LOCK:
                t = copy.deepcopy(TRACES.get(tid))
            if t is None:
                return self.send(404, {"error": f"trace {tid} is not stored"})
            return self.send(200, t)
        if path == "api/services":
            with LOCK:
                return self.send(200, SERVICES)
        return self.send(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9465)
    ap.add_argument("--prefix", default="/")
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--span-metrics-off", action="store_true")
    ap.add_argument("--map")
    a = ap.parse_args()
    if a.map:
        SERVICES.clear()
        SERVICES.update(json.loads(Path(a.map).read_text()))
    Handler.prefix = "/" + a.prefix.strip("/") + "/" if a.prefix.strip("/") else "/"
    seed(not a.span_metrics_off)
    if a.live:
        threading.Thread(target=live_loop, daemon=True).start()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"serving http://127.0.0.1:{a.port}{Handler.prefix}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
