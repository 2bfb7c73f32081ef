//! Harness for sonde's privileged tests: a cgroup per test so that each test traces only the
//! processes it starts, real peers started inside it, and a capture that collects streams.
//!
//! These tests load real kernel programs: they need root and the kernel programs built by
//! `agent/build.rs`. `cargo xtask test` runs them; run as another user, they fail and say why.

use std::{
    ffi::CString,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{ffi::OsStringExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sonde::{
    capture::{Capture, CaptureConfig, CaptureHandle, Summary},
    conn::{CollectSink, Collected},
    enrich::ProcessCache,
    probes::{FilterSpec, ProbeConfig},
    span::{HttpConfig, SpanStage, SpanStats},
};
use sonde_model::{Span, Value};
use sonde_proto::{Decision, Direction, Role};

/// Fails the test with a clear message unless it can load kernel programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged tests load eBPF programs and need root: run `cargo xtask test` as root"
    );
}

/// Directory of the Python and other peer programs.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The Python of `target/peers/venv` (grpcio, OpenTelemetry, h2, Go), made by `cargo xtask
/// setup`; `SONDE_PEERS_PYTHON` overrides it.
pub fn peers_python() -> String {
    std::env::var("SONDE_PEERS_PYTHON").unwrap_or_else(|_| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/venv/bin/python");
        assert!(
            p.exists(),
            "{} missing: run `cargo xtask setup`",
            p.display()
        );
        p.to_string_lossy().into_owned()
    })
}

/// `target/peers/node/node_modules` (for `NODE_PATH`), made by `cargo xtask setup`.
pub fn node_modules() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/node/node_modules");
    assert!(
        p.join("@grpc/grpc-js").exists(),
        "{} missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// The `sonde` binary cargo built next to the running test (`target/debug/sonde`).
pub fn sonde_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("sonde");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p sonde` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// `sonde run --cgroup <cgroup>`, logging warnings only, its stderr piped for
/// [`spawn_tracing`]; add flags and environment, then spawn it with that.
pub fn sonde_run(cgroup: &Path) -> Command {
    let mut cmd = Command::new(sonde_bin());
    cmd.arg("run")
        .arg("--cgroup")
        .arg(cgroup)
        .env("SONDE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Spawns a `sonde run` command and returns once it says it is tracing; the rest of its
/// stderr goes to the test's.
pub fn spawn_tracing(mut cmd: Command) -> Child {
    let mut child = cmd.spawn().expect("start sonde");
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "sonde exited early");
        if line.contains("tracing") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        eprint!("{s}");
    });
    child
}

pub fn python() -> String {
    std::env::var("SONDE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A cgroup v2 made for one test; processes spawned through it are traced, others are not.
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
    children: Vec<Child>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        require_root();
        let root = sonde::cgroup::v2_mount().expect("a cgroup v2 hierarchy must be mounted");
        let path = root.join(format!(
            "sonde-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let id = sonde::cgroup::id_of(&path).expect("cgroup id");
        Self {
            path,
            id,
            children: Vec::new(),
        }
    }

    /// Configures `cmd` to start inside this cgroup (moved there before exec, so every
    /// syscall of the program itself is in it).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let procs = CString::new(self.path.join("cgroup.procs").into_os_string().into_vec())
            .expect("cgroup path without NUL");
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions
        // (open, write, close) on a string prepared before the fork; it allocates nothing.
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

    /// Starts `cmd` (made by [`Self::command`]) and keeps it to kill at drop.
    pub fn spawn(&mut self, mut cmd: Command) -> &mut Child {
        let child = cmd.spawn().expect("spawn peer");
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// A test peer in this cgroup on a free port: `program script PORT args...`, which prints
    /// `ready PORT` when it listens on 127.0.0.1. Returns the port once it accepts connections.
    pub fn start_peer(&mut self, program: &str, script: &str, args: &[&str]) -> u16 {
        let port = free_port();
        let mut cmd = self.command(program);
        cmd.arg(peers_dir().join(script))
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = self.spawn(cmd);
        assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
        port
    }

    /// nginx in this cgroup on a free port of 127.0.0.1, with its files in a directory of its
    /// own: `listen` follows the address (` http2`, ` ssl http2`), `http` adds directives to
    /// the `http` block, and `server(dir)` gives the `server` block's other directives (and may
    /// put files in `dir`). Returns once it accepts connections.
    pub fn start_nginx(
        &mut self,
        listen: &str,
        http: &str,
        server: impl FnOnce(&Path) -> String,
    ) -> (u16, PathBuf) {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sonde-nginx-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let server = server(&dir);
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  {http}\n\
             client_body_temp_path {d}/b;\n  proxy_temp_path {d}/p;\n\
             fastcgi_temp_path {d}/f;\n  uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n\
             server {{\n    listen 127.0.0.1:{port}{listen};\n{server}\n  }}\n}}\n",
            d = dir.display()
        );
        fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = self.command("nginx");
        cmd.args(["-c", dir.join("nginx.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.spawn(cmd);
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
        (port, dir)
    }

    /// Runs `cmd` to completion inside the cgroup; returns stdout; panics on failure.
    pub fn run(&self, mut cmd: Command) -> Vec<u8> {
        let out = cmd.stderr(Stdio::inherit()).output().expect("run peer");
        assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
        out.stdout
    }

    /// Capture configuration tracing this cgroup only, without `traceparent` injection (the
    /// capture tests compare the bytes servers receive with what clients sent).
    pub fn capture_config(&self) -> CaptureConfig {
        CaptureConfig {
            probes: ProbeConfig {
                filter: FilterSpec {
                    default: Decision::Ignore,
                    pids: Vec::new(),
                    cgroups: vec![(self.id, Decision::Trace)],
                },
                inject: false,
                ..ProbeConfig::default()
            },
            ..CaptureConfig::default()
        }
    }

    /// Starts a capture of this cgroup and waits until the programs are attached.
    pub fn capture(&self) -> Recording {
        self.capture_with(self.capture_config())
    }

    pub fn capture_with(&self, config: CaptureConfig) -> Recording {
        let mut handle = Capture::spawn(config, CollectSink::default());
        handle.wait_ready().expect("capture starts");
        Recording { handle }
    }

    /// Starts a capture of this cgroup that turns traffic into spans, with `traceparent`
    /// injection on (as `sonde run` does by default).
    pub fn capture_spans(&self) -> SpanRecording {
        let mut config = self.capture_config();
        config.probes.inject = true;
        self.capture_spans_with(config)
    }

    pub fn capture_spans_with(&self, config: CaptureConfig) -> SpanRecording {
        let stage = SpanStage::live(HttpConfig::default(), Vec::new());
        let mut handle = Capture::spawn(config, stage);
        handle.wait_ready().expect("capture starts");
        SpanRecording { handle }
    }
}

/// A running capture producing spans.
pub struct SpanRecording {
    handle: CaptureHandle<SpanStage<Vec<Span>, ProcessCache>>,
}

impl SpanRecording {
    /// Stops, drains and returns the spans, the span stage's counters and the capture totals.
    pub fn finish(self) -> (Vec<Span>, SpanStats, Summary) {
        let (stage, summary) = self.handle.stop().expect("capture stops cleanly");
        let stats = stage.stats().clone();
        (stage.into_out(), stats, summary)
    }
}

/// A string attribute of a span, or panics with the span.
#[track_caller]
pub fn attr_str<'a>(span: &'a Span, key: &str) -> &'a str {
    match span.attr(key) {
        Some(Value::Str(s)) => s,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

/// An integer attribute of a span, or panics with the span.
#[track_caller]
pub fn attr_int(span: &Span, key: &str) -> i64 {
    match span.attr(key) {
        Some(Value::Int(v)) => *v,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes that are still in the cgroup (grandchildren) are killed too.
        let _ = fs::write(self.path.join("cgroup.kill"), b"1");
        for _ in 0..100 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process spawned outside any test cgroup (an untraced receiver, say), killed and reaped
/// when the guard drops, so a failing assertion leaves nothing running.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tcpdump writing the loopback's TCP traffic of one port to a pcap file, for `sonde replay`.
pub struct Tcpdump {
    child: Reaper,
    err: BufReader<std::process::ChildStderr>,
    pub pcap: PathBuf,
}

impl Tcpdump {
    /// Starts capturing `tcp port {port}` on `lo` into `pcap` and returns once it listens.
    pub fn start(port: u16, pcap: PathBuf) -> Self {
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                "lo",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-B",
                "16384",
                "-w",
            ])
            .arg(&pcap)
            .arg(format!("tcp port {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (Debian's tcpdump; `cargo xtask setup` installs it)");
        // tcpdump says "listening on lo" once the capture runs.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let child = Reaper(child);
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "{line}");
        Self { child, err, pcap }
    }

    /// Stops the capture (after a moment for the last packets) and returns what tcpdump said
    /// at the end, and whether it captured every packet ("0 packets dropped by kernel").
    pub fn stop(mut self) -> (String, bool) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGINT) };
        self.child.0.wait().unwrap();
        let mut rest = String::new();
        self.err.read_to_string(&mut rest).unwrap();
        let whole = rest
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel");
        (rest, whole)
    }
}

/// A running capture.
pub struct Recording {
    handle: CaptureHandle<CollectSink>,
}

impl Recording {
    /// Stops, drains and returns what was captured.
    pub fn finish(self) -> Captured {
        let (sink, summary) = self.handle.stop().expect("capture stops cleanly");
        Captured { sink, summary }
    }
}

pub struct Captured {
    pub sink: CollectSink,
    pub summary: Summary,
}

impl Captured {
    pub fn conns(&self) -> impl Iterator<Item = &Collected> {
        self.sink
            .order
            .iter()
            .filter_map(|id| self.sink.conns.get(id))
    }

    /// Connections whose remote or local port is `port`.
    pub fn with_port(&self, port: u16) -> Vec<&Collected> {
        self.conns()
            .filter(|c| {
                c.info.local.is_some_and(|a| a.port() == port)
                    || c.info.remote.is_some_and(|a| a.port() == port)
            })
            .collect()
    }

    /// The one connection of `role` with `port` on either end.
    pub fn one(&self, role: Role, port: u16) -> &Collected {
        let v: Vec<_> = self
            .with_port(port)
            .into_iter()
            .filter(|c| c.info.role == role)
            .collect();
        assert_eq!(
            v.len(),
            1,
            "expected one {role:?} connection on port {port}, got {:#?}",
            self.describe()
        );
        v[0]
    }

    /// A readable list of what was captured, for assertion messages.
    pub fn describe(&self) -> Vec<String> {
        self.conns()
            .map(|c| {
                format!(
                    "{:#x} pid={} fd={} {:?} {:?} {:?}->{:?} out={:?} in={:?} end={:?}",
                    c.info.id,
                    c.info.pid,
                    c.info.fd,
                    c.info.role,
                    c.info.source,
                    c.info.local,
                    c.info.remote,
                    String::from_utf8_lossy(&c.stream(Direction::Egress))
                        .chars()
                        .take(60)
                        .collect::<String>(),
                    String::from_utf8_lossy(&c.stream(Direction::Ingress))
                        .chars()
                        .take(60)
                        .collect::<String>(),
                    c.end
                )
            })
            .collect()
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

/// A child whose stdout lines are read one by one (for scripts that report their steps).
pub struct Lines {
    reader: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
}

impl Lines {
    pub fn of(child: &mut Child) -> Self {
        Self {
            reader: BufReader::new(child.stdout.take().expect("stdout piped")),
            stdin: child.stdin.take(),
        }
    }

    pub fn next_line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("read peer output");
        assert!(!s.is_empty(), "peer exited early");
        s.trim_end().to_owned()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.write_all(b"\n"))
            .expect("write");
        stdin.flush().expect("flush");
    }

    pub fn rest(mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }
}

/// Hex decoding for peers that print bytes as hex.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Asserts two byte strings are equal; on failure shows lengths and the first difference only.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let window = |b: &[u8]| {
        let end = (at + 40).min(b.len());
        String::from_utf8_lossy(&b[at.saturating_sub(20).min(end)..end]).into_owned()
    };
    panic!(
        "{what}: {} bytes captured, {} expected; first difference at {at}: captured {:?} expected {:?}",
        actual.len(),
        expected.len(),
        window(actual),
        window(expected)
    );
}

/// Asserts that `chunks` cover exactly `expected`: every data chunk equals the real bytes at its
/// offset, every gap is bytes that were not captured, and together they span the whole stream.
#[track_caller]
pub fn assert_chunks_cover(chunks: &[sonde::conn::Chunk], expected: &[u8], what: &str) {
    use sonde::conn::{Chunk, GapReason};
    let mut pos = 0u64;
    for ch in chunks {
        assert_eq!(ch.seq(), pos, "{what}: chunks are contiguous");
        match ch {
            Chunk::Data { bytes, .. } => {
                let start = pos as usize;
                assert!(
                    start + bytes.len() <= expected.len(),
                    "{what}: data past the end"
                );
                assert_bytes_eq(bytes, &expected[start..start + bytes.len()], what);
            }
            Chunk::Gap { reason, .. } => assert_eq!(*reason, GapReason::NotCaptured, "{what}"),
        }
        pos += ch.len();
    }
    assert_eq!(
        pos,
        expected.len() as u64,
        "{what}: chunks cover the stream"
    );
}
