"""One keep-alive HTTP/1.1 connection: sends GET /one, prints the traceparent headers the server
saw, waits for a line on stdin, sends GET /two on the same connection, prints again; then a new
connection with GET /three. The server must echo its request headers in JSON (chain_server.py).

Usage: keepalive_client.py HOST PORT
"""
import http.client
import json
import sys

host, port = sys.argv[1], int(sys.argv[2])


def tps(resp):
    doc = json.loads(resp.read())
    return [v for k, v in doc["headers"] if k.lower() == "traceparent"]


c = http.client.HTTPConnection(host, port)
c.request("GET", "/one")
print("one", json.dumps(tps(c.getresponse())), flush=True)
sys.stdin.readline()
c.request("GET", "/two")
print("two", json.dumps(tps(c.getresponse())), flush=True)
d = http.client.HTTPConnection(host, port)
d.request("GET", "/three")
print("three", json.dumps(tps(d.getresponse())), flush=True)
