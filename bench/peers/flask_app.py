"""The Flask app of the overhead benchmark: for every GET / it calls nginx (a keep-alive
`requests.Session` per server thread) and answers with its body, served by Werkzeug's threaded
server over HTTP/1.1 keep-alive. Run plain (untraced, or traced by sonde) or under the
OpenTelemetry zero-code agent (`opentelemetry-instrument python flask_app.py ...`), which
instruments Flask (server spans) and requests (client spans, with `traceparent`). The
standard library's http.server and http.client, which bench/peers/app.py uses, have no
zero-code instrumentation: this app is the one both can trace.

Usage: flask_app.py PORT UPSTREAM_PORT
"""
import logging
import sys
import threading

import requests
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

app = Flask(__name__)
local = threading.local()
upstream = None


@app.get("/")
def index():
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = requests.Session()
    r = session.get(f"http://127.0.0.1:{upstream}/")
    return r.content, r.status_code, {"Content-Type": "text/plain"}


def main():
    global upstream
    port, upstream = int(sys.argv[1]), int(sys.argv[2])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Keep-alive, like the other servers of the benchmark (Werkzeug answers HTTP/1.0 by default).
    WSGIRequestHandler.protocol_version = "HTTP/1.1"
    srv = make_server("127.0.0.1", port, app, threaded=True)
    print("ready", port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
