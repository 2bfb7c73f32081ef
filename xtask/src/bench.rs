//! `cargo xtask bench`: sonde's overhead against no tracing and against SDK instrumentation,
//! every scenario side by side in one run.
//!
//! Servers run in a cgroup of their own: nginx (HTTP/1.1, and HTTP/2 with prior knowledge), a
//! Python threading app, the same app instrumented with the OpenTelemetry Python SDK, a Python
//! hop that calls nginx for every request (where context injection acts), the same app running
//! one PostgreSQL query per request (PostgreSQL itself outside the cgroup), a grpcio server, and
//! the zero-code pair: a Node.js `http` server and a Flask app, each calling nginx for every
//! request, run plain (untraced, or traced by sonde) and under the OpenTelemetry zero-code agent
//! of their language (`--require @opentelemetry/auto-instrumentations-node/register`,
//! `opentelemetry-instrument`). sonde and the zero-code agents export OTLP/gRPC to real
//! receivers that count spans (and, for the zero-code pair, spans joined to their parent). Loads
//! are fixed-rate and saturation: `hey -q` / `wrk` for HTTP/1, `h2load --rps` / `h2load` for
//! HTTP/2 (10 connections × 10 streams), and a grpcio client (8 threads, one channel).
//! Configurations alternate within each repetition (ABCABC...), so drift on a noisy machine
//! spreads over all of them; each figure is the median of the repetitions with min–max.
//!
//! Per scenario: throughput and latency ratios against the untraced baseline measured in the
//! same run, agent CPU per request (sonde's threads' on-CPU time from /proc schedstat ÷
//! requests), in-kernel cost per request (the BPF programs' run time from the kernel's
//! statistics ÷ requests), host CPU per request (the servers' cgroup, which includes the BPF
//! programs and any in-process agent, plus sonde's threads ÷ requests) and the CPU added over
//! the untraced run, span completeness (spans received ÷ requests completed), agent peak RSS.
//! No assertion on any of them: they are measurements.
//!
//! The smoke run (CI) is the exception: it sends a fixed number of requests per cell (`hey -n`,
//! `h2load -n`; the gRPC client finishes every call it starts), so that what it asserts holds
//! exactly on a noisy machine, whatever the timings: every cell ran and every request
//! completed, and in each cell traced by sonde the receiver got requests × spans per request
//! distinct span ids (no duplicate) while sonde counted no loss (ring buffer, stash, connection
//! table, export).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    setup::{otel_node_modules, otel_venv, peers_python},
    workspace_root,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One short repetition of a few scenarios: keeps the harness working (CI).
    Smoke,
    /// Three repetitions, 5 s runs.
    Quick,
    /// Three repetitions, 8 s runs, every rate (about 30 minutes).
    Full,
}

struct Plan {
    reps: usize,
    seconds: u64,
    /// Smoke: HTTP requests per cell, sent in full instead of for `seconds`; and the checks.
    exact: Option<u64>,
    /// Fixed rates in requests per second; `None` is saturation.
    loads: Vec<Option<u32>>,
    /// The same for gRPC, whose Python client tops out far lower.
    grpc_loads: Vec<Option<u32>>,
    /// The same for the zero-code pair: the Node.js app (about 12 k req/s untraced here, 3 k
    /// under its zero-code agent) and the Flask app (about 500 req/s on Werkzeug).
    node_loads: Vec<Option<u32>>,
    flask_loads: Vec<Option<u32>>,
    /// The same for the query-per-request app.
    db_loads: Vec<Option<u32>>,
    targets: Vec<TargetKind>,
    sdk: bool,
    idle_conns: usize,
}

impl Plan {
    fn of(mode: Mode) -> Self {
        match mode {
            Mode::Smoke => Self {
                reps: 1,
                seconds: 2,
                exact: Some(SMOKE_REQUESTS),
                loads: vec![Some(1000), None],
                grpc_loads: vec![None],
                node_loads: vec![None],
                flask_loads: vec![None],
                db_loads: vec![None],
                targets: TargetKind::ALL.to_vec(),
                sdk: true,
                idle_conns: 100,
            },
            Mode::Quick => Self {
                reps: 3,
                seconds: 5,
                exact: None,
                loads: vec![Some(1000), Some(5000), None],
                grpc_loads: vec![Some(500), None],
                node_loads: vec![Some(1000), None],
                flask_loads: vec![Some(200), None],
                db_loads: vec![Some(1000), None],
                targets: TargetKind::ALL.to_vec(),
                sdk: true,
                idle_conns: 1000,
            },
            Mode::Full => Self {
                reps: 3,
                seconds: 8,
                exact: None,
                loads: vec![Some(1000), Some(5000), Some(20000), None],
                grpc_loads: vec![Some(500), Some(1000), None],
                node_loads: vec![Some(1000), None],
                flask_loads: vec![Some(200), None],
                db_loads: vec![Some(1000), None],
                targets: TargetKind::ALL.to_vec(),
                sdk: true,
                idle_conns: 1000,
            },
        }
    }
}

/// Requests per HTTP cell in smoke mode: 2 s at 1000 req/s; a multiple of every client count
/// below (hey gives each of its workers n / c requests).
const SMOKE_REQUESTS: u64 = 2000;
/// hey's workers at saturation (smoke mode, where wrk cannot send a fixed number).
const SMOKE_SATURATION_WORKERS: u64 = 20;

/// The targets (`cargo xtask bench --only nginx,node`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum TargetKind {
    Nginx,
    Python,
    /// The Python app calling nginx for every request: three spans per request (two servers,
    /// one client), and the client requests are where `traceparent` is injected.
    Chain,
    /// The Python app running one PostgreSQL query per request: two spans per request (the
    /// server span and the query's client span; PostgreSQL is not in the traced cgroup).
    #[value(name = "db")]
    PythonDb,
    /// A Node.js `http` server calling nginx for every request; also run under the
    /// OpenTelemetry Node.js zero-code agent.
    #[value(name = "node")]
    NodeChain,
    /// A Flask app calling nginx for every request; also run under `opentelemetry-instrument`.
    #[value(name = "flask")]
    FlaskChain,
    #[value(name = "h2c")]
    NginxH2c,
    Grpc,
}

impl TargetKind {
    const ALL: [Self; 8] = [
        Self::Nginx,
        Self::Python,
        Self::Chain,
        Self::PythonDb,
        Self::NodeChain,
        Self::FlaskChain,
        Self::NginxH2c,
        Self::Grpc,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx http/1.1",
            Self::Python => "python http/1.1",
            Self::Chain => "python→nginx http/1.1",
            Self::PythonDb => "python→postgres",
            Self::NodeChain => "node→nginx http/1.1",
            Self::FlaskChain => "flask→nginx http/1.1",
            Self::NginxH2c => "nginx h2c (h2load)",
            Self::Grpc => "grpcio unary",
        }
    }

    /// Spans a traced request yields: sonde sees every server and client; a zero-code agent
    /// only its own process (its server and its client span, not nginx).
    fn spans_per_request(self, config: Config) -> u64 {
        match (self, config) {
            (Self::NodeChain | Self::FlaskChain, Config::ZeroCode) => 2,
            (Self::Chain | Self::NodeChain | Self::FlaskChain, _) => 3,
            (Self::PythonDb, _) => 2,
            _ => 1,
        }
    }

    /// The loads of the plan for this target.
    fn loads(self, plan: &Plan) -> &[Option<u32>] {
        match self {
            Self::Grpc => &plan.grpc_loads,
            Self::NodeChain => &plan.node_loads,
            Self::FlaskChain => &plan.flask_loads,
            Self::PythonDb => &plan.db_loads,
            _ => &plan.loads,
        }
    }

    fn configs(self, sdk: bool) -> Vec<Config> {
        match self {
            Self::Python if sdk => vec![Config::Untraced, Config::Sonde, Config::PythonSdk],
            Self::Chain => vec![Config::Untraced, Config::SondeNoInject, Config::Sonde],
            Self::NodeChain | Self::FlaskChain => {
                vec![Config::Untraced, Config::Sonde, Config::ZeroCode]
            }
            _ => vec![Config::Untraced, Config::Sonde],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Untraced,
    /// sonde with `--no-inject`: reading and linking only.
    SondeNoInject,
    /// sonde as it ships: context injection on.
    Sonde,
    PythonSdk,
    /// The OpenTelemetry zero-code agent of the server's language.
    ZeroCode,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::SondeNoInject => "sonde --no-inject",
            Self::Sonde => "sonde",
            Self::PythonSdk => "otel-python-sdk",
            Self::ZeroCode => "otel zero-code agent",
        }
    }

    fn traced_by_sonde(self) -> bool {
        matches!(self, Self::Sonde | Self::SondeNoInject)
    }
}

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Sample {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    agent_cpu_us_per_req: Option<f64>,
    kernel_ns_per_req: Option<f64>,
    completeness: Option<f64>,
    agent_rss_mib: Option<f64>,
    /// The servers' cgroup (BPF programs and in-process agents included) plus sonde's threads.
    host_cpu_us_per_req: Option<f64>,
    /// Spans received per request, and spans joined to a received parent per request (the
    /// zero-code pair, whose receiver tracks parents).
    spans_per_req: Option<f64>,
    joined_per_req: Option<f64>,
    /// sonde's CPU per request by stage ([`STAGES`]), µs.
    stages: Option<Vec<f64>>,
    /// Each BPF program's runs and run time in this sample (name, runs, ns).
    programs: Option<Vec<(String, u64, u64)>>,
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn wait_port(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr}")
}

/// A cgroup v2 for the servers: sonde traces it and nothing else.
pub(crate) struct BenchCgroup {
    pub(crate) path: PathBuf,
}

impl BenchCgroup {
    pub(crate) fn new() -> Result<Self> {
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let root = mounts
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .context("no cgroup v2 mount")?;
        let path = root.join(format!("sonde-bench-{}", std::process::id()));
        fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let procs = std::ffi::CString::new(
            self.path
                .join("cgroup.procs")
                .to_string_lossy()
                .into_owned(),
        )
        .expect("path without NUL");
        // SAFETY: only async-signal-safe calls between fork and exec, on a string made before.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) struct Proc(pub(crate) Child);

/// A server and its port.
type ServerProc = (Proc, u16);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn read_ready(child: &mut Child) -> Result<()> {
    let out = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if !line.starts_with("ready") {
        bail!("peer did not start: {line:?}");
    }
    Ok(())
}

/// Starts a peer that prints `ready` on stdout once it listens on `port`, and waits for both.
fn spawn_peer(cmd: &mut Command, port: u16, what: impl FnOnce() -> String) -> Result<(Proc, u16)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(what)?;
    read_ready(&mut child)?;
    wait_port(port)?;
    Ok((Proc(child), port))
}

/// nginx with an HTTP/1.1 and an HTTP/2 (prior knowledge) server: (process, h1 port, h2 port).
pub(crate) fn start_nginx(cg: &BenchCgroup, dir: &Path) -> Result<(Proc, u16, u16)> {
    let port = free_port()?;
    let h2_port = free_port()?;
    let servers = format!(
        "server {{\n    listen 127.0.0.1:{port} backlog=4096;\n\
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n\
         server {{\n    listen 127.0.0.1:{h2_port} http2 backlog=4096;\n\
         http2_max_concurrent_streams 128;\n    keepalive_requests 1000000;\n\
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n"
    );
    let proc = run_nginx(cg, dir, &servers, &[port, h2_port])?;
    Ok((proc, port, h2_port))
}

/// nginx in the cgroup with `servers` (server blocks answering "ok") in its `http` block, its
/// files in `dir`; returns once every one of `ports` accepts connections.
pub(crate) fn run_nginx(
    cg: &BenchCgroup,
    dir: &Path,
    servers: &str,
    ports: &[u16],
) -> Result<Proc> {
    fs::create_dir_all(dir)?;
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {d}/b;\n  proxy_temp_path {d}/p;\n  fastcgi_temp_path {d}/f;\n\
         uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n  {servers}}}\n",
        d = dir.display()
    );
    fs::write(dir.join("nginx.conf"), conf)?;
    let child = cg
        .command("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    let proc = Proc(child);
    for &port in ports {
        wait_port(port)?;
    }
    Ok(proc)
}

/// What the Python app does for each request besides answering.
#[derive(Clone, Copy)]
enum Calls {
    Nothing,
    /// A GET to this port (nginx).
    Upstream(u16),
    /// A query on PostgreSQL at this port.
    Postgres(u16),
}

fn start_app(cg: &BenchCgroup, sdk_endpoint: Option<&str>, calls: Calls) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = cg.command(peers_python());
    cmd.arg(workspace_root().join("bench/peers/app.py"))
        .arg(port.to_string());
    match calls {
        Calls::Nothing => {}
        Calls::Upstream(port) => {
            cmd.args(["--upstream", &port.to_string()]);
        }
        Calls::Postgres(port) => {
            cmd.args(["--postgres", &port.to_string()]);
        }
    }
    if let Some(e) = sdk_endpoint {
        // The same batching delay as sonde's exporter in this benchmark.
        cmd.args(["--otel-sdk", e])
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
    }
    spawn_peer(&mut cmd, port, || "start the Python app".into())
}

/// Environment of an OpenTelemetry zero-code agent: traces only, OTLP/gRPC to the receiver,
/// the same batching delay as sonde's exporter in this benchmark.
fn otel_env(cmd: &mut Command, service: &str, endpoint: &str) {
    cmd.env("OTEL_SERVICE_NAME", service)
        .env("OTEL_TRACES_EXPORTER", "otlp")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        // Node.js: no cloud detectors, which would query metadata addresses off this host.
        .env("OTEL_NODE_RESOURCE_DETECTORS", "env,host,os,process");
}

/// The Node.js app calling nginx on `upstream`; with `otel`, under the OpenTelemetry
/// zero-code agent exporting to that endpoint.
fn start_node_app(cg: &BenchCgroup, upstream: u16, otel: Option<&str>) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = cg.command("node");
    if let Some(endpoint) = otel {
        let modules = otel_node_modules();
        if !modules
            .join("@opentelemetry/auto-instrumentations-node")
            .is_dir()
        {
            bail!(
                "{} lacks the OpenTelemetry Node.js agent: run `cargo xtask setup`",
                modules.display()
            );
        }
        cmd.env("NODE_PATH", &modules).args([
            "--require",
            "@opentelemetry/auto-instrumentations-node/register",
        ]);
        otel_env(&mut cmd, "bench-node-auto", endpoint);
    }
    cmd.arg(workspace_root().join("bench/peers/node_app.js"))
        .arg(port.to_string())
        .arg(upstream.to_string());
    spawn_peer(&mut cmd, port, || "start the Node.js app (node)".into())
}

/// The Flask app calling nginx on `upstream`; with `otel`, under `opentelemetry-instrument`
/// exporting to that endpoint.
fn start_flask_app(cg: &BenchCgroup, upstream: u16, otel: Option<&str>) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let venv = otel_venv();
    let mut cmd = match otel {
        Some(endpoint) => {
            let mut cmd = cg.command(venv.join("bin/opentelemetry-instrument"));
            otel_env(&mut cmd, "bench-python-auto", endpoint);
            cmd.arg(venv.join("bin/python"));
            cmd
        }
        None => cg.command(venv.join("bin/python")),
    };
    cmd.arg(workspace_root().join("bench/peers/flask_app.py"))
        .arg(port.to_string())
        .arg(upstream.to_string());
    spawn_peer(&mut cmd, port, || {
        format!(
            "start the Flask app ({}: run `cargo xtask setup`)",
            venv.display()
        )
    })
}

/// Debian's PostgreSQL, outside the traced cgroup (the database, not the service under test),
/// on 127.0.0.1 with trust authentication, its files in a fresh directory under /tmp (the
/// `postgres` user must reach them); stopped with a fast shutdown when dropped.
struct Postgres {
    proc: Proc,
    dir: PathBuf,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions. SIGINT: a fast shutdown, which
        // stops the backends too (SIGKILL would leave them behind).
        unsafe { libc::kill(self.proc.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.0.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn start_postgres() -> Result<Postgres> {
    let bin = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .context("no /usr/lib/postgresql/*/bin: install Debian's postgresql (cargo xtask setup)")?;
    let id = |flag: &str| -> Result<String> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("no `postgres` user: install Debian's postgresql (cargo xtask setup)");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    let as_postgres = |program: PathBuf| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .arg(program);
        cmd
    };
    let dir = PathBuf::from(format!("/tmp/sonde-bench-pg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    crate::run(Command::new("chown").arg(format!("{uid}:{gid}")).arg(&dir))?;
    let data = dir.join("data");
    let out = as_postgres(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"])
        .output()
        .context("run initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = free_port()?;
    let log = fs::File::create(dir.join("server.log"))?;
    let child = as_postgres(bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start postgres")?;
    let pg = Postgres {
        proc: Proc(child),
        dir,
        port,
    };
    wait_port(port).with_context(|| {
        format!(
            "PostgreSQL did not start: {}",
            fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
        )
    })?;
    Ok(pg)
}

/// CPU time of every task of the cgroup so far, in microseconds (`cpu.stat`; BPF programs run in
/// the context of the task whose system call they trace, so they count here).
fn cgroup_cpu_us(cg: &BenchCgroup) -> Option<u64> {
    fs::read_to_string(cg.path.join("cpu.stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn start_grpc(cg: &BenchCgroup) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = cg.command(peers_python());
    cmd.arg(workspace_root().join("tests/peers/grpc/server.py"))
        .arg(port.to_string());
    spawn_peer(&mut cmd, port, || "start the grpcio server".into())
}

/// The counting receiver; with `ids`, it also counts distinct span ids.
fn start_sink(dir: &Path, name: &str, ids: bool) -> Result<(Proc, u16, PathBuf)> {
    let port = free_port()?;
    let counts = dir.join(format!("{name}-counts.json"));
    let mut cmd = Command::new(peers_python());
    cmd.arg(workspace_root().join("bench/peers/count_sink.py"))
        .arg(port.to_string())
        .arg(&counts);
    if ids {
        cmd.arg("--ids");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the OTLP receiver")?;
    read_ready(&mut child)?;
    Ok((Proc(child), port, counts))
}

/// What the receiver has counted so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SinkCount {
    pub(crate) spans: u64,
    /// Distinct span ids (only when the receiver was started with `ids`).
    unique: u64,
    /// Spans joined to a received parent (only with `ids`).
    joined: Option<u64>,
}

pub(crate) fn sink_count(path: &Path) -> SinkCount {
    let v: Value = fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    SinkCount {
        spans: v["spans"].as_u64().unwrap_or(0),
        unique: v["unique_span_ids"].as_u64().unwrap_or(0),
        joined: v["joined"].as_u64(),
    }
}

/// Smoke mode: the counters of sonde's summary that say something was lost, with their values
/// (only those above zero), and whether every created span was exported.
pub(crate) fn losses(summary: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(summary)
        .with_context(|| format!("sonde wrote no summary at {}", summary.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("sonde's summary {} is not JSON", summary.display()))?;
    let mut lost = Vec::new();
    for k in ["ringbuf_full_events", "args_stash_full", "conn_table_full"] {
        let n = v["kernel"][k].as_u64().unwrap_or(0);
        if n > 0 {
            lost.push(format!("kernel.{k} {n}"));
        }
    }
    for line in v["capture"].as_array().into_iter().flatten() {
        let Some((k, n)) = line.as_str().and_then(|l| l.rsplit_once(' ')) else {
            continue;
        };
        if matches!(k, "stream.gaps_lost" | "stream.gap_lost_bytes") && n != "0" {
            lost.push(format!("{k} {n}"));
        }
    }
    let export = &v["export"];
    if export.is_null() {
        lost.push("no export statistics in the summary".into());
    }
    for (reason, n) in export["dropped"].as_object().into_iter().flatten() {
        if n.as_u64().unwrap_or(0) > 0 {
            lost.push(format!("export.dropped.{reason} {n}"));
        }
    }
    let (created, exported) = (export["created"].as_u64(), export["exported"].as_u64());
    if created != exported {
        lost.push(format!(
            "export created {created:?} but exported {exported:?}"
        ));
    }
    Ok(lost)
}

/// sonde tracing the bench cgroup, exporting to the receiver.
struct Agent {
    proc: Proc,
    summary: PathBuf,
}

fn start_sonde(
    sonde: &Path,
    cg: &BenchCgroup,
    sink_port: u16,
    dir: &Path,
    inject: bool,
) -> Result<Agent> {
    let summary = dir.join(format!("sonde-summary-{}.json", free_port()?));
    let mut cmd = Command::new(sonde);
    cmd.arg("run")
        .arg("--cgroup")
        .arg(&cg.path)
        .args(["--output", "otlp", "--summary-json"])
        .arg(&summary);
    if !inject {
        cmd.arg("--no-inject");
    }
    let mut child = cmd
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{sink_port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("SONDE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start sonde")?;
    // sonde says "tracing ..." on stderr once its programs are attached.
    let err = child.stderr.take().context("stderr")?;
    let mut reader = BufReader::new(err);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("sonde exited before it was ready");
        }
        if line.contains("tracing") {
            break;
        }
    }
    thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    Ok(Agent {
        proc: Proc(child),
        summary,
    })
}

/// On-CPU nanoseconds (schedstat: ns precision) of `pid`'s capture thread (`sonde-capture`) and of its other threads
/// (export, metrics, the main thread).
fn capture_cpu_ns(pid: u32) -> [u64; 2] {
    let mut split = [0; 2];
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return split;
    };
    for t in tasks.flatten() {
        let Some(ns) = fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let capture =
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "sonde-capture");
        split[usize::from(!capture)] += ns;
    }
    split
}

/// The stages of sonde's CPU per request, in the order of the pipeline: those the agent times
/// (`sonde_pipeline_stage_seconds_total`), then what is left of each thread's CPU time.
const STAGES: [&str; 10] = [
    "decode",
    "conn",
    "parse",
    "span",
    "policy",
    "tick",
    "capture, rest",
    "encode",
    "export, rest",
    "total",
];

/// µs per request per stage (the order of [`STAGES`]) from sonde's summary and the CPU time of
/// its capture thread and of its other threads in the cell.
fn stage_breakdown(summary: &Path, threads_ns: [u64; 2], requests: u64) -> Option<Vec<f64>> {
    let v: Value = serde_json::from_str(&fs::read_to_string(summary).ok()?).ok()?;
    let ns = &v["stages"]["ns"];
    let get = |k: &str| ns[k].as_u64().unwrap_or(0) as f64;
    let capture: Vec<f64> = STAGES[..6].iter().map(|k| get(k)).collect();
    let capture_rest = threads_ns[0] as f64 - capture.iter().sum::<f64>();
    let encode = get("encode");
    let export_rest = threads_ns[1] as f64 - encode;
    let total = (threads_ns[0] + threads_ns[1]) as f64;
    let per_req = |ns: f64| ns / 1000.0 / requests.max(1) as f64;
    let mut out: Vec<f64> = capture.into_iter().map(per_req).collect();
    out.extend([capture_rest, encode, export_rest, total].map(per_req));
    Some(out)
}

fn rss_hwm_mib(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    for (suffix, mul) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)] {
        if let Some(v) = s.strip_suffix(suffix) {
            return v.parse::<f64>().ok().map(|v| v * mul);
        }
    }
    None
}

/// Saturation with wrk: (requests, rps, p50 ms, p99 ms).
fn run_wrk(port: u16, seconds: u64) -> Result<(u64, f64, f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut requests = 0;
    let mut rps = 0.0;
    let (mut p50, mut p99) = (0.0, 0.0);
    for line in text.lines() {
        let l = line.trim();
        if l.contains("requests in") {
            requests = l
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            p50 = parse_duration_ms(v).unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = parse_duration_ms(v).unwrap_or(0.0);
        }
    }
    if requests == 0 {
        bail!("wrk printed no result:\n{text}");
    }
    Ok((requests, rps, p50, p99))
}

/// hey at a fixed rate for `seconds`, or (smoke) exactly `count` requests at a fixed rate or
/// at saturation: (requests answered 200, rps, p50 ms, p99 ms).
fn run_hey(
    port: u16,
    seconds: u64,
    rate: Option<u32>,
    count: Option<u64>,
) -> Result<(u64, f64, f64, f64)> {
    let workers = rate.map_or(SMOKE_SATURATION_WORKERS, |r| {
        u64::from((r / 100).clamp(1, 200))
    });
    let mut cmd = Command::new("hey");
    cmd.args(["-c", &workers.to_string()]);
    if let Some(r) = rate {
        cmd.args(["-q", &(u64::from(r) / workers).to_string()]);
    }
    match count {
        Some(n) => cmd.args(["-n", &n.to_string()]),
        None => cmd.args(["-z", &format!("{seconds}s")]),
    };
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run hey")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut requests = 0;
    let mut rps = 0.0;
    let (mut p50, mut p99) = (0.0, 0.0);
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("[200]") {
            requests = v
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("50% in ") {
            p50 = v.trim_end_matches(" secs").parse::<f64>().unwrap_or(0.0) * 1000.0;
        } else if let Some(v) = l.strip_prefix("99% in ") {
            p99 = v.trim_end_matches(" secs").parse::<f64>().unwrap_or(0.0) * 1000.0;
        }
    }
    if requests == 0 {
        bail!("hey printed no result:\n{text}");
    }
    Ok((requests, rps, p50, p99))
}

/// HTTP/2 with h2load, 10 connections × 10 concurrent streams, at saturation or at a fixed
/// total rate, for `seconds` or (smoke) for exactly `count` requests: (requests, rps, p50 ms,
/// p99 ms). Latencies come from its per-request log.
fn run_h2load(
    port: u16,
    seconds: u64,
    rate: Option<u32>,
    count: Option<u64>,
    dir: &Path,
) -> Result<(u64, f64, f64, f64)> {
    let log = dir.join("h2load.log");
    let _ = fs::remove_file(&log);
    let mut cmd = Command::new("h2load");
    cmd.args(["-c", "10", "-m", "10"]);
    match count {
        Some(n) => cmd.args(["-n", &n.to_string()]),
        None => cmd.args(["-D", &seconds.to_string()]),
    };
    cmd.arg(format!("--log-file={}", log.display()));
    if let Some(r) = rate {
        cmd.arg(format!("--rps={}", (r / 10).max(1)));
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut succeeded = 0;
    let mut rps = 0.0;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("finished in") {
            rps = v
                .split(',')
                .nth(1)
                .and_then(|x| x.trim().strip_suffix(" req/s"))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("requests:") {
            succeeded = v
                .split(',')
                .find_map(|x| x.trim().strip_suffix(" succeeded"))
                .and_then(|x| x.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    // Columns: start (µs since the epoch), status, µs until the response ended.
    let mut lat: Vec<f64> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let status = f.nth(1)?;
            (status == "200").then_some(())?;
            f.next()?.parse::<f64>().ok().map(|us| us / 1000.0)
        })
        .collect();
    if succeeded == 0 || lat.is_empty() {
        bail!("h2load printed no result:\n{text}");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok((succeeded, rps, pct(0.5), pct(0.99)))
}

/// Unary gRPC calls from a grpcio client: (requests, rps, p50 ms, p99 ms). Every call started
/// is waited for, so the count is exact; with `strict`, a failed call is an error.
fn run_grpc(
    port: u16,
    seconds: u64,
    rate: Option<u32>,
    strict: bool,
) -> Result<(u64, f64, f64, f64)> {
    let mut cmd = Command::new(peers_python());
    cmd.arg(workspace_root().join("bench/peers/grpc_load.py"))
        .arg(port.to_string())
        .arg(seconds.to_string());
    if let Some(r) = rate {
        cmd.arg(r.to_string());
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("run the gRPC load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("the gRPC load printed no result:\n{text}"))?;
    let requests = v["requests"].as_u64().unwrap_or(0);
    if requests == 0 {
        bail!("the gRPC load completed no call: {v}");
    }
    if strict && v["errors"].as_u64() != Some(0) {
        bail!("the gRPC load had failed calls: {v}");
    }
    Ok((
        requests,
        v["rps"].as_f64().unwrap_or(0.0),
        v["p50_ms"].as_f64().unwrap_or(0.0),
        v["p99_ms"].as_f64().unwrap_or(0.0),
    ))
}

/// Each BPF program's runs and run time from the agent's summary (the kernel's run-time
/// statistics, enabled by the agent).
fn kernel_programs(summary: &Path) -> Option<Vec<(String, u64, u64)>> {
    let v: Value = serde_json::from_str(&fs::read_to_string(summary).ok()?).ok()?;
    Some(
        v["programs"]
            .as_array()?
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    p["run_count"].as_u64()?,
                    p["run_time_ns"].as_u64()?,
                ))
            })
            .collect(),
    )
}

fn stop(agent: &mut Agent) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(agent.proc.0.id() as i32, libc::SIGTERM) };
    let _ = agent.proc.0.wait();
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn stat(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = samples.iter().filter_map(&f).collect();
    if v.is_empty() {
        return None;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((median(&mut v), min, max))
}

fn load_name(load: Option<u32>) -> String {
    load.map_or_else(|| "saturation".into(), |r| format!("{r} req/s"))
}

/// Holds `n` idle keep-alive connections to `port` open; returns them.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect()
}

/// Runs the benchmark; `only`, when not empty, limits it to those targets (the memory cell with
/// 1,000 idle connections runs with nginx).
pub fn bench(mode: Mode, sonde: &Path, only: &[TargetKind]) -> Result<()> {
    let mut plan = Plan::of(mode);
    if !only.is_empty() {
        plan.targets.retain(|t| only.contains(t));
        if !only.contains(&TargetKind::Nginx) {
            plan.idle_conns = 0;
        }
    }
    let out_dir = workspace_root().join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    // The kernel counts BPF run time only while this is on.
    let stats_before = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enable BPF run-time stats")?;

    let cg = BenchCgroup::new()?;
    let (_sink, sink_port, counts) = start_sink(&work, "sink", plan.exact.is_some())?;
    let sink_endpoint = format!("http://127.0.0.1:{sink_port}");
    // The zero-code pair's receiver keeps every id, to count the spans joined to their parent.
    let (_zsink, zsink_port, zcounts) = start_sink(&work, "zerocode-sink", true)?;
    let zsink_endpoint = format!("http://127.0.0.1:{zsink_port}");
    let (_nginx, nginx_port, h2_port) = start_nginx(&cg, &work.join("nginx"))?;
    let (_app, app_port) = start_app(&cg, None, Calls::Nothing)?;
    let (_hop, hop_port) = start_app(&cg, None, Calls::Upstream(nginx_port))?;
    let (_postgres, _db_app, db_port) = if plan.targets.contains(&TargetKind::PythonDb) {
        let pg = start_postgres()?;
        let (app, port) = start_app(&cg, None, Calls::Postgres(pg.port))?;
        (Some(pg), Some(app), port)
    } else {
        (None, None, 0)
    };
    let (_grpc, grpc_port) = start_grpc(&cg)?;
    let sdk = if plan.sdk {
        Some(start_app(&cg, Some(&sink_endpoint), Calls::Nothing)?)
    } else {
        None
    };
    let zero = |t| plan.targets.contains(&t);
    let node = if zero(TargetKind::NodeChain) {
        Some((
            start_node_app(&cg, nginx_port, None)?,
            start_node_app(&cg, nginx_port, Some(&zsink_endpoint))?,
        ))
    } else {
        None
    };
    let flask = if zero(TargetKind::FlaskChain) {
        Some((
            start_flask_app(&cg, nginx_port, None)?,
            start_flask_app(&cg, nginx_port, Some(&zsink_endpoint))?,
        ))
    } else {
        None
    };
    let pair_port = |pair: &Option<(ServerProc, ServerProc)>, config| {
        pair.as_ref()
            .map(|(plain, auto)| {
                if config == Config::ZeroCode {
                    auto.1
                } else {
                    plain.1
                }
            })
            .unwrap_or_default()
    };

    let mut results: BTreeMap<(TargetKind, String, Config), Vec<Sample>> = BTreeMap::new();
    // Smoke mode: what did not hold, one line per cell and check.
    let mut failures: Vec<String> = Vec::new();
    let mut span_ids_checked = 0;
    let started = Instant::now();
    for rep in 0..plan.reps {
        for &target in &plan.targets {
            let mut configs = target.configs(sdk.is_some());
            let n = configs.len();
            configs.rotate_left(rep % n);
            for &load in target.loads(&plan) {
                for &config in &configs {
                    let port = match (target, config) {
                        (TargetKind::Nginx, _) => nginx_port,
                        (TargetKind::Python, Config::PythonSdk) => {
                            sdk.as_ref().map(|s| s.1).unwrap_or(app_port)
                        }
                        (TargetKind::Python, _) => app_port,
                        (TargetKind::Chain, _) => hop_port,
                        (TargetKind::PythonDb, _) => db_port,
                        (TargetKind::NodeChain, c) => pair_port(&node, c),
                        (TargetKind::FlaskChain, c) => pair_port(&flask, c),
                        (TargetKind::NginxH2c, _) => h2_port,
                        (TargetKind::Grpc, _) => grpc_port,
                    };
                    let zerocode_pair =
                        matches!(target, TargetKind::NodeChain | TargetKind::FlaskChain);
                    let (cell_sink, counts) = if zerocode_pair {
                        (zsink_port, &zcounts)
                    } else {
                        (sink_port, &counts)
                    };
                    let mut agent = if config.traced_by_sonde() {
                        Some(start_sonde(
                            sonde,
                            &cg,
                            cell_sink,
                            &work,
                            config == Config::Sonde,
                        )?)
                    } else {
                        None
                    };
                    let sink_before = sink_count(counts);
                    let cpu_before = agent.as_ref().map(|a| capture_cpu_ns(a.proc.0.id()));
                    let cg_before = cgroup_cpu_us(&cg);
                    let run = match (target, load) {
                        (TargetKind::NginxH2c, _) => {
                            run_h2load(port, plan.seconds, load, plan.exact, &work)
                        }
                        (TargetKind::Grpc, _) => {
                            run_grpc(port, plan.seconds, load, plan.exact.is_some())
                        }
                        (_, Some(_)) => run_hey(port, plan.seconds, load, plan.exact),
                        // wrk cannot send a fixed number of requests.
                        (_, None) if plan.exact.is_some() => {
                            run_hey(port, plan.seconds, None, plan.exact)
                        }
                        (_, None) => run_wrk(port, plan.seconds),
                    };
                    let (requests, rps, p50, p99) = run?;
                    let cg_cpu_us = cgroup_cpu_us(&cg)
                        .zip(cg_before)
                        .map(|(after, before)| after.saturating_sub(before));
                    let mut sample = Sample {
                        requests,
                        rps,
                        p50_ms: p50,
                        p99_ms: p99,
                        ..Sample::default()
                    };
                    let cell = format!("{} {} {}", target.name(), load_name(load), config.name());
                    let want = requests * target.spans_per_request(config);
                    if let Some(n) = plan.exact
                        && target != TargetKind::Grpc
                        && requests != n
                    {
                        failures.push(format!(
                            "{cell}: {n} requests sent, {requests} answered with success"
                        ));
                    }
                    if plan.exact.is_some() && config.traced_by_sonde() {
                        // Wait for every span rather than a fixed time: a slow machine only
                        // takes longer. What arrives after is caught below, once sonde stopped.
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while sink_count(counts).unique.saturating_sub(sink_before.unique) < want
                            && Instant::now() < deadline
                        {
                            thread::sleep(Duration::from_millis(100));
                        }
                    } else if config != Config::Untraced {
                        // Let the exporters flush before counting.
                        thread::sleep(Duration::from_millis(1500));
                    }
                    let mut lost = Vec::new();
                    let mut agent_cpu_us = 0.0;
                    if let Some(a) = agent.as_mut() {
                        let pid = a.proc.0.id();
                        let before = cpu_before.unwrap_or_default();
                        let after = capture_cpu_ns(pid);
                        let threads = [0, 1].map(|i| after[i].saturating_sub(before[i]));
                        let cpu = threads[0] + threads[1];
                        agent_cpu_us = cpu as f64 / 1000.0;
                        sample.agent_cpu_us_per_req = Some(cpu as f64 / 1000.0 / requests as f64);
                        sample.agent_rss_mib = rss_hwm_mib(pid);
                        stop(a);
                        sample.stages = stage_breakdown(&a.summary, threads, requests);
                        sample.programs = kernel_programs(&a.summary);
                        sample.kernel_ns_per_req = sample.programs.as_ref().map(|p| {
                            p.iter().map(|(_, _, ns)| *ns).sum::<u64>() as f64 / requests as f64
                        });
                        if plan.exact.is_some() {
                            lost = losses(&a.summary)?;
                        }
                    }
                    sample.host_cpu_us_per_req =
                        cg_cpu_us.map(|c| (c as f64 + agent_cpu_us) / requests as f64);
                    if config != Config::Untraced {
                        let now = sink_count(counts);
                        let got = now.spans.saturating_sub(sink_before.spans);
                        sample.completeness = Some(got as f64 / want as f64);
                        sample.spans_per_req = Some(got as f64 / requests as f64);
                        sample.joined_per_req =
                            now.joined.zip(sink_before.joined).map(|(after, before)| {
                                after.saturating_sub(before) as f64 / requests as f64
                            });
                        if plan.exact.is_some() && config.traced_by_sonde() {
                            let unique = now.unique.saturating_sub(sink_before.unique);
                            if unique != want || got != unique {
                                failures.push(format!(
                                    "{cell}: {requests} requests × {} spans each = {want} span \
                                     ids expected; the receiver got {got} spans with {unique} \
                                     distinct ids",
                                    target.spans_per_request(config)
                                ));
                            }
                            if !lost.is_empty() {
                                failures.push(format!(
                                    "{cell}: sonde counted losses: {}",
                                    lost.join(", ")
                                ));
                            }
                            span_ids_checked += unique;
                        }
                    }
                    eprintln!(
                        "bench: rep {} {} {} {}: {} req, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms{}",
                        rep + 1,
                        target.name(),
                        load_name(load),
                        config.name(),
                        requests,
                        rps,
                        p50,
                        p99,
                        sample
                            .agent_cpu_us_per_req
                            .map(|c| format!(", agent {c:.2} µs/req"))
                            .unwrap_or_default()
                    );
                    results
                        .entry((target, load_name(load), config))
                        .or_default()
                        .push(sample);
                }
            }
        }
    }

    if plan.exact.is_some() {
        // Every cell ran once per repetition (a cell that stopped early would be missing).
        let expected: usize = plan
            .targets
            .iter()
            .map(|&t| t.configs(sdk.is_some()).len() * t.loads(&plan).len())
            .sum();
        let complete = results.values().filter(|v| v.len() == plan.reps).count();
        if results.len() != expected || complete != expected {
            failures.push(format!(
                "{expected} cells planned, {} ran, {complete} with all {} repetitions",
                results.len(),
                plan.reps
            ));
        }
    }

    // Agent memory with many open connections.
    let mut idle_rss = None;
    if plan.idle_conns > 0 {
        let mut agent = start_sonde(sonde, &cg, sink_port, &work, true)?;
        let conns = idle_connections(nginx_port, plan.idle_conns);
        // One request on each so that sonde tracks them.
        for mut c in conns.iter() {
            use std::io::Write as _;
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n");
        }
        thread::sleep(Duration::from_secs(2));
        idle_rss = rss_hwm_mib(agent.proc.0.id()).map(|r| (conns.len(), r));
        stop(&mut agent);
    }
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());

    let report = render(&results, idle_rss, mode, started.elapsed());
    let json = report_json(&results, idle_rss, mode);
    fs::write(out_dir.join("report.md"), &report)?;
    fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("{report}");
    eprintln!(
        "bench: wrote {} and report.json",
        out_dir.join("report.md").display()
    );
    if !failures.is_empty() {
        bail!(
            "benchmark smoke checks failed ({} of them):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    if plan.exact.is_some() {
        eprintln!(
            "bench: smoke checks passed: {} cells ran, every request answered, {span_ids_checked} \
             span ids from sonde each received once, no loss counted",
            results.len()
        );
    }
    Ok(())
}

fn fmt_stat(s: Option<(f64, f64, f64)>, digits: usize) -> String {
    match s {
        Some((m, lo, hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
        None => "–".into(),
    }
}

pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn render(
    results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>,
    idle_rss: Option<(usize, f64)>,
    mode: Mode,
    took: Duration,
) -> String {
    let mut s = format!(
        "# sonde overhead benchmark ({mode:?} mode)\n\nMachine: {}. Took {:.0?}. Command: `cargo xtask bench --mode {}`.\n\
         Medians of repetitions, min–max in parentheses. Ratios are against the untraced run of the same target and load.\n\n",
        machine(),
        took,
        format!("{mode:?}").to_lowercase()
    );
    s.push_str("| target | load | config | req/s | throughput ratio | p50 ms | p50 ratio | p99 ms | p99 ratio | agent CPU µs/req | kernel ns/req | host CPU µs/req | added µs/req | completeness | agent RSS MiB |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for ((target, load, config), samples) in results {
        let base = results.get(&(*target, load.clone(), Config::Untraced));
        let added = added_cpu(results, *target, load, *config)
            .map_or_else(|| "–".into(), |a| format!("{a:.2}"));
        let ratio = |f: fn(&Sample) -> f64| -> String {
            let Some(base) = base else {
                return "–".into();
            };
            let mut b: Vec<f64> = base.iter().map(f).collect();
            let bm = median(&mut b);
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            if bm == 0.0 {
                return "–".into();
            }
            format!("{:.3}", median(&mut v) / bm)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            target.name(),
            load,
            config.name(),
            fmt_stat(stat(samples, |x| Some(x.rps)), 0),
            ratio(|x| x.rps),
            fmt_stat(stat(samples, |x| Some(x.p50_ms)), 2),
            ratio(|x| x.p50_ms),
            fmt_stat(stat(samples, |x| Some(x.p99_ms)), 2),
            ratio(|x| x.p99_ms),
            fmt_stat(stat(samples, |x| x.agent_cpu_us_per_req), 2),
            fmt_stat(stat(samples, |x| x.kernel_ns_per_req), 0),
            fmt_stat(stat(samples, |x| x.host_cpu_us_per_req), 2),
            added,
            fmt_stat(stat(samples, |x| x.completeness.map(|c| c * 100.0)), 1).replace(" (", "% ("),
            fmt_stat(stat(samples, |x| x.agent_rss_mib), 1),
        ));
    }
    s.push_str(&stage_table(results));
    s.push_str(&kernel_table(results));
    s.push_str(&zero_code_table(results));
    if let Some((n, rss)) = idle_rss {
        s.push_str(&format!(
            "\nAgent peak RSS with {n} open connections: {rss:.1} MiB.\n"
        ));
    }
    s
}

/// Host CPU per request added over the untraced run of the same target and load (medians).
fn added_cpu(
    results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>,
    target: TargetKind,
    load: &str,
    config: Config,
) -> Option<f64> {
    if config == Config::Untraced {
        return None;
    }
    let med = |c| {
        let mut v: Vec<f64> = results
            .get(&(target, load.to_owned(), c))?
            .iter()
            .filter_map(|x| x.host_cpu_us_per_req)
            .collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    Some(med(config)? - med(Config::Untraced)?)
}

/// Where sonde's CPU per request goes, per cell traced by sonde (medians).
fn stage_table(results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>) -> String {
    let rows: Vec<_> = results
        .iter()
        .filter(|(_, v)| v.iter().any(|x| x.stages.is_some()))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Where sonde's CPU goes, µs per request\n\nCapture thread: decode (ring buffer \
         drain and decode), conn (tracking, reassembly), parse (protocol detection and \
         parsing), span (building and linking), policy (sampling, privacy, span metrics, the \
         export queue), tick (timers), and the rest of its CPU time (wake-ups, the runtime, \
         clock reads); export threads: encode (OTLP requests) and the rest (batching, gRPC \
         transport, metrics). conn, parse, span and policy are timed on one batch in 32 with a \
         wall clock and scaled to all events (`sonde_pipeline_stage_seconds_total`); the rests \
         are each thread's CPU time (schedstat) less the stages timed in it.\n\n| target | load \
         | config |",
    );
    for st in STAGES {
        s.push_str(&format!(" {st} |"));
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---|".repeat(STAGES.len()));
    s.push('\n');
    for ((target, load, config), samples) in rows {
        s.push_str(&format!(
            "| {} | {} | {} |",
            target.name(),
            load,
            config.name()
        ));
        for i in 0..STAGES.len() {
            let mut v: Vec<f64> = samples
                .iter()
                .filter_map(|x| x.stages.as_ref().map(|st| st[i]))
                .collect();
            s.push_str(&format!(" {:.2} |", median(&mut v)));
        }
        s.push('\n');
    }
    s
}

/// How many programs each cell of the kernel table names; the rest are summed in one entry.
const KERNEL_TOP: usize = 8;

/// Where the kernel's time goes per cell traced by sonde: the programs that took most of it,
/// with runs per request and average run time (summed over the cell's repetitions).
fn kernel_table(results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>) -> String {
    let mut s = String::new();
    for ((target, load, config), samples) in results {
        let requests: u64 = samples
            .iter()
            .filter(|x| x.programs.is_some())
            .map(|x| x.requests)
            .sum();
        if requests == 0 {
            continue;
        }
        if s.is_empty() {
            s.push_str(
                "\n## Where the kernel's time goes, per program\n\nsonde's BPF programs in each \
                 cell traced by sonde, most expensive first (all repetitions summed, from the \
                 kernel's run-time statistics): runs per request, average ns per run, ns per \
                 request. The programs run for every process that makes the hooked syscalls \
                 (the load generator and the receiver too); untraced ones leave at the filter.\n\n\
                 | target | load | config | program | runs/req | avg ns | ns/req |\n\
                 |---|---|---|---|---|---|---|\n",
            );
        }
        for (name, runs, ns) in kernel_rows(samples) {
            s.push_str(&format!(
                "| {} | {} | {} | `{name}` | {:.2} | {} | {:.0} |\n",
                target.name(),
                load,
                config.name(),
                runs as f64 / requests as f64,
                ns.checked_div(runs).unwrap_or(0),
                ns as f64 / requests as f64,
            ));
        }
    }
    s
}

/// The programs of a cell summed over its samples, most run time first: the top
/// [`KERNEL_TOP`] by name, then one "other" entry for the rest.
fn kernel_rows(samples: &[Sample]) -> Vec<(String, u64, u64)> {
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (name, runs, ns) in samples.iter().filter_map(|x| x.programs.as_ref()).flatten() {
        let e = by_name.entry(name).or_default();
        e.0 += runs;
        e.1 += ns;
    }
    let mut rows: Vec<(String, u64, u64)> = by_name
        .into_iter()
        .filter(|(_, (runs, _))| *runs > 0)
        .map(|(n, (runs, ns))| (n.to_owned(), runs, ns))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    if rows.len() > KERNEL_TOP {
        let rest = rows.split_off(KERNEL_TOP);
        let n = rest.len();
        let (runs, ns) = rest
            .iter()
            .fold((0, 0), |(r, t), (_, runs, ns)| (r + runs, t + ns));
        rows.push((format!("{n} others"), runs, ns));
    }
    rows
}

/// sonde against the zero-code agents, on the same servers and loads.
fn zero_code_table(results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>) -> String {
    let mut s = String::new();
    let mut rows = results
        .iter()
        .filter(|((t, _, c), _)| {
            matches!(t, TargetKind::NodeChain | TargetKind::FlaskChain) && *c != Config::Untraced
        })
        .peekable();
    if rows.peek().is_none() {
        return s;
    }
    s.push_str(
        "\n## sonde against the OpenTelemetry zero-code agents\n\nThe same server calling nginx \
         for every request, untraced, traced by sonde, and under the zero-code agent of its \
         language. Host CPU is the servers' cgroup (BPF programs and in-process agents included) \
         plus sonde's threads; added is over the untraced run. Spans and joined spans (a span \
         whose parent was received too) per request: sonde reports nginx's server span as well.\n\n\
         | target | load | config | added host CPU µs/req | × sonde's | throughput ratio | p50 ratio | p99 ratio | spans/req | joined/req |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((target, load, config), _) in rows {
        let med = |c: Config, f: fn(&Sample) -> Option<f64>| {
            let mut v: Vec<f64> = results
                .get(&(*target, load.clone(), c))?
                .iter()
                .filter_map(f)
                .collect();
            (!v.is_empty()).then(|| median(&mut v))
        };
        let ratio =
            |f: fn(&Sample) -> Option<f64>| match (med(*config, f), med(Config::Untraced, f)) {
                (Some(v), Some(b)) if b > 0.0 => format!("{:.3}", v / b),
                _ => "–".into(),
            };
        let added = added_cpu(results, *target, load, *config);
        let vs_sonde = match (added, added_cpu(results, *target, load, Config::Sonde)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            target.name(),
            load,
            config.name(),
            added.map_or_else(|| "–".into(), |a| format!("{a:.2}")),
            vs_sonde,
            ratio(|x| Some(x.rps)),
            ratio(|x| Some(x.p50_ms)),
            ratio(|x| Some(x.p99_ms)),
            med(*config, |x| x.spans_per_req).map_or_else(|| "–".into(), |v| format!("{v:.2}")),
            med(*config, |x| x.joined_per_req).map_or_else(|| "–".into(), |v| format!("{v:.2}")),
        ));
    }
    s
}

fn report_json(
    results: &BTreeMap<(TargetKind, String, Config), Vec<Sample>>,
    idle_rss: Option<(usize, f64)>,
    mode: Mode,
) -> Value {
    let rows: Vec<Value> = results
        .iter()
        .map(|((t, load, c), samples)| {
            json!({
                "target": t.name(),
                "load": load,
                "config": c.name(),
                "samples": samples.iter().map(|x| json!({
                    "requests": x.requests,
                    "rps": x.rps,
                    "p50_ms": x.p50_ms,
                    "p99_ms": x.p99_ms,
                    "agent_cpu_us_per_req": x.agent_cpu_us_per_req,
                    "kernel_ns_per_req": x.kernel_ns_per_req,
                    "kernel_programs": x.programs.as_ref().map(|p| p.iter().map(|(n, runs, ns)| json!({"name": n, "run_count": runs, "run_time_ns": ns})).collect::<Vec<_>>()),
                    "completeness": x.completeness,
                    "agent_rss_mib": x.agent_rss_mib,
                    "host_cpu_us_per_req": x.host_cpu_us_per_req,
                    "spans_per_req": x.spans_per_req,
                    "joined_per_req": x.joined_per_req,
                    "stages_us_per_req": x.stages.as_ref().map(|st| {
                        STAGES.iter().zip(st).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()
                    }),
                })).collect::<Vec<_>>(),
                "added_host_cpu_us_per_req": added_cpu(results, *t, load, *c),
            })
        })
        .collect();
    json!({
        "mode": format!("{mode:?}").to_lowercase(),
        "machine": machine(),
        "rows": rows,
        "idle_connections": idle_rss.map(|(n, rss)| json!({"connections": n, "agent_rss_mib": rss})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, v: Value) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("xtask-bench-{name}-{}.json", std::process::id()));
        fs::write(&p, v.to_string()).unwrap();
        p
    }

    #[test]
    fn losses_name_every_counter_of_a_loss() {
        let clean = summary(
            "clean",
            json!({
                "kernel": {"ringbuf_full_events": 0, "data_events": 10},
                "capture": ["stream.gaps_lost 0", "conns.opened 3"],
                "export": {"created": 5, "exported": 5, "dropped": {"queue_full": 0}},
            }),
        );
        assert_eq!(losses(&clean).unwrap(), Vec::<String>::new());
        let lossy = summary(
            "lossy",
            json!({
                "kernel": {"ringbuf_full_events": 7, "conn_table_full": 1},
                "capture": ["stream.gaps_lost 2", "stream.gap_lost_bytes 300"],
                "export": {"created": 5, "exported": 4, "dropped": {"queue_full": 1}},
            }),
        );
        assert_eq!(
            losses(&lossy).unwrap(),
            [
                "kernel.ringbuf_full_events 7",
                "kernel.conn_table_full 1",
                "stream.gaps_lost 2",
                "stream.gap_lost_bytes 300",
                "export.dropped.queue_full 1",
                "export created Some(5) but exported Some(4)",
            ]
        );
        let no_export = summary("none", json!({"kernel": {}, "capture": []}));
        assert_eq!(
            losses(&no_export).unwrap(),
            ["no export statistics in the summary"]
        );
        assert!(losses(Path::new("/nonexistent/summary.json")).is_err());
        for p in [clean, lossy, no_export] {
            let _ = fs::remove_file(p);
        }
    }

    #[test]
    fn the_kernel_table_sums_repetitions_and_folds_the_tail() {
        let progs = summary(
            "progs",
            json!({"programs": [
                {"name": "syscalls_exit_recvfrom", "run_time_ns": 3000, "run_count": 2},
                {"name": "syscalls_enter_read", "run_time_ns": 100, "run_count": 0},
                {"name": "broken"},
            ]}),
        );
        let p = kernel_programs(&progs).unwrap();
        assert_eq!(
            p,
            [
                ("syscalls_exit_recvfrom".to_owned(), 2, 3000),
                ("syscalls_enter_read".to_owned(), 0, 100)
            ]
        );
        let _ = fs::remove_file(progs);
        let sample = |n: u64| Sample {
            requests: 10,
            programs: Some(
                (0..KERNEL_TOP as u64 + 2)
                    .map(|i| (format!("p{i}"), n, (i + 1) * 100 * n))
                    .collect(),
            ),
            ..Sample::default()
        };
        let rows = kernel_rows(&[sample(1), sample(3)]);
        assert_eq!(rows.len(), KERNEL_TOP + 1);
        // Most run time first: p9 ran 4 times for 1,000 + 3,000 ns.
        assert_eq!(rows[0], ("p9".to_owned(), 4, 4000));
        assert_eq!(rows[KERNEL_TOP], ("2 others".to_owned(), 8, 400 + 800));
        let mut results = BTreeMap::new();
        results.insert(
            (TargetKind::Nginx, "saturation".to_owned(), Config::Sonde),
            vec![sample(1), sample(3)],
        );
        let table = kernel_table(&results);
        // 20 requests; p9: 4 runs (0.20 per request), 1,000 ns each, 200 ns per request.
        assert!(table.contains("| `p9` | 0.20 | 1000 | 200 |"), "{table}");
        assert!(
            table.contains("| `2 others` | 0.40 | 150 | 60 |"),
            "{table}"
        );
    }
}
