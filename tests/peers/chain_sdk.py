"""One hop of a service chain instrumented with the OpenTelemetry Python SDK (by hand): the
incoming traceparent is extracted, a SERVER span made, the outgoing call carries the SDK's
own traceparent (a CLIENT span), spans go to an OTLP/gRPC endpoint. It answers like
chain_server.py.

Usage: chain_sdk.py PORT NEXT_HOST:NEXT_PORT OTLP_ENDPOINT
"""
import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

PORT, NEXT, ENDPOINT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
provider = TracerProvider(resource=Resource.create({"service.name": "sdk-hop"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=ENDPOINT, insecure=True)))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("chain")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        ctx = extract(dict(self.headers.items()))
        with tracer.start_as_current_span("GET hop", context=ctx, kind=SpanKind.SERVER):
            doc = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
            with tracer.start_as_current_span("GET next", kind=SpanKind.CLIENT):
                headers = {}
                inject(headers)
                host, port = NEXT.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", self.path, headers=headers)
                doc["next"] = json.loads(conn.getresponse().read())
                conn.close()
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", PORT, flush=True)
srv.serve_forever()
