"""An OTLP/gRPC trace receiver that only counts: spans received in all and per service.name,
and with --ids the distinct span ids (trace id + span id) among them, written as JSON to a file
(atomically) after every export request: {"spans", "unique_span_ids", "by_service"}. Built on
the official opentelemetry-proto package and grpcio.

Usage: count_sink.py PORT COUNTS_FILE [--ids]
(--ids keeps every id in memory: for the smoke run's few thousand spans, not for long runs.)
"""
import json
import os
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

counts = {}
total = 0
ids = None
lock = threading.Lock()


class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        global total
        with lock:
            for rs in request.resource_spans:
                name = "unknown"
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        name = kv.value.string_value
                n = sum(len(ss.spans) for ss in rs.scope_spans)
                counts[name] = counts.get(name, 0) + n
                total += n
                if ids is not None:
                    for ss in rs.scope_spans:
                        ids.update(sp.trace_id + sp.span_id for sp in ss.spans)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state(), f)
            os.replace(tmp, self.path)
        return trace_service_pb2.ExportTraceServiceResponse()


def state():
    return {
        "spans": total,
        "unique_span_ids": None if ids is None else len(ids),
        "by_service": counts,
    }


def main():
    global ids
    port, path = int(sys.argv[1]), sys.argv[2]
    if "--ids" in sys.argv[3:]:
        ids = set()
    with open(path, "w") as f:
        json.dump(state(), f)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
