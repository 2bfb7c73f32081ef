#!/usr/bin/env python3
"""An h2c server reached by the HTTP/1.1 `Upgrade: h2c` dance (needs the `h2` package).

Usage: h2c_upgrade_server.py PORT       prints "ready PORT" once listening

It reads the HTTP/1.1 request, answers `101 Switching Protocols`, then speaks HTTP/2: stream 1
answers the upgrade request, later streams their own. `/missing` answers 404, anything else
200 with a small body.
"""
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def respond(conn, stream_id, path):
    body = f"h2c {path}\n".encode()
    status = "404" if path == "/missing" else "200"
    conn.send_headers(
        stream_id,
        [(":status", status), ("content-type", "text/plain"), ("content-length", str(len(body)))],
    )
    conn.send_data(stream_id, body, end_stream=True)


def handle(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin1").split("\r\n")
    path = lines[0].split(" ")[1]
    fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_upgrade_connection(fields["http2-settings"])
    respond(conn, 1, path)
    sock.sendall(conn.data_to_send())
    while True:
        if rest:
            events, rest = conn.receive_data(rest), b""
        else:
            chunk = sock.recv(65536)
            if not chunk:
                break
            events = conn.receive_data(chunk)
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                respond(conn, ev.stream_id, dict(ev.headers)[b":path"].decode())
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    sock.close()


def main():
    port = int(sys.argv[1])
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    print(f"ready {port}", flush=True)
    while True:
        s, _ = lsock.accept()
        threading.Thread(target=handle, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
