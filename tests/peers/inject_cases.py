"""Requests that must not be given a traceparent (or only where it is safe), sent to an echo
server: each case on its own connection, the write side shut when sent, and everything the
server received read back. Prints one JSON object: case -> hex of the bytes the server got.

Usage: inject_cases.py HOST PORT
"""
import json
import socket
import sys
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
BODY = b"GET /not-a-request HTTP/1.1\r\nHost: y\r\n\r\n"
TP = b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"


def exchange(*parts, pause=0.05):
    s = socket.create_connection((HOST, PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, p in enumerate(parts):
        if i:
            time.sleep(pause)
        s.sendall(p)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    return got.hex()


cases = {
    # A plain GET: the one case that is injected.
    "plain": exchange(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"),
    # The head split over two sends: never sure there is no traceparent later.
    "split": exchange(b"GET /split HTTP/1.1\r\nHost: x\r\n", b"Accept: */*\r\n\r\n"),
    # A request line longer than the kernel's scan window.
    "long_line": exchange(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    # Two pipelined requests in one send.
    "pipelined": exchange(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    # A request that already has one.
    "existing": exchange(b"GET /existing HTTP/1.1\r\nHost: x\r\n" + TP + b"\r\n"),
    # A body that looks like a request, sent after its head.
    "lookalike_body": exchange(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY),
        BODY,
    ),
    # Binary that starts like a request but is not one.
    "binary": exchange(b"GET \x00\x01\x02" + bytes(range(256)) * 4),
}
print(json.dumps(cases))
