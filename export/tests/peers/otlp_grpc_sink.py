"""An OTLP/gRPC trace receiver for tests: records every request it gets, answers as scripted.

    otlp_grpc_sink.py --port 0 --record out.jsonl [--script unavailable,ok]
                      [--tls-cert server.pem --tls-key server.key [--client-ca ca.pem]]

Prints `LISTENING <port>` once serving. Each request becomes one JSON line in --record:
{"seq", "action", "metadata", "request", "in_progress"} (see otlp_common.request_to_dict;
in_progress counts the requests being served when this one arrived, itself included).
Script actions:
  ok                      success
  hold:S                  success after S seconds
  partial:N               success with partial_success.rejected_spans = N
  unavailable             UNAVAILABLE
  unavailable_retry:S     UNAVAILABLE with RetryInfo(retry_delay = S seconds)
  exhausted               RESOURCE_EXHAUSTED without RetryInfo (permanent)
  exhausted_retry:S       RESOURCE_EXHAUSTED with RetryInfo(S seconds)
  invalid                 INVALID_ARGUMENT (permanent)
gzip-compressed requests are accepted (grpcio decompresses them).
"""

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import otlp_common


class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, script, recorder):
        self.script = script
        self.recorder = recorder
        self.lock = threading.Lock()
        self.in_progress = 0

    def Export(self, request, context):
        with self.lock:
            self.in_progress += 1
            in_progress = self.in_progress
        try:
            return self.answer(request, context, in_progress)
        finally:
            with self.lock:
                self.in_progress -= 1

    def answer(self, request, context, in_progress):
        seq, action = self.script.next()
        name, _, arg = action.partition(":")
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.recorder.write(
            {
                "seq": seq,
                "action": action,
                "metadata": metadata,
                "request": otlp_common.request_to_dict(request),
                "in_progress": in_progress,
            }
        )
        if name == "hold":
            time.sleep(float(arg))
            return trace_service_pb2.ExportTraceServiceResponse()
        if name == "ok":
            return trace_service_pb2.ExportTraceServiceResponse()
        if name == "partial":
            resp = trace_service_pb2.ExportTraceServiceResponse()
            resp.partial_success.rejected_spans = int(arg)
            resp.partial_success.error_message = f"rejected {arg} spans on purpose"
            return resp
        codes = {
            "unavailable": grpc.StatusCode.UNAVAILABLE,
            "unavailable_retry": grpc.StatusCode.UNAVAILABLE,
            "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
            "exhausted_retry": grpc.StatusCode.RESOURCE_EXHAUSTED,
            "invalid": grpc.StatusCode.INVALID_ARGUMENT,
        }
        code = codes[name]
        message = f"scripted {action}"
        if name.endswith("_retry"):
            details = otlp_common.rpc_status(code.value[0], message, float(arg))
            context.set_trailing_metadata((("grpc-status-details-bin", details),))
        context.abort(code, message)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record")
    p.add_argument("--script", default="")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca")
    args = p.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        Service(otlp_common.Script(args.script), otlp_common.Recorder(args.record)), server
    )
    address = f"127.0.0.1:{args.port}"
    if args.tls_cert:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        root = None
        if args.client_ca:
            with open(args.client_ca, "rb") as f:
                root = f.read()
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=root, require_client_auth=root is not None
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        sys.exit(f"cannot listen on {address}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    otlp_common.announce(port)
    stop.wait()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
