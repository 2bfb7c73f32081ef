"""The Python app of the overhead benchmark: a threading HTTP/1.1 server answering every GET
with a small body. With --otel-sdk it is instrumented by hand with the OpenTelemetry Python SDK
(one SERVER span per request, batch processor, OTLP/gRPC exporter): the alternative a user
would pick instead of sonde. With --upstream PORT every request is first sent on to
127.0.0.1:PORT (one keep-alive connection per server thread) and its body answered: a hop of a
chain, whose outgoing requests are where sonde injects `traceparent`. With --postgres PORT
every request first runs one query (a parameterised SELECT on a connection per server thread,
psycopg 3) on PostgreSQL at 127.0.0.1:PORT, user `postgres`, database `postgres` (trust
authentication), and answers the row: a query-per-request service.

Usage: app.py PORT [--otel-sdk ENDPOINT] [--upstream PORT | --postgres PORT]
"""
import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"ok\n"
tracer = None
upstream = None
postgres = None
local = threading.local()


def call_upstream():
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream)
    conn.request("GET", "/")
    return conn.getresponse().read()


def pg_connect():
    import psycopg

    # prepare_threshold=None: every execution is one Parse/Bind/Execute/Sync round trip, so one
    # span per query; psycopg's default prepares a statement on its sixth use, a round trip of
    # its own that sonde reports as a span too (one more per connection).
    return psycopg.connect(
        host="127.0.0.1",
        port=postgres,
        user="postgres",
        dbname="postgres",
        autocommit=True,
        prepare_threshold=None,
    )


def query():
    conn = getattr(local, "pg", None)
    if conn is None:
        conn = local.pg = pg_connect()
    row = conn.execute("SELECT v FROM bench_item WHERE id = %s", (7,)).fetchone()
    return row[0].encode() + b"\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _respond(self):
        if postgres is not None:
            body = query()
        elif upstream is not None:
            body = call_upstream()
        else:
            body = BODY
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
    global tracer, upstream, postgres
    port = int(sys.argv[1])
    if "--upstream" in sys.argv:
        upstream = int(sys.argv[sys.argv.index("--upstream") + 1])
    if "--postgres" in sys.argv:
        postgres = int(sys.argv[sys.argv.index("--postgres") + 1])
        with pg_connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_item (id int PRIMARY KEY, v text)")
            conn.execute(
                "INSERT INTO bench_item VALUES (7, 'ok') ON CONFLICT (id) DO NOTHING"
            )
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
