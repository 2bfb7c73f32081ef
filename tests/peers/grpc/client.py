#!/usr/bin/env python3
"""gRPC client (grpcio) for the end-to-end tests: one channel, so one connection, per run.

Usage: client.py MODE PORT
  calls   unary OK, unary NOT_FOUND, server streaming (3), client streaming (4), bidi (3), an
          unimplemented method, unary INTERNAL, a unary that misses its 0.2 s deadline
  one     one unary call ("chain")
  tp      three unary calls asking what traceparent the server got: without one, with the
          client's own, without one
  many N  N unary calls, 10 in flight at a time
  stdin   one call per line read: `unary TEXT` or `stream N`, on the same channel (so a
          tracer started in between joins the connection in the middle)
Prints one line per call: what came back, or the status code's name.
"""
import sys
from concurrent import futures

import grpc

from gen import load

pb, pb_grpc = load()


def code(e):
    return e.code().name


def calls(stub, channel):
    print(stub.Unary(pb.Msg(text="hello", count=3)).text, flush=True)
    try:
        stub.Unary(pb.Msg(text="missing"))
    except grpc.RpcError as e:
        print(code(e), e.details())
    print(",".join(m.text for m in stub.ServerStream(pb.Msg(text="s", count=3))))
    print(stub.ClientStream(iter([pb.Msg(text=str(i)) for i in range(4)])).count)
    print(",".join(m.text for m in stub.Bidi(iter([pb.Msg(text=t) for t in ("abc", "de", "f")]))))
    nope = channel.unary_unary(
        "/sonde.test.Echo/Nope",
        request_serializer=pb.Msg.SerializeToString,
        response_deserializer=pb.Msg.FromString,
    )
    try:
        nope(pb.Msg(text="x"))
    except grpc.RpcError as e:
        print(code(e))
    try:
        stub.Unary(pb.Msg(text="internal"))
    except grpc.RpcError as e:
        print(code(e))
    try:
        stub.Unary(pb.Msg(text="slow"), timeout=0.2)
    except grpc.RpcError as e:
        print(code(e))


OWN_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def tp(stub, channel):
    print(stub.Unary(pb.Msg(text="tp")).text, flush=True)
    print(stub.Unary(pb.Msg(text="tp"), metadata=(("traceparent", OWN_TRACEPARENT),)).text)
    print(stub.Unary(pb.Msg(text="tp")).text, flush=True)


def one(stub, channel):
    print(stub.Unary(pb.Msg(text="chain", count=2)).text)


def many(stub, channel, n):
    with futures.ThreadPoolExecutor(max_workers=10) as pool:
        texts = list(pool.map(lambda i: stub.Unary(pb.Msg(text=f"m{i}")).text, range(n)))
    print(len(texts))


def stdin(stub, channel):
    print("ready", flush=True)
    for line in sys.stdin:
        what, arg = line.split()
        if what == "unary":
            print(stub.Unary(pb.Msg(text=arg)).text, flush=True)
        else:
            print(len(list(stub.ServerStream(pb.Msg(text="s", count=int(arg))))), flush=True)


def main():
    mode, port = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.EchoStub(channel)
        if mode == "many":
            many(stub, channel, int(sys.argv[3]))
        else:
            {"calls": calls, "one": one, "stdin": stdin, "tp": tp}[mode](stub, channel)


if __name__ == "__main__":
    main()
