"""A real HTTP/1.1 server for sonde's tests: Python's http.server, threaded, keep-alive.

GET /hello        -> 200 "hello world\n"
GET /big?n=N      -> 200 with N bytes of 'x'
GET /status/CODE  -> that status with a short body
GET /chunked      -> 200 with a chunked body of three chunks
GET /reset        -> a response head announcing 1000 bytes, 10 bytes, then a TCP reset
POST /echo        -> 200 echoing the request body
Prints "ready PORT" once listening. Usage: http_server.py PORT [HOST] [--http10]
With --http10 the server speaks HTTP/1.0: one request per connection, responses end at close.
"""
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Separate header and body writes would wait for delayed ACKs without TCP_NODELAY.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/hello":
            self._send(200, b"hello world\n")
        elif path == "/big":
            n = int(dict(p.split("=") for p in query.split("&") if p).get("n", "100000"))
            self._send(200, b"x" * n)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/reset":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, b"status %d\n" % code)
        else:
            self._send(404, b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self._send(200, body, "application/octet-stream")


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    if "--http10" in sys.argv:
        Handler.protocol_version = "HTTP/1.0"
    cls = V6Server if ":" in host else ThreadingHTTPServer
    cls.daemon_threads = True
    cls.request_queue_size = 1024
    srv = cls((host, port), Handler)
    print("ready", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
