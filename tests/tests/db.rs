//! Privileged end-to-end tests of database spans: Debian's PostgreSQL, MariaDB and Redis
//! servers started on free ports of 127.0.0.1 with their data in temp dirs, real clients
//! (psycopg 3 over libpq, asyncpg, PyMySQL, redis-py: `tests/peers/db_clients.py`; Node's
//! `pg` and `mysql2`: `tests/peers/db_node.js`; Go's lib/pq and go-sql-driver/mysql:
//! `tests/peers/db_go`), and `sonde run --output jsonl` writing what it made of their
//! conversations.
//!
//! The servers run outside the traced cgroup (only the clients are traced) except in the
//! server-side test. Each test starts its servers once; every scenario is a fixed list of
//! operations, so each test asserts the exact list of spans it must give, in order.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    Lines, Tcpdump, TestCgroup, free_port, node_modules, peers_dir, peers_python, sonde_bin,
    sonde_run, spawn_tracing, wait_for_port,
};

const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const STATUS_ERROR: i64 = 2;

// --- servers ------------------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the temp dir, removed by [`Server`]'s drop.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sonde-db-{}-{}-{name}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// The first of `candidates` (absolute paths, or names looked up in `PATH`) that exists, or
/// panics saying which Debian package to install.
fn find_bin(candidates: &[String], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.exists() {
                return p.to_owned();
            }
        } else if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(c))
            .find(|f| f.exists())
        {
            return found;
        }
    }
    panic!(
        "none of {candidates:?} found: install Debian's `{package}` (`cargo xtask setup` does), \
         the database span tests start a real server"
    );
}

/// `/usr/lib/postgresql/<newest>/bin/<name>` (Debian keeps the server out of `PATH`), or
/// `<name>` in `PATH`.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<u32> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let mut candidates: Vec<String> = versions
        .iter()
        .rev()
        .map(|v| format!("/usr/lib/postgresql/{v}/bin/{name}"))
        .collect();
    candidates.push(name.into());
    find_bin(&candidates, "postgresql")
}

/// uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_user() -> (u32, u32) {
    let name = c"postgres";
    // SAFETY: getpwnam with a NUL-terminated name; the fields are copied out at once, before
    // any other call could reuse the static buffer.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        assert!(
            !pw.is_null(),
            "no `postgres` user: install Debian's `postgresql` (`cargo xtask setup` does)"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// A database server the test started: stopped with `stop_signal`, then killed, on drop, and
/// its directory removed.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    stop_signal: i32,
    what: &'static str,
}

impl Server {
    fn spawn(
        mut cmd: Command,
        port: u16,
        dir: PathBuf,
        stop_signal: i32,
        what: &'static str,
    ) -> Self {
        let log = fs::File::create(dir.join("server.log")).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
        let server = Self {
            child,
            port,
            dir,
            stop_signal,
            what,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} does not listen on 127.0.0.1:{} after 20 s; its log:\n{}",
            self.what,
            self.port,
            fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of a child we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL with password authentication (SCRAM-SHA-256) for every TCP login: `initdb -A
/// scram-sha-256 --pwfile` for the superuser, then [`pg_setup`] adds the user `app`. In `cg`
/// (traced) or outside it.
fn start_postgres(cg: Option<&TestCgroup>, su_password: &str) -> Server {
    start_postgres_with(cg, su_password, false)
}

/// [`start_postgres`], with `ssl = on` when `tls` (a self-signed certificate for 127.0.0.1
/// made in its directory; clients may still log in without TLS).
fn start_postgres_with(cg: Option<&TestCgroup>, su_password: &str, tls: bool) -> Server {
    let initdb = pg_bin("initdb");
    let postgres = pg_bin("postgres");
    let (uid, gid) = postgres_user();
    let dir = temp_dir("pg");
    let pwfile = dir.join("pw");
    fs::write(&pwfile, format!("{su_password}\n")).unwrap();
    for p in [&dir, &pwfile] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let out = Command::new(&initdb)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--no-sync", "--no-instructions"])
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ssl = Vec::new();
    if tls {
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (Debian package openssl) makes the server's certificate");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for p in [&cert, &key] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
        // PostgreSQL refuses a key that others can read.
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        ssl = vec![
            "-c".to_owned(),
            "ssl=on".to_owned(),
            "-c".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            "-c".to_owned(),
            format!("ssl_key_file={}", key.display()),
        ];
    }
    let port = free_port();
    // setpriv execs postgres as the `postgres` user from a process that is still root when it
    // joins the cgroup (Command::uid would drop root before pre_exec writes cgroup.procs).
    let mut cmd = match cg {
        Some(cg) => cg.command("setpriv"),
        None => Command::new("setpriv"),
    };
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
    ])
    .arg(&postgres)
    .arg("-D")
    .arg(&data)
    .args(["-p", &port.to_string(), "-k"])
    .arg(&dir)
    .args([
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "shared_buffers=16MB",
        "-c",
        "max_connections=20",
    ])
    .args(&ssl);
    // SIGQUIT: immediate shutdown, the backends go with the postmaster.
    Server::spawn(cmd, port, dir, libc::SIGQUIT, "postgres")
}

/// MariaDB with a fresh system database (root without a password, from 127.0.0.1 only).
/// Creates the `app` user (password `app_pw`), its database `shop` with table `users`, and
/// `tables` (three rows each), as the superuser; untraced.
fn pg_setup(pg: &Server, su_pw: &str, app_pw: &str, tables: &[String]) {
    let tables = tables.join(",");
    let mut args = vec![];
    if !tables.is_empty() {
        args.extend(["--tables", &tables]);
    }
    client_env(
        None,
        "pg-setup",
        pg.port,
        &args,
        &[("DB_SU_PASSWORD", su_pw), ("DB_PASSWORD", app_pw)],
    );
}

fn start_mariadb() -> Server {
    let install = find_bin(
        &["mariadb-install-db".into(), "mysql_install_db".into()],
        "mariadb-server",
    );
    let mariadbd = find_bin(
        &["mariadbd".into(), "/usr/sbin/mariadbd".into()],
        "mariadb-server",
    );
    let dir = temp_dir("mariadb");
    let data = dir.join("data");
    // Small InnoDB files: the data directory stays around 20 MB.
    let small = [
        "--innodb-log-file-size=4M",
        "--innodb-buffer-pool-size=16M",
        "--skip-name-resolve",
    ];
    let out = Command::new(&install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .args(small)
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .args([
            "--user=root",
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
        ])
        .args(small);
    Server::spawn(cmd, port, dir, libc::SIGKILL, "mariadbd")
}

/// Redis without persistence, with `requirepass` when `password` is not empty.
fn start_redis(password: &str) -> Server {
    let bin = find_bin(&["redis-server".into()], "redis-server");
    let dir = temp_dir("redis");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(&dir);
    if !password.is_empty() {
        cmd.args(["--requirepass", password]);
    }
    Server::spawn(cmd, port, dir, libc::SIGKILL, "redis-server")
}

// --- clients ------------------------------------------------------------------------------

/// Runs `db_clients.py COMMAND --port PORT args...` (in `cg`, traced, or outside it) and
/// returns the JSON line it prints.
fn client(cg: Option<&TestCgroup>, command: &str, port: u16, args: &[&str]) -> Value {
    client_env(cg, command, port, args, &[])
}

/// [`client`] with environment variables: the password travels in `DB_PASSWORD`, never in
/// argv (sonde exports `process.command_line`).
fn client_env(
    cg: Option<&TestCgroup>,
    command: &str,
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let py = peers_python();
    let mut cmd = match cg {
        Some(cg) => cg.command(&py),
        None => Command::new(&py),
    };
    cmd.arg(peers_dir().join("db_clients.py"))
        .args([command, "--port", &port.to_string()])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::inherit());
    let out = cmd.output().expect("run db_clients.py");
    assert!(
        out.status.success(),
        "db_clients.py {command} failed: {} (its error is above; a missing module means \
         `cargo xtask setup` has not installed tests/peers/requirements.txt)",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("db_clients.py {command} said {text:?}: {e}"))
}

/// Runs `db_node.js COMMAND PORT` (node-postgres or mysql2) in `cg` with the password in
/// `DB_PASSWORD`, and returns the JSON line it prints.
fn node_client(cg: &TestCgroup, command: &str, port: u16, password: &str) -> Value {
    let out = cg
        .command("node")
        .arg(peers_dir().join("db_node.js"))
        .args([command, &port.to_string()])
        .env("NODE_PATH", node_modules())
        .env("DB_PASSWORD", password)
        .stderr(Stdio::inherit())
        .output()
        .expect("run node db_node.js");
    assert!(
        out.status.success(),
        "db_node.js {command} failed: {} (its error is above; a missing module means \
         `cargo xtask setup` has not installed tests/peers/node/package.json)",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("db_node.js {command} said {text:?}: {e}"))
}

/// `tests/peers/db_go/main.go` (database/sql with lib/pq and go-sql-driver/mysql), built once
/// per test binary, offline, with Debian's Go 1.19 and Debian's packages of the drivers
/// (`GO111MODULE=off`, `GOPATH=/usr/share/gocode`).
fn go_db_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let go = find_bin(
            &["/usr/lib/go-1.19/bin/go".into(), "go".into()],
            "golang-go",
        );
        for pkg in ["lib/pq", "go-sql-driver/mysql"] {
            let dir = Path::new("/usr/share/gocode/src/github.com").join(pkg);
            assert!(
                dir.is_dir(),
                "{} missing: install Debian's golang-github-lib-pq-dev and \
                 golang-github-go-sql-driver-mysql-dev (`cargo xtask setup` does)",
                dir.display()
            );
        }
        let venv = Path::new(&peers_python()).parent().unwrap().to_path_buf();
        let target = venv.join("../../go");
        fs::create_dir_all(&target).unwrap();
        let bin = target.join(format!("db_go-{}", std::process::id()));
        let out = Command::new(&go)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(peers_dir().join("db_go/main.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", target.join("cache-db"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("go build");
        assert!(
            out.status.success(),
            "go build db_go/main.go failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// Runs the Go client (`pq` or `mysql`) in `cg` with the password in `DB_PASSWORD`, and
/// returns the JSON line it prints.
fn go_client(cg: &TestCgroup, command: &str, port: u16, password: &str) -> Value {
    let bin = go_db_binary();
    let out = cg
        .command(bin.to_str().unwrap())
        .args([command, &port.to_string()])
        .env("DB_PASSWORD", password)
        .stderr(Stdio::inherit())
        .output()
        .expect("run db_go");
    assert!(
        out.status.success(),
        "db_go {command} failed: {} (its error is above)",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("db_go {command} said {text:?}: {e}"))
}

// --- sonde and its spans ------------------------------------------------------------------

/// `sonde run --output jsonl` tracing one cgroup; [`Sonde::finish`] stops it and returns
/// every span it wrote.
struct Sonde {
    child: Option<Child>,
    out: PathBuf,
}

impl Sonde {
    fn start(cg: &TestCgroup) -> Self {
        let out =
            std::env::temp_dir().join(format!("sonde-db-{}-{}.jsonl", std::process::id(), cg.id));
        let _ = fs::remove_file(&out);
        let mut cmd = sonde_run(&cg.path);
        cmd.args(["--output", "jsonl", "--output-file"])
            .arg(&out)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        Self {
            child: Some(spawn_tracing(cmd)),
            out,
        }
    }

    /// The spans written so far; `strict` once sonde has exited (before, the last line may
    /// be half written).
    fn spans(&self, strict: bool) -> Vec<Value> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| match serde_json::from_str(l) {
                Ok(v) => Some(v),
                Err(e) if strict => panic!("sonde wrote a line that is not JSON ({e}): {l}"),
                Err(_) => None,
            })
            .collect()
    }

    /// Waits until `done(spans)` or 15 s, then stops sonde (SIGTERM: it flushes) and returns
    /// the spans and the file's raw text.
    fn finish(mut self, done: impl Fn(&[Value]) -> bool) -> (Vec<Value>, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !done(&self.spans(false)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // A little longer, for spans that should not be there.
        std::thread::sleep(Duration::from_millis(300));
        let mut child = self.child.take().unwrap();
        // SAFETY: kill with the pid of a child we have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "sonde exited with {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sonde did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        (self.spans(true), text)
    }
}

impl Drop for Sonde {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.out);
    }
}

/// Starts sonde tracing `cg` while `prepare` starts and fills the untraced servers (both take
/// seconds; they overlap).
fn with_sonde<T: Send>(cg: &TestCgroup, prepare: impl FnOnce() -> T + Send) -> (Sonde, T) {
    std::thread::scope(|s| {
        let sonde = s.spawn(|| Sonde::start(cg));
        let t = prepare();
        (sonde.join().expect("sonde starts"), t)
    })
}

/// A span attribute as a string (`intValue`s are decimal strings in OTLP/JSON).
/// A string attribute of the span's resource.
fn resource_attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["resource"]["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// Every span names the client's program and command line. The clients live for
/// milliseconds (the Go program, Node scripts): sonde reads a process's /proc entry at its
/// exec, since by its first span the process is often gone.
fn assert_client_resource(db: &[Value], command_line: &str, program: &Path) {
    let program = fs::canonicalize(program).unwrap();
    for s in db {
        assert_eq!(
            resource_attr(s, "process.command_line"),
            Some(command_line),
            "{s}"
        );
        assert_eq!(
            resource_attr(s, "process.executable.path").map(PathBuf::from),
            Some(program.clone()),
            "{s}"
        );
    }
}

fn assert_go_resource(db: &[Value], command: &str, port: u16) {
    let bin = go_db_binary();
    let line = format!("{} {command} {port}", bin.display());
    assert_client_resource(db, &line, bin);
}

/// The Go client's spans (`system`, the program's `command`, the driver's name for messages):
/// the operations `want`, the program on every span, and no rows on the two preparations
/// (spans 1 and 3). Returns sonde's whole output.
fn assert_go_spans(
    sonde: Sonde,
    want: &[Op],
    (system, command, driver): (&str, &str, &str),
    port: u16,
) -> String {
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(&db, want, &client_common(system, port), CLIENT, driver);
    assert_go_resource(&db, command, port);
    for i in [1, 3] {
        assert_eq!(
            attr(&db[i], "db.response.returned_rows"),
            None,
            "span {i}, a preparation, has no rows:\n{}",
            describe(&db)
        );
    }
    text
}

fn assert_node_resource(db: &[Value], command: &str, port: u16) {
    let line = format!(
        "node {} {command} {port}",
        peers_dir().join("db_node.js").display()
    );
    let node = find_bin(&["node".into()], "nodejs");
    assert_client_resource(db, &line, &node);
}

fn attr(span: &Value, key: &str) -> Option<String> {
    let kv = span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v["stringValue"]
        .as_str()
        .or_else(|| v["intValue"].as_str())
        .map(str::to_owned)
        .or_else(|| Some(v.to_string()))
}

fn kind(span: &Value) -> i64 {
    span["kind"].as_i64().unwrap_or(-1)
}

fn status(span: &Value) -> i64 {
    span["status"]["code"].as_i64().unwrap_or(0)
}

fn start_ns(span: &Value) -> u64 {
    span["startTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn end_ns(span: &Value) -> u64 {
    span["endTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Database spans (those with `db.system.name`), in the order they started (file order
/// between equal start times).
fn db_spans(spans: &[Value]) -> Vec<Value> {
    let mut v: Vec<Value> = spans
        .iter()
        .filter(|s| attr(s, "db.system.name").is_some())
        .cloned()
        .collect();
    v.sort_by_key(start_ns);
    v
}

/// One line per span, for assertion messages.
fn describe(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            let attrs: BTreeMap<String, String> = s["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kv| {
                    Some((
                        kv["key"].as_str()?.to_owned(),
                        attr(s, kv["key"].as_str()?)?,
                    ))
                })
                .collect();
            format!(
                "kind={} name={:?} status={} trace={} span={} parent={} {attrs:?}",
                kind(s),
                s["name"].as_str().unwrap_or(""),
                status(s),
                s["traceId"].as_str().unwrap_or(""),
                s["spanId"].as_str().unwrap_or(""),
                s["parentSpanId"].as_str().unwrap_or(""),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one database span must say. `None` fields must be absent, except `rows`, which is only
/// checked when given (rows affected by DML are not a convention attribute).
#[derive(Clone, Debug)]
struct Op {
    name: &'static str,
    operation: &'static str,
    collection: Option<&'static str>,
    text: &'static str,
    rows: Option<i64>,
    error: Option<&'static str>,
    namespace: Option<&'static str>,
}

/// A span named by `db.query.summary` with `operation` on `collection`.
fn sql(name: &'static str, text: &'static str) -> Op {
    let mut words = name.split(' ');
    let operation = words.next().unwrap();
    Op {
        name,
        operation,
        collection: words.next(),
        text,
        rows: None,
        error: None,
        namespace: None,
    }
}

/// A Redis command span: name and operation are the command.
fn cmd(command: &'static str, text: &'static str, namespace: &'static str) -> Op {
    Op {
        name: command,
        operation: command,
        collection: None,
        text,
        rows: None,
        error: None,
        namespace: Some(namespace),
    }
}

impl Op {
    fn rows(mut self, n: i64) -> Self {
        self.rows = Some(n);
        self
    }
    fn error(mut self, code: &'static str) -> Self {
        self.error = Some(code);
        self
    }
    fn namespace(mut self, ns: &'static str) -> Self {
        self.namespace = Some(ns);
        self
    }
}

/// Asserts `got` is exactly `want`, in order, each with `common` attributes and `kind`.
#[track_caller]
fn assert_ops(got: &[Value], want: &[Op], common: &[(&str, String)], want_kind: i64, what: &str) {
    let all = describe(got);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} database spans, expected {} ({:?}):\n{all}",
        got.len(),
        want.len(),
        want.iter().map(|o| o.name).collect::<Vec<_>>()
    );
    for (i, (s, w)) in got.iter().zip(want).enumerate() {
        let ctx = format!("{what}: span {i} (expected {w:?}) in:\n{all}");
        assert_eq!(s["name"].as_str(), Some(w.name), "name; {ctx}");
        assert_eq!(kind(s), want_kind, "kind; {ctx}");
        assert_eq!(
            attr(s, "db.operation.name").as_deref(),
            Some(w.operation),
            "db.operation.name; {ctx}"
        );
        assert_eq!(
            attr(s, "db.collection.name").as_deref(),
            w.collection,
            "db.collection.name; {ctx}"
        );
        if w.collection.is_some() {
            assert_eq!(
                attr(s, "db.query.summary").as_deref(),
                Some(w.name),
                "db.query.summary; {ctx}"
            );
        }
        assert_eq!(
            attr(s, "db.query.text").as_deref(),
            Some(w.text),
            "db.query.text; {ctx}"
        );
        if let Some(n) = w.rows {
            assert_eq!(
                attr(s, "db.response.returned_rows"),
                Some(n.to_string()),
                "db.response.returned_rows; {ctx}"
            );
        }
        if let Some(ns) = w.namespace {
            assert_eq!(
                attr(s, "db.namespace").as_deref(),
                Some(ns),
                "db.namespace; {ctx}"
            );
        }
        match w.error {
            Some(code) => {
                assert_eq!(status(s), STATUS_ERROR, "status; {ctx}");
                assert_eq!(
                    attr(s, "db.response.status_code").as_deref(),
                    Some(code),
                    "db.response.status_code; {ctx}"
                );
                assert!(
                    attr(s, "error.type").is_some_and(|e| !e.is_empty()),
                    "error.type; {ctx}"
                );
            }
            None => {
                assert_ne!(status(s), STATUS_ERROR, "status; {ctx}");
                assert_eq!(attr(s, "error.type"), None, "error.type; {ctx}");
                assert_eq!(
                    attr(s, "db.response.status_code"),
                    None,
                    "db.response.status_code; {ctx}"
                );
            }
        }
        for (k, v) in common {
            assert_eq!(attr(s, k).as_deref(), Some(v.as_str()), "{k}; {ctx}");
        }
        assert!(end_ns(s) >= start_ns(s), "end before start; {ctx}");
    }
}

/// Asserts none of `secrets` appears anywhere in sonde's output.
#[track_caller]
fn assert_never_exported(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{s:?} was exported; the output:\n{text}");
    }
}

/// Attributes every span of a client connection to `port` carries.
fn client_common(system: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("db.system.name", system.into()),
        ("server.address", "127.0.0.1".into()),
        ("server.port", port.to_string()),
        ("network.peer.address", "127.0.0.1".into()),
        ("network.peer.port", port.to_string()),
    ]
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// --- tests --------------------------------------------------------------------------------

/// psycopg 3 (libpq): simple queries, the extended protocol with unnamed and named prepared
/// statements, errors by both, pipeline mode, a transaction; SCRAM login with a password set
/// by `ALTER USER`, which is never exported, and neither is any literal.
#[test]
fn postgres_psycopg_spans() {
    let cg = TestCgroup::new("db-pg");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let (sonde, pg) = with_sonde(&cg, || {
        let pg = start_postgres(None, &su_pw);
        pg_setup(&pg, &su_pw, &app_pw, &[]);
        pg
    });
    // The same session captured by tcpdump, for `sonde replay` below.
    let pcap = temp_dir("pg-replay").join("psycopg.pcap");
    let tcpdump = Tcpdump::start(pg.port, pcap.clone());
    let did = client_env(
        Some(&cg),
        "pg-client",
        pg.port,
        &[],
        &[("DB_PASSWORD", &app_pw)],
    );
    let (tcpdump_said, whole) = tcpdump.stop();
    assert_eq!(did["rows"], serde_json::json!([1, 0, 1, 1]), "{did}");
    assert_eq!(
        did["errors"],
        serde_json::json!(["42P01", "42P01"]),
        "{did}"
    );
    let want = [
        sql("SELECT users", "SELECT name FROM users WHERE id = ?").rows(1),
        sql("SELECT users", "SELECT id, name FROM users WHERE name = $1").rows(0),
        sql(
            "INSERT users",
            "INSERT INTO users (id, name) VALUES ($1, $2)",
        ),
        // prepare=True: the statement is prepared in a round trip of its own (Parse + Sync),
        // a span without rows, then executed twice by name.
        sql("SELECT users", "SELECT name FROM users WHERE id = $1"),
        sql("SELECT users", "SELECT name FROM users WHERE id = $1").rows(1),
        sql("SELECT users", "SELECT name FROM users WHERE id = $1").rows(1),
        sql("SELECT missing_table", "SELECT * FROM missing_table").error("42P01"),
        sql(
            "SELECT missing_table",
            "SELECT * FROM missing_table WHERE id = $1",
        )
        .error("42P01"),
        sql(
            "INSERT users",
            "INSERT INTO users (id, name) VALUES ($1, $2)",
        ),
        sql("SELECT users", "SELECT name FROM users WHERE id = $1").rows(1),
        sql("UPDATE users", "UPDATE users SET name = $1 WHERE id = $2"),
        sql("BEGIN", "BEGIN"),
        sql("DELETE users", "DELETE FROM users WHERE id = $1"),
        sql("COMMIT", "COMMIT"),
    ]
    .map(|o| o.namespace("shop"));
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("postgresql", pg.port),
        CLIENT,
        "psycopg",
    );
    let secrets = [
        su_pw.as_str(),
        &app_pw,
        "pg-canary-param",
        "pg-canary-insert",
        "pg-canary-pipe",
        "pg-canary-upd",
        "pg-canary-row",
    ];
    assert_never_exported(&text, &secrets);

    // `sonde replay` of the capture gives the same spans, as sanitised.
    assert!(whole, "tcpdump lost packets: {tcpdump_said}");
    let (replayed, replay_text) = replay_jsonl(&pcap);
    let _ = fs::remove_dir_all(pcap.parent().unwrap());
    assert_ops(
        &db_spans(&replayed),
        &want,
        &client_common("postgresql", pg.port),
        CLIENT,
        "psycopg, replayed",
    );
    assert_never_exported(&replay_text, &secrets);
}

/// `sonde replay PCAP --output jsonl`: its spans and its whole output.
fn replay_jsonl(pcap: &Path) -> (Vec<Value>, String) {
    let out = Command::new(sonde_bin())
        .arg("replay")
        .arg(pcap)
        .args(["--output", "jsonl"])
        .stderr(Stdio::inherit())
        .output()
        .expect("sonde replay");
    assert!(out.status.success(), "sonde replay: {}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let spans = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (spans, text)
}

/// asyncpg (its own protocol code, not libpq): every statement prepared with
/// Parse/Describe/Flush, without a Sync (the preparation is a span of its own, without rows),
/// then executed by name; `executemany` pipelines two Bind/Execute before one Sync; a statement
/// from asyncpg's cache runs without a new Parse; a failing preparation; a simple query. The
/// password (from the environment) and the literals are never exported.
#[test]
fn postgres_asyncpg_spans() {
    let cg = TestCgroup::new("db-asyncpg");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let (sonde, pg) = with_sonde(&cg, || {
        let pg = start_postgres(None, &su_pw);
        pg_setup(&pg, &su_pw, &app_pw, &[]);
        pg
    });
    let did = client_env(
        Some(&cg),
        "pg-asyncpg",
        pg.port,
        &[],
        &[("DB_PASSWORD", &app_pw)],
    );
    assert_eq!(did["rows"], serde_json::json!([1, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!(["42P01"]), "{did}");
    let select = "SELECT name FROM users WHERE id = $1";
    let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
    let want = [
        // Parse/Describe/Flush, then Bind/Execute/Sync.
        sql("SELECT users", select),
        sql("SELECT users", select).rows(1),
        // executemany: one preparation, two executions.
        sql("INSERT users", insert),
        sql("INSERT users", insert),
        sql("INSERT users", insert),
        // The cached statement.
        sql("SELECT users", select).rows(1),
        sql("SELECT missing_table", "SELECT * FROM missing_table").error("42P01"),
        sql("UPDATE users", "UPDATE users SET name = ? WHERE id = ?"),
    ]
    .map(|o| o.namespace("shop"));
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("postgresql", pg.port),
        CLIENT,
        "asyncpg",
    );
    for i in [0, 2] {
        assert_eq!(
            attr(&db[i], "db.response.returned_rows"),
            None,
            "span {i}, a preparation, has no rows:\n{}",
            describe(&db)
        );
    }
    assert_never_exported(
        &text,
        &[
            &su_pw,
            &app_pw,
            "pg-canary-many1",
            "pg-canary-many2",
            "pg-canary-simple",
            "pg-canary-row",
        ],
    );
}

/// psycopg over TLS (`sslmode=require`): the SSLRequest is seen in the socket's bytes, the
/// session itself through the OpenSSL probes. psycopg's binary wheel bundles a libssl of its
/// own that sonde does not hook, so this client is the pure-Python psycopg over Debian's
/// libpq (`PSYCOPG_IMPL=python`), which uses the system OpenSSL. The same spans as without
/// TLS, and no password or literal exported.
#[test]
fn postgres_psycopg_tls_spans() {
    let cg = TestCgroup::new("db-pg-tls");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let (sonde, pg) = with_sonde(&cg, || {
        let pg = start_postgres_with(None, &su_pw, true);
        pg_setup(&pg, &su_pw, &app_pw, &[]);
        pg
    });
    let did = client_env(
        Some(&cg),
        "pg-tls",
        pg.port,
        &[],
        &[("DB_PASSWORD", &app_pw), ("PSYCOPG_IMPL", "python")],
    );
    assert_eq!(did["impl"], "python", "{did}");
    assert_eq!(did["ssl"], true, "{did}");
    assert_eq!(did["rows"], serde_json::json!([1, 0]), "{did}");
    assert_eq!(did["errors"], serde_json::json!(["42P01"]), "{did}");
    let want = [
        sql("SELECT users", "SELECT name FROM users WHERE id = ?").rows(1),
        sql("SELECT users", "SELECT id, name FROM users WHERE name = $1").rows(0),
        sql(
            "INSERT users",
            "INSERT INTO users (id, name) VALUES ($1, $2)",
        ),
        sql(
            "SELECT missing_table",
            "SELECT * FROM missing_table WHERE id = $1",
        )
        .error("42P01"),
    ]
    .map(|o| o.namespace("shop"));
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("postgresql", pg.port),
        CLIENT,
        "psycopg over TLS",
    );
    assert_never_exported(
        &text,
        &[
            &su_pw,
            &app_pw,
            "pg-canary-tls-param",
            "pg-canary-tls-insert",
            "pg-canary-row",
        ],
    );
}

/// PyMySQL against MariaDB: `db.system.name` `mariadb`, `db.namespace` from the handshake and
/// then from `COM_INIT_DB`, client-side bound parameters sanitised, an `ERR` packet (1146),
/// `COM_PING`; the password (`mysql_native_password`) never exported.
#[test]
fn mariadb_pymysql_spans() {
    let cg = TestCgroup::new("db-mariadb");
    let pw = unique("my-app-secret");
    let (sonde, my) = with_sonde(&cg, || {
        let my = start_mariadb();
        client_env(None, "my-setup", my.port, &[], &[("DB_PASSWORD", &pw)]);
        my
    });
    let did = client_env(
        Some(&cg),
        "my-client",
        my.port,
        &[],
        &[("DB_PASSWORD", &pw)],
    );
    assert_eq!(did["rows"], serde_json::json!([1, 0, 3, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!([1146]), "{did}");
    let want = [
        // PyMySQL's own, at connect.
        sql("SET", "SET NAMES utf8mb4").namespace("shop"),
        sql("SELECT users", "SELECT name FROM users WHERE id = ?")
            .rows(1)
            .namespace("shop"),
        sql("SELECT users", "SELECT id, name FROM users WHERE name = ?")
            .rows(0)
            .namespace("shop"),
        sql("INSERT users", "INSERT INTO users (id, name) VALUES (?, ?)").namespace("shop"),
        sql("SELECT users", "SELECT id FROM users WHERE id IN (?)")
            .rows(3)
            .namespace("shop"),
        sql("SELECT missing_table", "SELECT * FROM missing_table")
            .error("1146")
            .namespace("shop"),
        Op {
            name: "PING",
            operation: "PING",
            collection: None,
            text: "PING",
            rows: None,
            error: None,
            namespace: Some("shop"),
        },
        Op {
            name: "USE",
            operation: "USE",
            collection: None,
            text: "USE ?",
            rows: None,
            error: None,
            // Like Redis SELECT: the namespace of the command that changes it is not checked.
            namespace: None,
        },
        sql("SELECT events", "SELECT COUNT(*) FROM events")
            .rows(1)
            .namespace("audit"),
    ];
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_eq!(
        db.len(),
        want.len(),
        "pymysql: database spans, expected {:?}:\n{}",
        want.iter().map(|o| o.name).collect::<Vec<_>>(),
        describe(&db)
    );
    // COM_PING and COM_INIT_DB carry no SQL: their operation names are checked loosely
    // (`PING`/`COM_PING`, `USE`/`COM_INIT_DB`), everything else as for a query.
    const NO_SQL: [usize; 2] = [6, 7];
    let (commands, queries): (Vec<_>, Vec<_>) = db
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| NO_SQL.contains(i));
    let queries: Vec<Value> = queries.into_iter().map(|(_, s)| s).collect();
    let want_queries: Vec<Op> = want
        .iter()
        .enumerate()
        .filter(|(i, _)| !NO_SQL.contains(i))
        .map(|(_, o)| o.clone())
        .collect();
    assert_ops(
        &queries,
        &want_queries,
        &client_common("mariadb", my.port),
        CLIENT,
        "pymysql",
    );
    let all = describe(&db);
    for (i, s) in &commands {
        let w = &want[*i];
        assert_eq!(kind(s), CLIENT, "span {i}:\n{all}");
        assert_eq!(
            attr(s, "db.system.name").as_deref(),
            Some("mariadb"),
            "span {i}:\n{all}"
        );
        if let Some(ns) = w.namespace {
            assert_eq!(
                attr(s, "db.namespace").as_deref(),
                Some(ns),
                "span {i}:\n{all}"
            );
        }
        assert_ne!(status(s), STATUS_ERROR, "span {i}:\n{all}");
        let op = attr(s, "db.operation.name").unwrap_or_default();
        let fits = match w.operation {
            "PING" => op.to_ascii_uppercase().contains("PING"),
            _ => op == "USE" || op.to_ascii_uppercase().contains("INIT_DB"),
        };
        assert!(
            fits,
            "span {i}: db.operation.name {op:?} should name {}:\n{all}",
            w.operation
        );
        assert_eq!(
            s["name"].as_str(),
            Some(op.as_str()),
            "span {i}: named by its operation:\n{all}"
        );
    }
    assert_never_exported(
        &text,
        &[&pw, "my-canary-param", "my-canary-insert", "my-canary-row"],
    );
}

/// node-postgres (`pg`, its own protocol code): a simple query, the unnamed statement
/// (Parse/Bind/Describe/Execute/Sync in one write), a named statement parsed with its first
/// execution and then executed by name, an insert, an error. Password from the environment.
#[test]
fn postgres_node_pg_spans() {
    let cg = TestCgroup::new("db-node-pg");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let (sonde, pg) = with_sonde(&cg, || {
        let pg = start_postgres(None, &su_pw);
        pg_setup(&pg, &su_pw, &app_pw, &[]);
        pg
    });
    let did = node_client(&cg, "pg", pg.port, &app_pw);
    assert_eq!(did["rows"], serde_json::json!([1, 0, 1, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!(["42P01"]), "{did}");
    let by_id = "SELECT name FROM users WHERE id = $1";
    let want = [
        sql("SELECT users", "SELECT name FROM users WHERE id = ?").rows(1),
        sql("SELECT users", "SELECT id, name FROM users WHERE name = $1").rows(0),
        sql("SELECT users", by_id).rows(1),
        sql("SELECT users", by_id).rows(1),
        sql(
            "INSERT users",
            "INSERT INTO users (id, name) VALUES ($1, $2)",
        ),
        sql(
            "SELECT missing_table",
            "SELECT * FROM missing_table WHERE id = $1",
        )
        .error("42P01"),
    ]
    .map(|o| o.namespace("shop"));
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("postgresql", pg.port),
        CLIENT,
        "node-postgres",
    );
    assert_node_resource(&db, "pg", pg.port);
    assert_never_exported(
        &text,
        &[
            &su_pw,
            &app_pw,
            "pg-canary-node",
            "pg-canary-node-insert",
            "pg-canary-row",
        ],
    );
}

/// mysql2 against MariaDB: `query()` (values put into the text by the client, sanitised),
/// `execute()` (`COM_STMT_PREPARE`, a span without rows, then `COM_STMT_EXECUTE` by statement
/// id; the second time from mysql2's statement cache), an `ERR` packet. Password from the
/// environment.
#[test]
fn mariadb_mysql2_spans() {
    let cg = TestCgroup::new("db-mysql2");
    let pw = unique("my-app-secret");
    let (sonde, my) = with_sonde(&cg, || {
        let my = start_mariadb();
        client_env(None, "my-setup", my.port, &[], &[("DB_PASSWORD", &pw)]);
        my
    });
    let did = node_client(&cg, "mysql", my.port, &pw);
    assert_eq!(did["rows"], serde_json::json!([0, 1, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!([1146]), "{did}");
    let by_id = "SELECT name FROM users WHERE id = ?";
    let want = [
        sql("SELECT users", "SELECT id, name FROM users WHERE name = ?").rows(0),
        // COM_STMT_PREPARE, then COM_STMT_EXECUTE twice.
        sql("SELECT users", by_id),
        sql("SELECT users", by_id).rows(1),
        sql("SELECT users", by_id).rows(1),
        sql("SELECT missing_table", "SELECT * FROM missing_table").error("1146"),
    ]
    .map(|o| o.namespace("shop"));
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("mariadb", my.port),
        CLIENT,
        "mysql2",
    );
    assert_node_resource(&db, "mysql", my.port);
    assert_eq!(
        attr(&db[1], "db.response.returned_rows"),
        None,
        "the preparation has no rows:\n{}",
        describe(&db)
    );
    assert_never_exported(&text, &[&pw, "my-canary-node", "my-canary-row"]);
}

/// Go's database/sql with lib/pq: a query without arguments (simple query protocol); one with
/// arguments, prepared in a round trip of its own (Parse/Describe/Sync: a span without rows)
/// and then executed; `db.Prepare` of a named statement and its `Exec`; an error.
#[test]
fn postgres_go_pq_spans() {
    let cg = TestCgroup::new("db-go-pq");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let (sonde, pg) = with_sonde(&cg, || {
        go_db_binary();
        let pg = start_postgres(None, &su_pw);
        pg_setup(&pg, &su_pw, &app_pw, &[]);
        pg
    });
    let did = go_client(&cg, "pq", pg.port, &app_pw);
    assert_eq!(did["rows"], serde_json::json!([1, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!(["42P01"]), "{did}");
    let select = "SELECT name FROM users WHERE id = $1";
    let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
    let want = [
        sql("SELECT users", "SELECT name FROM users WHERE id = ?").rows(1),
        sql("SELECT users", select),
        sql("SELECT users", select).rows(1),
        sql("INSERT users", insert),
        sql("INSERT users", insert),
        sql("SELECT missing_table", "SELECT * FROM missing_table").error("42P01"),
    ]
    .map(|o| o.namespace("shop"));
    let text = assert_go_spans(sonde, &want, ("postgresql", "pq", "lib/pq"), pg.port);
    assert_never_exported(
        &text,
        &[&su_pw, &app_pw, "pg-canary-go-insert", "pg-canary-row"],
    );
}

/// Go's database/sql with go-sql-driver/mysql: a query without arguments (`COM_QUERY`); with
/// arguments, `COM_STMT_PREPARE` (a span without rows), `COM_STMT_EXECUTE` and
/// `COM_STMT_CLOSE` (no answer, no span); an `ERR` packet.
#[test]
fn mariadb_go_mysql_spans() {
    let cg = TestCgroup::new("db-go-mysql");
    let pw = unique("my-app-secret");
    let (sonde, my) = with_sonde(&cg, || {
        go_db_binary();
        let my = start_mariadb();
        client_env(None, "my-setup", my.port, &[], &[("DB_PASSWORD", &pw)]);
        my
    });
    let did = go_client(&cg, "mysql", my.port, &pw);
    assert_eq!(did["rows"], serde_json::json!([1, 1]), "{did}");
    assert_eq!(did["errors"], serde_json::json!(["1146"]), "{did}");
    let select = "SELECT name FROM users WHERE id = ?";
    let insert = "INSERT INTO users (id, name) VALUES (?, ?)";
    let want = [
        sql("SELECT users", select).rows(1),
        sql("SELECT users", select),
        sql("SELECT users", select).rows(1),
        sql("INSERT users", insert),
        sql("INSERT users", insert),
        sql("SELECT missing_table", "SELECT * FROM missing_table").error("1146"),
    ]
    .map(|o| o.namespace("shop"));
    let text = assert_go_spans(
        sonde,
        &want,
        ("mariadb", "mysql", "go-sql-driver/mysql"),
        my.port,
    );
    assert_never_exported(&text, &[&pw, "my-canary-go-insert", "my-canary-row"]);
}

/// redis-py: AUTH, SET/GET, a pipeline (one span per command, in order), a `WRONGTYPE`
/// error, `SELECT 2` (later commands in namespace "2"), then RESP3 (`HELLO 3 AUTH`). Keys,
/// values and the password are never exported.
#[test]
fn redis_spans() {
    let cg = TestCgroup::new("db-redis");
    let pw = unique("redis-secret");
    let (sonde, redis) = with_sonde(&cg, || start_redis(&pw));
    let did = client_env(
        Some(&cg),
        "redis-client",
        redis.port,
        &[],
        &[("DB_PASSWORD", &pw)],
    );
    assert_eq!(did["errors"], serde_json::json!(["WRONGTYPE"]), "{did}");
    let want = [
        cmd("AUTH", "AUTH ?", "0"),
        cmd("SET", "SET ? ?", "0"),
        cmd("GET", "GET ?", "0"),
        // The pipeline.
        cmd("SET", "SET ? ?", "0"),
        cmd("INCRBY", "INCRBY ? ?", "0"),
        cmd("GET", "GET ?", "0"),
        cmd("LPUSH", "LPUSH ? ?", "0"),
        cmd("GET", "GET ?", "0").error("WRONGTYPE"),
        // Its own namespace is not checked: the one it ran in (0) and the one it set (2)
        // both make sense; the conventions do not say.
        Op {
            namespace: None,
            ..cmd("SELECT", "SELECT ?", "2")
        },
        cmd("SET", "SET ? ?", "2"),
        cmd("GET", "GET ?", "2"),
        // The RESP3 connection.
        cmd("HELLO", "HELLO ? ? ? ?", "0"),
        cmd("HSET", "HSET ? ? ? ? ?", "0"),
        cmd("HGETALL", "HGETALL ?", "0"),
    ];
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= want.len());
    let db = db_spans(&spans);
    assert_ops(
        &db,
        &want,
        &client_common("redis", redis.port),
        CLIENT,
        "redis-py",
    );
    assert_never_exported(
        &text,
        &[&pw, "redis-canary-key", "redis-canary-value", "default"],
    );
}

/// A thread-per-request HTTP service (Python `ThreadingHTTPServer`) that queries PostgreSQL
/// over one shared connection and Redis over a connection per request, served 4 requests at a
/// time: every database span is a child of the server span of the request it was made for.
/// Request `i` queries table `item_<i>` and Redis database `i + 1`, which is how the test knows
/// which request a database span belongs to (timing cannot tell concurrent requests apart).
#[test]
fn http_request_and_its_queries_are_one_trace() {
    const N: usize = 8;
    let mut cg = TestCgroup::new("db-trace");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let tables: Vec<String> = (0..N).map(|i| format!("item_{i}")).collect();
    let (sonde, (pg, redis)) = with_sonde(&cg, || {
        let pg = start_postgres(None, &su_pw);
        pg_setup(&pg, &su_pw, &app_pw, &tables);
        (pg, start_redis(""))
    });
    let port = free_port();
    let mut svc = cg.command(&peers_python());
    svc.arg(peers_dir().join("db_service.py"))
        .arg(port.to_string())
        .args(["--pg-port", &pg.port.to_string()])
        .args(["--redis-port", &redis.port.to_string()])
        .env("DB_PASSWORD", &app_pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cg.spawn(svc);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    // The load client is not traced: the server spans are the roots.
    let did = client(None, "http-load", port, &["--n", &N.to_string()]);
    assert_eq!(did["answers"], N, "{did}");

    // Per request: 1 PostgreSQL query, Redis SELECT, SET, GET.
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= 4 * N);
    let all = describe(&spans);
    let db = db_spans(&spans);
    assert_eq!(db.len(), 4 * N, "database spans:\n{all}");
    for i in 0..N {
        let path = format!("/item/{i}");
        let servers: Vec<&Value> = spans
            .iter()
            .filter(|s| kind(s) == SERVER && attr(s, "url.path").as_deref() == Some(&path))
            .collect();
        assert_eq!(servers.len(), 1, "one server span for {path}:\n{all}");
        let server = servers[0];
        let pg_spans: Vec<&Value> = db
            .iter()
            .filter(|s| attr(s, "db.collection.name") == Some(format!("item_{i}")))
            .collect();
        assert_eq!(pg_spans.len(), 1, "one query on item_{i}:\n{all}");
        let q = pg_spans[0];
        assert_eq!(kind(q), CLIENT, "{all}");
        assert_eq!(
            attr(q, "db.query.text"),
            Some(format!(
                "SELECT name FROM item_{i} WHERE id = $1 AND name <> ?"
            )),
            "{all}"
        );
        let ns = (i + 1).to_string();
        let redis_spans: Vec<&Value> = db
            .iter()
            .filter(|s| {
                attr(s, "db.system.name").as_deref() == Some("redis")
                    && attr(s, "db.namespace").as_deref() == Some(&ns)
                    && matches!(attr(s, "db.operation.name").as_deref(), Some("SET" | "GET"))
            })
            .collect();
        assert_eq!(
            redis_spans.len(),
            2,
            "SET and GET in Redis database {ns}:\n{all}"
        );
        for s in pg_spans.iter().chain(&redis_spans) {
            assert_eq!(
                (s["traceId"].as_str(), s["parentSpanId"].as_str()),
                (server["traceId"].as_str(), server["spanId"].as_str()),
                "{} {:?} made for {path} is a child of its server span:\n{all}",
                s["name"],
                attr(s, "db.namespace"),
            );
            assert!(
                start_ns(s) >= start_ns(server) && end_ns(s) <= end_ns(server),
                "{} for {path} lies within its server span:\n{all}",
                s["name"]
            );
        }
    }
    // Every database span (the SELECTs included) belongs to some request.
    for s in &db {
        assert!(
            spans.iter().any(|p| kind(p) == SERVER
                && p["spanId"] == s["parentSpanId"]
                && p["traceId"] == s["traceId"]),
            "{} has no server span parent:\n{all}",
            s["name"]
        );
    }
    let canaries: Vec<String> = (0..N).map(|i| format!("svc-canary-{i}")).collect();
    let mut secrets: Vec<&str> = canaries.iter().map(String::as_str).collect();
    secrets.extend([su_pw.as_str(), app_pw.as_str()]);
    assert_never_exported(&text, &secrets);
}

/// PostgreSQL traced, its client not: one SERVER span per operation with the client's address
/// in `network.peer.*`. Then the client traced as well: still one span per operation, the
/// client's.
#[test]
fn postgres_server_side_spans_are_never_doubled() {
    let cg = TestCgroup::new("db-pg-server");
    let su_pw = unique("pg-su-secret");
    let app_pw = unique("pg-app-secret");
    let pg = start_postgres(Some(&cg), &su_pw);
    // Before sonde starts: the setup's own queries are not part of the test.
    pg_setup(
        &pg,
        &su_pw,
        &app_pw,
        &["srv_only".into(), "both_sides".into()],
    );
    let sonde = Sonde::start(&cg);
    let outside = client_env(
        None,
        "pg-one",
        pg.port,
        &["--table", "srv_only"],
        &[("DB_PASSWORD", &app_pw)],
    );
    let inside = client_env(
        Some(&cg),
        "pg-one",
        pg.port,
        &["--table", "both_sides"],
        &[("DB_PASSWORD", &app_pw)],
    );
    let (spans, text) = sonde.finish(|s| db_spans(s).len() >= 4);
    let db = db_spans(&spans);
    let on = |table: &str| -> Vec<Value> {
        db.iter()
            .filter(|s| attr(s, "db.query.text").is_some_and(|t| t.contains(table)))
            .cloned()
            .collect()
    };
    let want_srv = [
        sql("SELECT srv_only", "SELECT name FROM srv_only WHERE id = $1").rows(1),
        sql(
            "UPDATE srv_only",
            "UPDATE srv_only SET name = ? WHERE id = ?",
        ),
    ]
    .map(|o| o.namespace("shop"));
    let want_both = [
        sql(
            "SELECT both_sides",
            "SELECT name FROM both_sides WHERE id = $1",
        )
        .rows(1),
        sql(
            "UPDATE both_sides",
            "UPDATE both_sides SET name = ? WHERE id = ?",
        ),
    ]
    .map(|o| o.namespace("shop"));
    assert_eq!(
        db.len(),
        4,
        "SELECT and UPDATE on srv_only (server side) and both_sides (client side):\n{}",
        describe(&db)
    );
    let client_port = outside["local_port"].as_u64().unwrap().to_string();
    assert_ops(
        &on("srv_only"),
        &want_srv,
        &[
            ("db.system.name", "postgresql".into()),
            ("server.port", pg.port.to_string()),
            ("network.peer.address", "127.0.0.1".into()),
            ("network.peer.port", client_port),
        ],
        SERVER,
        "only the server traced",
    );
    assert_eq!(inside["rows"], 1, "{inside}");
    assert_ops(
        &on("both_sides"),
        &want_both,
        &client_common("postgresql", pg.port),
        CLIENT,
        "client and server traced",
    );
    assert_never_exported(&text, &[&su_pw, &app_pw, "pg-canary-srv"]);
}
