#!/usr/bin/env python3
"""gRPC server (grpcio, thread pool) for the end-to-end tests: service sonde.test.Echo.

Usage: server.py PORT [NEXT_PORT]
Prints "ready PORT" once serving. Unary: text "missing" aborts NOT_FOUND with a message that
needs percent-encoding, "internal" aborts INTERNAL, "slow" sleeps 0.6 s (for deadlines);
"tp" answers the traceparent metadata values it received, joined by "|";
otherwise answers the text upper-cased with `count` payload bytes. With NEXT_PORT, Unary first
calls the same method there (a chain of uninstrumented services) and answers its reply.
ServerStream: `count` messages. ClientStream: how many it got. Bidi: echoes each reversed.
"""
import sys
import time
from concurrent import futures

import grpc

from gen import load

pb, pb_grpc = load()


class Echo(pb_grpc.EchoServicer):
    def __init__(self, next_stub):
        self.next = next_stub

    def Unary(self, request, context):
        if request.text == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, 'item "missing" not found: café 100%')
        if request.text == "internal":
            context.abort(grpc.StatusCode.INTERNAL, "boom")
        if request.text == "slow":
            time.sleep(0.6)
        if request.text == "tp":
            # What arrived: every traceparent value, in order.
            got = [v for k, v in context.invocation_metadata() if k == "traceparent"]
            return pb.Msg(text="|".join(got) or "-")
        if self.next is not None:
            reply = self.next.Unary(pb.Msg(text=request.text, count=request.count))
            return pb.Msg(text=f"via {reply.text}", payload=reply.payload)
        return pb.Msg(text=request.text.upper(), payload=b"r" * request.count)

    def ServerStream(self, request, context):
        for i in range(request.count):
            yield pb.Msg(text=f"{request.text}-{i}", count=i)

    def ClientStream(self, request_iterator, context):
        return pb.Msg(text="got", count=sum(1 for _ in request_iterator))

    def Bidi(self, request_iterator, context):
        for m in request_iterator:
            yield pb.Msg(text=m.text[::-1], count=m.count)


def main():
    port = int(sys.argv[1])
    next_stub = None
    if len(sys.argv) > 2:
        channel = grpc.insecure_channel(f"127.0.0.1:{sys.argv[2]}")
        next_stub = pb_grpc.EchoStub(channel)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_EchoServicer_to_server(Echo(next_stub), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"ready {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
