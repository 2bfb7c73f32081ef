"""Hostile HTTP/2 clients for the agent's memory budget: many connections, each sending the
client preface, SETTINGS and a HEADERS frame without END_HEADERS followed by CONTINUATION frames,
a header block that never ends, so that a parser following them holds the whole block.

  h2_flood.py serve PORT               accept and discard everything (prints "ready PORT")
  h2_flood.py flood PORT CONNS FRAMES  CONNS connections to 127.0.0.1:PORT, each sending FRAMES
                                       CONTINUATION frames of 4000 bytes (one write each), then
                                       prints "open CONNS BYTES" and holds them until a line on
                                       stdin; prints "closed" after closing them
"""
import resource
import selectors
import socket
import struct
import sys
import time


def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, n + 256)) if hard != resource.RLIM_INFINITY else n + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want) if hard != resource.RLIM_INFINITY else hard))


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def serve(port):
    raise_fd_limit(20000)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    print(f"ready {port}", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is lsock:
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
            else:
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, ConnectionError):
                    data = b"?"
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()


def flood(port, conns, frames):
    raise_fd_limit(conns)
    # :method GET, then a literal field whose 32767-byte value goes on in the CONTINUATIONs.
    headers = frame(0x1, 0x1, 1, bytes([0x82, 0x00, 0x01]) + b"x" + bytes([0x7F, 0xFF, 0xFF, 0x01]))
    first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b"") + headers
    cont = frame(0x9, 0, 1, b"a" * 4000)
    socks = []
    sent = 0
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(first)
        sent += len(first)
        for _ in range(frames):
            s.sendall(cont)
            sent += len(cont)
        socks.append(s)
        if i % 50 == 49:
            time.sleep(0.02)  # let the agent keep up: records lost would make gaps, not state
    print(f"open {len(socks)} {sent}", flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print("closed", flush=True)


if sys.argv[1] == "serve":
    serve(int(sys.argv[2]))
else:
    flood(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
