"""One hop of a service chain for sampling tests: a threading HTTP/1.1 server; every GET calls
the next hop (if any) on a new connection and answers with the next hop's status. At the last
hop `/err...` answers 500 and `/slow...` waits 250 ms first, so errors and slowness propagate
up the chain, as in a real call graph.

Usage: sampling_chain.py PORT [NEXT_HOST:NEXT_PORT]
"""
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEXT = sys.argv[2] if len(sys.argv) > 2 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        if NEXT:
            host, port = NEXT.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            conn.close()
        else:
            if self.path.startswith("/slow"):
                time.sleep(0.25)
            status = 500 if self.path.startswith("/err") else 200
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", sys.argv[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
