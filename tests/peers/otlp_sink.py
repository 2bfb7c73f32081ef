"""An OTLP/gRPC receiver of traces and metrics for sampling and privacy tests.

    otlp_sink.py --port 0 --record out.jsonl

Prints `LISTENING <port>`. Each request is one JSON line in --record: {"signal": "traces" |
"metrics", "request": ...}, ids as lower-case hex (spans and exemplars), everything else as
protobuf's JSON mapping.
"""

import argparse
import base64
import os
import signal
import sys
import threading
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../export/tests/peers"))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import (  # noqa: E402
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402

import otlp_common  # noqa: E402


def metrics_to_dict(req):
    d = json_format.MessageToDict(req)
    for rm in d.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for m in sm.get("metrics", []):
                for dp in m.get("histogram", {}).get("dataPoints", []):
                    for e in dp.get("exemplars", []):
                        for f in ("traceId", "spanId"):
                            if f in e:
                                e[f] = base64.b64decode(e[f]).hex()
    return d


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, rec):
        self.rec = rec

    def Export(self, request, context):
        self.rec.write({"signal": "traces", "request": otlp_common.request_to_dict(request)})
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, rec):
        self.rec = rec

    def Export(self, request, context):
        self.rec.write({"signal": "metrics", "request": metrics_to_dict(request)})
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record", required=True)
    args = p.parse_args()
    rec = otlp_common.Recorder(args.record)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(rec), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(rec), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    otlp_common.announce(port)
    stop.wait()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
