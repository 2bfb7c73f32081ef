"""An OTLP/gRPC trace receiver that only counts: spans received per service.name, written as
JSON to a file (atomically) after every export request. Built on the official
opentelemetry-proto package and grpcio.

Usage: count_sink.py PORT COUNTS_FILE
"""
import json
import os
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

counts = {}
lock = threading.Lock()


class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        with lock:
            for rs in request.resource_spans:
                name = "unknown"
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        name = kv.value.string_value
                n = sum(len(ss.spans) for ss in rs.scope_spans)
                counts[name] = counts.get(name, 0) + n
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(counts, f)
            os.replace(tmp, self.path)
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "w") as f:
        json.dump({}, f)
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
