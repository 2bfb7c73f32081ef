"""Database clients for the database span tests (tests/tests/db.rs): psycopg 3 (libpq),
PyMySQL and redis-py, each running a fixed script of operations against a server the test
started, plus the untraced setup of each server (users, databases, tables) and a load client
for tests/peers/db_service.py.

Usage: DB_PASSWORD=... [DB_SU_PASSWORD=...] db_clients.py COMMAND --port PORT [options]; each
command prints one JSON line of what it did (the client's local port, rows read, errors raised)
so the test can check the spans against it. Passwords come from the environment, never from
argv: sonde exports process.command_line.
"""
import argparse
import json
import os
import sys
import threading
import time
import urllib.request
import warnings


def out(**kw):
    print(json.dumps(kw), flush=True)


def retry(what, connect, seconds=20.0):
    """Servers accept connections a little before they accept logins."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return connect()
        except Exception as e:  # noqa: BLE001 - any refusal means "not yet"
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: {e}")
            time.sleep(0.1)


# --- PostgreSQL (psycopg 3) -------------------------------------------------------------------


def db_password(a, var="DB_PASSWORD"):
    """A password from the environment, never from argv: sonde exports process.command_line."""
    pw = os.environ.get(var)
    if not pw:
        raise SystemExit(f"{a.command}: {var} is not set")
    return pw


def pg_connect(a, user, password, dbname):
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=a.port,
        user=user,
        password=password,
        dbname=dbname,
        autocommit=True,
        sslmode="disable",
    )


def pg_local_port(conn):
    import socket

    s = socket.socket(fileno=conn.pgconn.socket)
    try:
        return s.getsockname()[1]
    finally:
        s.detach()


def pg_setup(a):
    """As the superuser: user `app` with a password set by ALTER USER, database `shop` with a
    table `users`, and `--tables` more tables of three rows each."""
    su = retry("postgres login", lambda: pg_connect(a, "postgres", db_password(a, "DB_SU_PASSWORD"), "postgres"))
    su.execute("CREATE USER app")
    su.execute("ALTER USER app PASSWORD '%s'" % db_password(a))
    su.execute("CREATE DATABASE shop OWNER app")
    su.close()
    c = pg_connect(a, "app", db_password(a), "shop")
    c.execute("CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL)")
    c.execute("INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'pg-canary-row')")
    for t in a.tables.split(",") if a.tables else []:
        c.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, name text NOT NULL)")
        c.execute(f"INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 3) g")
    c.close()
    out(ok=True)


def pg_client(a):
    """The scenario of `postgres_psycopg_spans`, in order; see the test for the spans."""
    import psycopg

    c = pg_connect(a, "app", db_password(a), "shop")
    port = pg_local_port(c)
    cur = c.cursor()
    rows = []
    # Simple query protocol (no parameters): the literal is in the query text.
    cur.execute("SELECT name FROM users WHERE id = 1")
    rows.append(len(cur.fetchall()))
    # Extended protocol, unnamed statement: the literal travels in Bind only.
    cur.execute("SELECT id, name FROM users WHERE name = %s", ("pg-canary-param",))
    rows.append(len(cur.fetchall()))
    cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (4, "pg-canary-insert"))
    # A named prepared statement: Parse once, then Bind/Execute by name twice.
    for i in (1, 2):
        cur.execute("SELECT name FROM users WHERE id = %s", (i,), prepare=True)
        rows.append(len(cur.fetchall()))
    # Errors, by both protocols.
    errors = []
    for q, p in (("SELECT * FROM missing_table", None), ("SELECT * FROM missing_table WHERE id = %s", (5,))):
        try:
            cur.execute(q, p)
        except psycopg.errors.UndefinedTable as e:
            errors.append(e.sqlstate)
    # Pipeline mode: three statements sent before any answer is read.
    with c.pipeline():
        cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (10, "pg-canary-pipe"))
        cur.execute("SELECT name FROM users WHERE id = %s", (10,))
        cur.execute("UPDATE users SET name = %s WHERE id = %s", ("pg-canary-upd", 10))
    # A transaction: BEGIN and COMMIT by simple query around an extended DELETE.
    with c.transaction():
        cur.execute("DELETE FROM users WHERE id = %s", (10,))
    c.close()
    out(local_port=port, rows=rows, errors=errors)


def pg_one(a):
    """Two operations on `--table`, for the server-side tests."""
    c = pg_connect(a, "app", db_password(a), "shop")
    port = pg_local_port(c)
    n = len(c.execute(f"SELECT name FROM {a.table} WHERE id = %s", (1,)).fetchall())
    c.execute(f"UPDATE {a.table} SET name = 'pg-canary-srv' WHERE id = 2")
    c.close()
    out(local_port=port, rows=n)


def pg_tls(a):
    """The scenario of `postgres_psycopg_tls_spans`: psycopg over TLS, with the libpq that
    PSYCOPG_IMPL selects (the test asks for "python": Debian's libpq and OpenSSL)."""
    import psycopg

    c = psycopg.connect(host="127.0.0.1", port=a.port, user="app", password=db_password(a),
                        dbname="shop", autocommit=True, sslmode="require")
    port = pg_local_port(c)
    ssl = bool(c.pgconn.ssl_in_use)
    cur = c.cursor()
    rows = []
    cur.execute("SELECT name FROM users WHERE id = 1")
    rows.append(len(cur.fetchall()))
    cur.execute("SELECT id, name FROM users WHERE name = %s", ("pg-canary-tls-param",))
    rows.append(len(cur.fetchall()))
    cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (40, "pg-canary-tls-insert"))
    errors = []
    try:
        cur.execute("SELECT * FROM missing_table WHERE id = %s", (5,))
    except psycopg.errors.UndefinedTable as e:
        errors.append(e.sqlstate)
    c.close()
    out(local_port=port, rows=rows, errors=errors, ssl=ssl, impl=psycopg.pq.__impl__)


def pg_asyncpg(a):
    """The scenario of `postgres_asyncpg_spans`, in order: asyncpg prepares every statement
    with Parse/Describe/Flush, then executes it by name (Bind/Execute/Sync)."""
    import asyncio

    import asyncpg

    async def main():
        c = await asyncpg.connect(host="127.0.0.1", port=a.port, user="app",
                                  password=db_password(a), database="shop", ssl=False)
        port = c._transport.get_extra_info("sockname")[1]
        rows = []
        # Prepared (Parse/Describe/Flush), then executed.
        rows.append(len(await c.fetch("SELECT name FROM users WHERE id = $1", 1)))
        # Prepared once, then two Bind/Execute pipelined before one Sync.
        await c.executemany("INSERT INTO users (id, name) VALUES ($1, $2)",
                            [(20, "pg-canary-many1"), (21, "pg-canary-many2")])
        # From asyncpg's statement cache: no new Parse.
        rows.append(len(await c.fetch("SELECT name FROM users WHERE id = $1", 20)))
        errors = []
        try:
            await c.fetch("SELECT * FROM missing_table")
        except asyncpg.UndefinedTableError as e:
            errors.append(e.sqlstate)
        # No arguments: the simple query protocol, the literals in the text.
        await c.execute("UPDATE users SET name = 'pg-canary-simple' WHERE id = 21")
        await c.close()
        return port, rows, errors

    port, rows, errors = asyncio.run(main())
    out(local_port=port, rows=rows, errors=errors)


# --- MariaDB (PyMySQL) ------------------------------------------------------------------------


def my_connect(a, user, password, database=None):
    import pymysql

    return pymysql.connect(
        host="127.0.0.1",
        port=a.port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
    )


def my_setup(a):
    root = retry("mariadb login", lambda: my_connect(a, "root", ""))
    cur = root.cursor()
    cur.execute("CREATE DATABASE shop")
    cur.execute("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY %s", (db_password(a),))
    cur.execute("GRANT ALL ON shop.* TO 'app'@'127.0.0.1'")
    cur.execute("CREATE DATABASE audit")
    cur.execute("GRANT ALL ON audit.* TO 'app'@'127.0.0.1'")
    cur.execute("CREATE TABLE audit.events (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO audit.events VALUES (1), (2)")
    cur.execute("CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
    cur.execute("INSERT INTO shop.users VALUES (1, 'ann'), (2, 'bob'), (3, 'my-canary-row')")
    root.close()
    out(ok=True)


def my_client(a):
    """The scenario of `mariadb_pymysql_spans`, in order."""
    import pymysql

    c = my_connect(a, "app", db_password(a), "shop")
    port = c._sock.getsockname()[1]
    cur = c.cursor()
    rows = []
    cur.execute("SELECT name FROM users WHERE id = 1")
    rows.append(len(cur.fetchall()))
    # PyMySQL binds parameters in the client: the literal is in the COM_QUERY text.
    cur.execute("SELECT id, name FROM users WHERE name = %s", ("my-canary-param",))
    rows.append(len(cur.fetchall()))
    cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (4, "my-canary-insert"))
    cur.execute("SELECT id FROM users WHERE id IN (%s, %s, %s)", (1, 2, 4))
    rows.append(len(cur.fetchall()))
    errors = []
    try:
        cur.execute("SELECT * FROM missing_table")
    except pymysql.err.ProgrammingError as e:
        errors.append(e.args[0])
    c.ping(reconnect=False)
    c.select_db("audit")  # COM_INIT_DB: later operations carry db.namespace "audit"
    cur.execute("SELECT COUNT(*) FROM events")
    rows.append(len(cur.fetchall()))
    c.close()
    out(local_port=port, rows=rows, errors=errors)


# --- Redis (redis-py) -------------------------------------------------------------------------


def redis_client_for(a, protocol, db=0):
    import redis

    warnings.simplefilter("ignore")  # lib_name=None is deprecated in favour of driver_info
    kw = {}
    if protocol == 3:
        from redis.maint_notifications import MaintNotificationsConfig

        kw["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return redis.Redis(
        host="127.0.0.1",
        port=a.port,
        password=os.environ.get("DB_PASSWORD") or None,
        db=db,
        protocol=protocol,
        # No CLIENT SETINFO (Redis 7.0 answers it with an error the client ignores).
        lib_name=None,
        lib_version=None,
        **kw,
    )


def redis_client(a):
    """The scenario of `redis_spans`, in order: RESP2 first, then RESP3."""
    import redis

    r = redis_client_for(a, 2)
    r.set("redis-canary-key", "redis-canary-value")
    got = [r.get("redis-canary-key")]
    p = r.pipeline(transaction=False)
    p.set("n", 1).incr("n").get("n").lpush("list", "x")
    got.append(p.execute())
    errors = []
    try:
        r.get("list")
    except redis.ResponseError as e:
        errors.append(str(e).split()[0])
    r.execute_command("SELECT", 2)
    r.set("k2", "v")
    got.append(r.get("k2"))
    conn = r.connection_pool.get_connection()  # the one connection all of the above used
    port = conn._sock.getsockname()[1]
    r.connection_pool.release(conn)
    r.close()

    r3 = redis_client_for(a, 3)
    r3.hset("h", mapping={"a": "1", "b": "2"})
    got.append(r3.hgetall("h"))
    r3.close()
    out(got=[repr(g) for g in got], errors=errors, local_port=port)


# --- HTTP load for db_service.py --------------------------------------------------------------


def http_load(a):
    """GET /item/<i> for i in 0..n, `--workers` at a time; fails unless every answer is 200."""
    results = {}
    lock = threading.Lock()
    queue = list(range(a.n))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/item/{i}", timeout=20) as resp:
                body = json.loads(resp.read())
                with lock:
                    results[i] = (resp.status, body)

    threads = [threading.Thread(target=worker) for _ in range(a.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {i: r for i, r in results.items() if r[0] != 200}
    if bad or len(results) != a.n:
        raise SystemExit(f"http load: {bad} ({len(results)} answers of {a.n})")
    out(answers=len(results))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tables", default="")
    p.add_argument("--table", default="users")
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--workers", type=int, default=4)
    a = p.parse_args()
    commands = {
        "pg-setup": pg_setup,
        "pg-client": pg_client,
        "pg-one": pg_one,
        "pg-asyncpg": pg_asyncpg,
        "pg-tls": pg_tls,
        "my-setup": my_setup,
        "my-client": my_client,
        "redis-client": redis_client,
        "http-load": http_load,
    }
    if a.command not in commands:
        sys.exit(f"unknown command {a.command}")
    commands[a.command](a)


if __name__ == "__main__":
    main()
