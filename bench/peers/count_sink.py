"""An OTLP/gRPC trace receiver that only counts: spans received in all and per service.name,
and with --ids the distinct span ids (trace id + span id) among them and the spans joined to a
parent that was received too (whichever arrived first), written as JSON to a file (atomically)
after every export request: {"spans", "unique_span_ids", "joined", "by_service"}. Built on the
official opentelemetry-proto package and grpcio.

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
# --ids: spans joined to a received parent, and the parents not received yet (id -> children).
joined = 0
waiting = {}
lock = threading.Lock()


class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        global total, joined
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
                        for sp in ss.spans:
                            me = sp.trace_id + sp.span_id
                            if me in ids:
                                continue
                            ids.add(me)
                            joined += waiting.pop(me, 0)
                            if sp.parent_span_id:
                                parent = sp.trace_id + sp.parent_span_id
                                if parent in ids:
                                    joined += 1
                                else:
                                    waiting[parent] = waiting.get(parent, 0) + 1
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state(), f)
            os.replace(tmp, self.path)
        return trace_service_pb2.ExportTraceServiceResponse()


def state():
    return {
        "spans": total,
        "unique_span_ids": None if ids is None else len(ids),
        "joined": None if ids is None else joined,
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
