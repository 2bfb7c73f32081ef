"""Python `ssl` peers (OpenSSL through the `_ssl` module, SSL_read_ex/SSL_write_ex).

    py_tls.py https-server PORT CERT KEY   HTTPS (HTTP/1.1) server: /hello 200; prints "ready PORT"
    py_tls.py get URL...                   one keep-alive connection, GET each URL; prints statuses
    py_tls.py echo-server PORT CERT KEY    raw TLS: reads "N\\n" then N bytes, answers "got N\\n";
                                           prints "ready PORT"
    py_tls.py send PORT N CHUNK            raw TLS client: writes "N\\n" then N bytes (a known
                                           pattern) in writes of CHUNK bytes, prints the answer
    py_tls.py dlopen-get URL               imports `ssl` only after start (libssl is dlopen'ed late),
                                           then GETs the URL
"""
import sys


def pattern(n):
    base = bytes(range(32, 127))
    return (base * (n // len(base) + 1))[:n]


def https_server(port, cert, key):
    import http.server
    import ssl

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"hello from python\n" if self.path == "/hello" else b"no\n"
            self.send_response(200 if self.path == "/hello" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"ready {port}", flush=True)
    srv.serve_forever()


def get(urls):
    import http.client
    import ssl
    import urllib.parse

    ctx = ssl._create_unverified_context()
    u = urllib.parse.urlsplit(urls[0])
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    for url in urls:
        p = urllib.parse.urlsplit(url)
        conn.request("GET", p.path + (f"?{p.query}" if p.query else ""),
                     headers={"User-Agent": "py-tls/1.0"})
        r = conn.getresponse()
        r.read()
        print(r.status, flush=True)
    conn.close()


def echo_server(port, cert, key):
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen()
    print(f"ready {port}", flush=True)
    while True:
        c, _ = ls.accept()
        try:
            s = ctx.wrap_socket(c, server_side=True)
            f = s.makefile("rb")
            want = int(f.readline())
            n = len(f.read(want))
            s.sendall(f"got {n}\n".encode())
            s.close()
        except (ssl.SSLError, OSError, ValueError):
            # Port probes connect and leave without a handshake.
            c.close()


def send(port, n, chunk):
    import socket
    import ssl

    ctx = ssl._create_unverified_context()
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    data = pattern(n)
    s.sendall(f"{n}\n".encode())
    for i in range(0, n, chunk):
        s.sendall(data[i:i + chunk])
    print(s.makefile("rb").readline().decode().strip(), flush=True)
    s.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "https-server":
        https_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif cmd == "get":
        get(sys.argv[2:])
    elif cmd == "echo-server":
        echo_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif cmd == "send":
        send(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "dlopen-get":
        import time
        assert "ssl" not in sys.modules and "_ssl" not in sys.modules
        with open(f"/proc/self/maps") as f:
            assert "libssl" not in f.read(), "libssl mapped before the import"
        time.sleep(0.3)
        get(sys.argv[2:])
