"""The Python app of the overhead benchmark: a threading HTTP/1.1 server answering every GET
with a small body. With --otel-sdk it is instrumented by hand with the OpenTelemetry Python SDK
(one SERVER span per request, batch processor, OTLP/gRPC exporter): the alternative a user
would pick instead of sonde. With --upstream PORT every request is first sent on to
127.0.0.1:PORT (one keep-alive connection per server thread) and its body answered: a hop of a
chain, whose outgoing requests are where sonde injects `traceparent`.

Usage: app.py PORT [--otel-sdk ENDPOINT] [--upstream PORT]
"""
import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"ok\n"
tracer = None
upstream = None
local = threading.local()


def call_upstream():
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream)
    conn.request("GET", "/")
    return conn.getresponse().read()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _respond(self):
        body = BODY if upstream is None else call_upstream()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if tracer is None:
            self._respond()
            return
        from opentelemetry.trace import SpanKind

        with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("url.path", self.path)
            span.set_attribute("http.route", "/")
            span.set_attribute("client.address", self.client_address[0])
            self._respond()
            span.set_attribute("http.response.status_code", 200)


def main():
    global tracer, upstream
    port = int(sys.argv[1])
    if "--upstream" in sys.argv:
        upstream = int(sys.argv[sys.argv.index("--upstream") + 1])
    if "--otel-sdk" in sys.argv:
        endpoint = sys.argv[sys.argv.index("--otel-sdk") + 1]
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "bench-sdk"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
        trace.set_tracer_provider(provider)
        tracer = trace.get_tracer("bench")
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
