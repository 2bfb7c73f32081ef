"""A thread-per-request HTTP service that queries databases while it serves, for the trace
tests of database spans (tests/tests/db.rs).

GET /item/<i> runs, on the request's own thread:
- one PostgreSQL query on table `item_<i>` over a connection shared by all requests (opened
  at start, used under a lock, as a one-connection pool would), and
- a Redis SET and GET on a connection opened for the request in database <i + 1> (redis-py
  sends SELECT <i + 1> when it connects),
and answers 200 with what it read as JSON.

Usage: DB_PASSWORD=PW db_service.py PORT --pg-port P --redis-port R (the password from the
environment, never argv: sonde exports process.command_line)
"""
import argparse
import json
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import redis

ARGS = None
PG = None
PG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = self.path.split("/")
        if len(parts) != 3 or parts[1] != "item" or not parts[2].isdigit():
            self.send_error(404)
            return
        i = int(parts[2])
        with PG_LOCK:
            rows = PG.execute(
                f"SELECT name FROM item_{i} WHERE id = %s AND name <> 'svc-canary-{i}'",
                (1,),
            ).fetchall()
        r = redis.Redis(
            host="127.0.0.1",
            port=ARGS.redis_port,
            db=i + 1,
            # RESP2: redis-py 8 would otherwise open with HELLO 3 and CLIENT MAINT_NOTIFICATIONS
            # (an error on Redis 7.0), two more operations per request.
            protocol=2,
            lib_name=None,
            lib_version=None,
        )
        r.set("svc-key", f"svc-canary-{i}")
        value = r.get("svc-key").decode()
        r.close()
        body = json.dumps({"item": i, "pg": rows[0][0], "redis": value}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    global ARGS, PG
    warnings.simplefilter("ignore")  # lib_name=None is deprecated in favour of driver_info
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--redis-port", type=int, required=True)
    ARGS = p.parse_args()
    PG = psycopg.connect(
        host="127.0.0.1",
        port=ARGS.pg_port,
        user="app",
        password=os.environ["DB_PASSWORD"],
        dbname="shop",
        autocommit=True,
        sslmode="disable",
    )
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print("ready", ARGS.port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
