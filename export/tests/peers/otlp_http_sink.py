"""An OTLP/HTTP (binary protobuf) trace receiver for tests: records every request, answers as
scripted.

    otlp_http_sink.py --port 0 --record out.jsonl [--script unavailable:2,ok]
                      [--tls-cert server.pem --tls-key server.key [--client-ca ca.pem]]

Prints `LISTENING <port>` once serving. Each POST becomes one JSON line in --record:
{"seq", "action", "path", "headers", "request"}; a gzip body (Content-Encoding: gzip) is
inflated first. Script actions:
  ok                 200 with an empty ExportTraceServiceResponse
  partial:N          200 with partial_success.rejected_spans = N
  unavailable[:S]    503, with Retry-After: S when given
  too_many[:S]       429, with Retry-After: S when given
  bad_gateway        502
  bad_request        400 with a google.rpc.Status body (permanent)
"""

import argparse
import gzip
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

import otlp_common


def make_handler(script, recorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", content_type="application/x-protobuf", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            seq, action = script.next()
            recorder.write(
                {
                    "seq": seq,
                    "action": action,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "request": otlp_common.request_to_dict(req),
                }
            )
            name, _, arg = action.partition(":")
            retry_after = [("Retry-After", arg)] if arg else []
            if name == "ok":
                self.reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())
            elif name == "partial":
                resp = trace_service_pb2.ExportTraceServiceResponse()
                resp.partial_success.rejected_spans = int(arg)
                resp.partial_success.error_message = f"rejected {arg} spans on purpose"
                self.reply(200, resp.SerializeToString())
            elif name == "unavailable":
                self.reply(503, b"scripted unavailable", "text/plain", retry_after)
            elif name == "too_many":
                self.reply(429, b"scripted too many requests", "text/plain", retry_after)
            elif name == "bad_gateway":
                self.reply(502, b"scripted bad gateway", "text/plain")
            elif name == "bad_request":
                self.reply(400, otlp_common.rpc_status(3, "scripted bad request"))
            else:
                self.reply(500, f"unknown scripted action {action}".encode(), "text/plain")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record")
    p.add_argument("--script", default="")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca")
    args = p.parse_args()

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port),
        make_handler(otlp_common.Script(args.script), otlp_common.Recorder(args.record)),
    )
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    otlp_common.announce(server.server_address[1])
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
