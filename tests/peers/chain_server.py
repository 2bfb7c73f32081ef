"""One hop of a service chain for trace-context tests: a threading HTTP/1.1 server that, for
every GET, calls the next hop (if any) with http.client and answers with a JSON document of
what it received: its own request headers, and the next hop's answer.

Usage: chain_server.py PORT [NEXT_HOST:NEXT_PORT]
"""
import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEXT = sys.argv[2] if len(sys.argv) > 2 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        doc = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
        if NEXT:
            host, port = NEXT.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", self.path)
            resp = conn.getresponse()
            doc["next"] = json.loads(resp.read())
            conn.close()
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
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
