//! `cargo xtask soak`: sonde under mixed traffic for a long time (30 minutes by default), to
//! see that nothing leaks and nothing is lost silently. Not part of CI.
//!
//! Servers run in a cgroup of their own, as in the benchmark: nginx with an HTTP/1.1 and an h2c
//! server, a second nginx with a TLS server (HTTP/2 and HTTP/1.1 by ALPN, a self-signed
//! certificate made with `openssl`), and the grpcio test server. The clients run in the same
//! cgroup, so sonde traces both ends. Every load runs at a fixed, moderate rate (the soak is
//! about leaks, not throughput; the machine must not be saturated), each in a loop until the
//! end:
//! - HTTP/1.1 keep-alive: `hey -z 20s -q 50 -c 4` (200 req/s);
//! - h2c: `h2load -c 4 -m 4 --rps 25 -D 20` (100 req/s);
//! - gRPC: the benchmark's grpcio client (`bench/peers/grpc_load.py`), 50 calls/s, a new
//!   process and channel every 20 s;
//! - TLS, short-lived processes and connection churn: every 100 ms one `curl -sk https://...`
//!   (h2 and HTTP/1.1 in turn) and one `curl -H 'Connection: close' http://...`: two new
//!   processes and two new connections each time.
//!
//! sonde exports OTLP/gRPC to the counting receiver (`bench/peers/count_sink.py`, outside the
//! cgroup), which is killed and started again on the same port every 5 minutes (every quarter of
//! the run if shorter) and stays down for `--collector-down-seconds`: sonde retries, its queue
//! fills, it drops — and must count all of it.
//!
//! Every `--sample-seconds`: the agent's RSS and open fds (/proc), a scrape of its `/metrics`
//! (export counters, connections tracked, parser state bytes) and the entries of each of its
//! hash and LRU BPF maps (`bpftool map dump`; the maps are those whose fds the agent holds,
//! from /proc/<pid>/fdinfo). At the end the load stops, the export queue drains, sonde gets
//! SIGTERM and its `--summary-json` is read. The checks:
//! - accounting: the final summary balances exactly (created = exported + dropped + queued +
//!   in flight, with nothing left queued or in flight), the receiver got at least what sonde
//!   counts as exported, and at every sample created − (exported + dropped + queued) lies
//!   between 0 and the in-flight bound (4 batches × 512 spans), give or take [`READ_SLACK`];
//! - RSS: the median of the last third of the run is at most 15 % above the median from the
//!   end of the warm-up (5 minutes, or a sixth of a shorter run) to the end of the first third;
//! - fds: after the warm-up, max − min ≤ [`FD_SPREAD`];
//! - maps: for each hash map, entries at the last sample ≤ entries at the end of the warm-up
//!   × 1.2 + 64, and below max_entries (a full hash map refuses inserts). LRU maps cannot pass
//!   max_entries (the kernel evicts), and sonde lets their stale entries (exited processes,
//!   freed `SSL` objects) age out by eviction: their growth is reported with the time they take
//!   to fill, and fails the run only with `--strict-lru`.
//!
//! It refuses to start while another sonde agent runs, and notes any that appears during the
//! run (both would share the CPUs and the kernel hooks).
//!
//! Writes target/soak/report.md (also printed) and report.json (every sample); exits non-zero
//! naming each check that failed.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    bench::{
        BenchCgroup, Proc, free_port, losses, machine, median, read_ready, run_nginx, sink_count,
        start_grpc, start_nginx, wait_port,
    },
    setup::peers_python,
    workspace_root,
};

/// Command-line options of `cargo xtask soak`.
pub struct Options {
    pub minutes: u64,
    pub sample_seconds: u64,
    pub collector_down_seconds: u64,
    /// Fail on LRU maps that grow too (by default their growth is reported).
    pub strict_lru: bool,
}

/// Export settings passed to sonde explicitly (they are its defaults), so that the in-flight
/// bound of the accounting check is known: `MAX_CONCURRENT_EXPORTS × MAX_EXPORT_BATCH` spans.
const MAX_CONCURRENT_EXPORTS: u64 = 4;
const MAX_EXPORT_BATCH: u64 = 512;
const MAX_QUEUE: u64 = 2048;
const IN_FLIGHT_LIMIT: u64 = MAX_CONCURRENT_EXPORTS * MAX_EXPORT_BATCH;
/// `/metrics` reads the export counters one after another, not atomically: spans offered or
/// moved between two reads (microseconds apart, at under a thousand spans per second) can make
/// a sample's difference a few spans off either way. 64 is far above that and far below a leak.
const READ_SLACK: i64 = 64;
/// Longest warm-up (excluded from the RSS and fd checks; the map baseline is taken at its end).
const WARMUP_CAP: Duration = Duration::from_secs(300);
/// Longest interval between collector restarts.
const RESTART_CAP: Duration = Duration::from_secs(300);
/// RSS growth allowed between the early and the late window.
const RSS_GROWTH: f64 = 0.15;
/// Spread of the agent's open fds allowed after the warm-up. Its fds are fixed (maps,
/// programs, links, the ring buffer, the runtime's epoll and eventfds) but for a few sockets
/// that come and go: the OTLP connection (reconnecting after a collector restart), the
/// `/metrics` scrape being served, /proc files being read.
const FD_SPREAD: u64 = 16;
/// Map growth allowed from the end of the warm-up to the end: × 1.2 + 64 entries.
const MAP_GROWTH_FACTOR: f64 = 1.2;
const MAP_GROWTH_SLACK: u64 = 64;
/// Length of one run of hey, h2load and the gRPC client.
const LOAD_RUN: Duration = Duration::from_secs(20);
/// Map kinds whose entries are counted: the ones that grow with traffic. Arrays, per-CPU
/// arrays, the program array and the ring buffer are fixed-size; a sockhash's values cannot be
/// read from user space.
const COUNTED_KINDS: [&str; 4] = ["hash", "lru_hash", "percpu_hash", "lru_percpu_hash"];
/// The maps of agent-ebpf/src/maps.rs, for a kernel whose fdinfo has no `map_id` (the kernel
/// keeps 15 characters of a name).
const KNOWN_MAPS: [&str; 22] = [
    "EVENTS",
    "COUNTERS",
    "PROCS",
    "CGROUPS",
    "FILTER",
    "CONNS",
    "FD_NOT_TCP",
    "ARGS",
    "SCRATCH",
    "CONN_IDS",
    "TAIL",
    "SERVER_PROCS",
    "THREAD_CTX",
    "PLANS",
    "SOCKS",
    "PENDING",
    "CONNECTING",
    "TLS_CALLS",
    "TLS_SSL_FD",
    "TLS_UNMAPPED",
    "TLS_SOCKS",
    "GO_CALLS",
];

/// One BPF map of the agent.
#[derive(Clone, Debug)]
struct MapInfo {
    id: u64,
    name: String,
    kind: String,
    max_entries: u64,
}

/// The export counters and gauges of one `/metrics` scrape.
#[derive(Clone, Debug, Default)]
struct Export {
    /// `sonde_spans_created_total`: spans the pipeline built (before sampling and export).
    spans_built: u64,
    created: u64,
    exported: u64,
    dropped: BTreeMap<String, u64>,
    queued: u64,
    in_flight: u64,
    retries: u64,
    requests: BTreeMap<String, u64>,
}

impl Export {
    fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// created − (exported + dropped + queued): the spans in flight, give or take the reads.
    fn unaccounted(&self) -> i64 {
        self.created as i64 - (self.exported + self.dropped_total() + self.queued) as i64
    }
}

/// One sample.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds since the load started.
    t: f64,
    rss_kib: u64,
    fds: u64,
    export: Export,
    conns_tracked: Option<u64>,
    state_bytes: Option<u64>,
    tls_files: Option<u64>,
    events_lost: Option<u64>,
    /// Entries per counted map, by name.
    maps: BTreeMap<String, u64>,
    /// Spans the receiver got, summed over its incarnations.
    received: u64,
    /// Taken after the load stopped and the queue drained.
    drained: bool,
    /// Other processes named `sonde` running at the sample (they skew the measurements).
    others: Vec<u32>,
}

/// What one load loop did.
#[derive(Clone, Debug, Default)]
struct LoadStats {
    name: &'static str,
    rate: &'static str,
    runs: u64,
    ok: u64,
    failed: u64,
    last_error: Option<String>,
}

fn secs_of(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// A load run that fits before `end`: `LOAD_RUN`, or what is left if it is at least 2 s.
fn next_run(end: Instant) -> Option<Duration> {
    let left = end.saturating_duration_since(Instant::now());
    (left >= Duration::from_secs(2)).then(|| left.min(LOAD_RUN))
}

/// hey prints `[200]\t4000 responses` per status, and `[12]\tGet ...: EOF` per error.
fn parse_hey(text: &str) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    for l in text.lines() {
        let Some(rest) = l.trim().strip_prefix('[') else {
            continue;
        };
        let Some((code, tail)) = rest.split_once(']') else {
            continue;
        };
        let tail = tail.trim();
        if let Some(n) = tail.strip_suffix(" responses") {
            let n: u64 = n.trim().parse().unwrap_or(0);
            if code == "200" {
                ok += n;
            } else {
                failed += n;
            }
        } else if let Ok(n) = code.parse::<u64>() {
            failed += n;
        }
    }
    (ok, failed)
}

/// h2load: `requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout`.
fn parse_h2load(text: &str) -> (u64, u64) {
    let Some(line) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("requests:"))
    else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|x| x.trim().strip_suffix(name))
            .and_then(|x| x.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field(" succeeded"),
        field(" failed") + field(" errored") + field(" timeout"),
    )
}

fn hey_loop(cg: &BenchCgroup, port: u16, end: Instant, stop: &AtomicBool) -> LoadStats {
    let mut s = LoadStats {
        name: "HTTP/1.1 keep-alive (hey -c 4 -q 50)",
        rate: "200 req/s",
        ..LoadStats::default()
    };
    while !stop.load(Ordering::Relaxed)
        && let Some(d) = next_run(end)
    {
        s.runs += 1;
        let out = cg
            .command("hey")
            .args(["-z", &format!("{}s", secs_of(d)), "-q", "50", "-c", "4"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .stderr(Stdio::piped())
            .output();
        match out {
            Ok(o) => {
                let (ok, failed) = parse_hey(&String::from_utf8_lossy(&o.stdout));
                s.ok += ok;
                s.failed += failed;
                if ok == 0 {
                    s.last_error = Some(String::from_utf8_lossy(&o.stderr).trim().to_owned());
                }
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }
    s
}

fn h2load_loop(cg: &BenchCgroup, port: u16, end: Instant, stop: &AtomicBool) -> LoadStats {
    let mut s = LoadStats {
        name: "h2c (h2load -c 4 -m 4 --rps 25)",
        rate: "100 req/s",
        ..LoadStats::default()
    };
    while !stop.load(Ordering::Relaxed)
        && let Some(d) = next_run(end)
    {
        s.runs += 1;
        let out = cg
            .command("h2load")
            .args(["-c", "4", "-m", "4", "--rps=25", "-D"])
            .arg(secs_of(d).to_string())
            .arg(format!("http://127.0.0.1:{port}/"))
            .stderr(Stdio::piped())
            .output();
        match out {
            Ok(o) => {
                let (ok, failed) = parse_h2load(&String::from_utf8_lossy(&o.stdout));
                s.ok += ok;
                s.failed += failed;
                if ok == 0 {
                    s.last_error = Some(String::from_utf8_lossy(&o.stdout).trim().to_owned());
                }
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }
    s
}

fn grpc_loop(cg: &BenchCgroup, port: u16, end: Instant, stop: &AtomicBool) -> LoadStats {
    let mut s = LoadStats {
        name: "gRPC unary (grpcio client, new process every 20 s)",
        rate: "50 calls/s",
        ..LoadStats::default()
    };
    while !stop.load(Ordering::Relaxed)
        && let Some(d) = next_run(end)
    {
        s.runs += 1;
        let out = cg
            .command(peers_python())
            .arg(workspace_root().join("bench/peers/grpc_load.py"))
            .arg(port.to_string())
            .arg(secs_of(d).to_string())
            .arg("50")
            .stderr(Stdio::piped())
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                match text
                    .lines()
                    .last()
                    .and_then(|l| serde_json::from_str::<Value>(l).ok())
                {
                    Some(v) => {
                        s.ok += v["requests"].as_u64().unwrap_or(0);
                        s.failed += v["errors"].as_u64().unwrap_or(0);
                    }
                    None => {
                        s.last_error = Some(String::from_utf8_lossy(&o.stderr).trim().to_owned())
                    }
                }
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }
    s
}

/// One curl, which must get a 200.
fn curl(cg: &BenchCgroup, args: &[&str], url: &str) -> Result<(), String> {
    let out = cg
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if code == "200" {
        Ok(())
    } else {
        Err(format!("{url}: HTTP code {code:?}, {}", out.status))
    }
}

fn churn_loop(
    cg: &BenchCgroup,
    tls_port: u16,
    h1_port: u16,
    end: Instant,
    stop: &AtomicBool,
) -> LoadStats {
    let mut s = LoadStats {
        name: "TLS + churn (curl -sk https://, curl -H 'Connection: close' http://; a process each)",
        rate: "10 + 10 req/s",
        ..LoadStats::default()
    };
    let tls = format!("https://127.0.0.1:{tls_port}/");
    let plain = format!("http://127.0.0.1:{h1_port}/");
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        s.runs += 1;
        // ALPN h2 and HTTP/1.1 in turn: both parsers over the TLS uprobes.
        let tls_args: &[&str] = if s.runs.is_multiple_of(2) {
            &["-k", "--http1.1"]
        } else {
            &["-k"]
        };
        for r in [
            curl(cg, tls_args, &tls),
            curl(cg, &["-H", "Connection: close"], &plain),
        ] {
            match r {
                Ok(()) => s.ok += 1,
                Err(e) => {
                    s.failed += 1;
                    s.last_error = Some(e);
                }
            }
        }
        next += Duration::from_millis(100);
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            // Behind (a slow spawn): do not burst to catch up.
            next = now;
        }
    }
    s
}

/// A second nginx, in the cgroup, with a TLS server (HTTP/2 and HTTP/1.1 by ALPN).
fn start_tls_nginx(cg: &BenchCgroup, dir: &Path) -> Result<(Proc, u16)> {
    fs::create_dir_all(dir)?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    crate::run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", "/CN=localhost", "-days", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let port = free_port()?;
    let server = format!(
        "server {{\n    listen 127.0.0.1:{port} ssl http2 backlog=4096;\n\
         ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n",
        cert = cert.display(),
        key = key.display(),
    );
    let proc = run_nginx(cg, dir, &server, &[port]).context("start the TLS nginx")?;
    Ok((proc, port))
}

/// The counting receiver on `port` (the same port for every incarnation), counting into
/// `counts`.
fn start_sink_on(port: u16, counts: &Path) -> Result<Proc> {
    let mut last = None;
    // The port was ours a moment ago; retry briefly should its release lag.
    for _ in 0..5 {
        let mut child = Command::new(peers_python())
            .arg(workspace_root().join("bench/peers/count_sink.py"))
            .arg(port.to_string())
            .arg(counts)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start the OTLP receiver")?;
        match read_ready(&mut child) {
            Ok(()) => return Ok(Proc(child)),
            Err(e) => {
                drop(Proc(child));
                last = Some(e);
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the receiver did not start")))
}

/// sonde tracing the cgroup with `/metrics` on `metrics_port`; its stderr goes to `log`.
fn start_sonde(
    sonde: &Path,
    cg: &BenchCgroup,
    sink_port: u16,
    metrics_port: u16,
    summary: &Path,
    log: &Path,
) -> Result<Proc> {
    let mut child = Command::new(sonde)
        .arg("run")
        .arg("--cgroup")
        .arg(&cg.path)
        .args(["--output", "otlp", "--metrics-address"])
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--summary-json")
        .arg(summary)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{sink_port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env(
            "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
            MAX_CONCURRENT_EXPORTS.to_string(),
        )
        .env(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            MAX_EXPORT_BATCH.to_string(),
        )
        .env("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE.to_string())
        .env("SONDE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start sonde")?;
    let err = child.stderr.take().context("stderr")?;
    let proc = Proc(child);
    let mut out = fs::File::create(log)?;
    let mut reader = BufReader::new(err);
    let mut line = String::new();
    // sonde says "tracing ..." on stderr once its programs are attached.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!(
                "sonde exited before it was ready (its log: {})",
                log.display()
            );
        }
        out.write_all(line.as_bytes())?;
        if line.contains("tracing") {
            break;
        }
    }
    thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = out.write_all(line.as_bytes());
            line.clear();
        }
    });
    wait_port(metrics_port)?;
    Ok(proc)
}

/// Pids of running processes named `sonde`.
fn other_agents() -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sonde")
        })
        .collect()
}

/// `GET /metrics`, parsed: `name{labels}` → value.
fn scrape(port: u16) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect to /metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body).context("read /metrics")?;
    let (head, body) = body
        .split_once("\r\n\r\n")
        .context("no HTTP response from /metrics")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/metrics answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(parse_prometheus(body))
}

fn parse_prometheus(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> Option<u64> {
    m.get(name).map(|v| *v as u64)
}

/// Every sample of `name` by the value of its `label`.
fn by_label(m: &BTreeMap<String, f64>, name: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{");
    let pat = format!("{label}=\"");
    m.iter()
        .filter_map(|(k, v)| {
            let labels = k.strip_prefix(&prefix)?;
            let (_, rest) = labels.split_once(&pat)?;
            let (value, _) = rest.split_once('"')?;
            Some((value.to_owned(), *v as u64))
        })
        .collect()
}

fn export_of(m: &BTreeMap<String, f64>) -> Result<Export> {
    let need = |name: &str| {
        metric(m, name).with_context(|| format!("/metrics has no {name} (is OTLP export on?)"))
    };
    Ok(Export {
        spans_built: need("sonde_spans_created_total")?,
        created: need("sonde_export_spans_created_total")?,
        exported: need("sonde_export_spans_exported_total")?,
        dropped: by_label(m, "sonde_export_spans_dropped_total", "reason"),
        queued: need("sonde_export_queue_spans")?,
        in_flight: need("sonde_export_in_flight_spans")?,
        retries: need("sonde_export_retries_total")?,
        requests: by_label(m, "sonde_export_requests_total", "outcome"),
    })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("sonde (pid {pid}) is gone"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

fn fd_count(pid: u32) -> Result<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("sonde (pid {pid}) is gone"))?
        .count() as u64)
}

/// Ids of the BPF maps whose fds `pid` holds (`map_id:` of /proc/<pid>/fdinfo/<fd>).
fn owned_map_ids(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = fds
        .flatten()
        .filter(|e| {
            fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-map")
        })
        .filter_map(|e| {
            let info =
                fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_str()?))
                    .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:"))?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The agent's BPF maps, and how they were found.
fn sonde_maps(pid: u32) -> Result<(Vec<MapInfo>, &'static str)> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .context("run bpftool (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool map show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Vec<Value> =
        serde_json::from_slice(&out.stdout).context("bpftool -j map show is not JSON")?;
    let info = |v: &Value| MapInfo {
        id: v["id"].as_u64().unwrap_or(0),
        name: v["name"].as_str().unwrap_or("?").to_owned(),
        kind: v["type"].as_str().unwrap_or("?").to_owned(),
        max_entries: v["max_entries"].as_u64().unwrap_or(0),
    };
    let owned = owned_map_ids(pid);
    if !owned.is_empty() {
        let maps = all
            .iter()
            .filter(|v| v["id"].as_u64().is_some_and(|id| owned.contains(&id)))
            .map(info)
            .collect();
        return Ok((maps, "the map fds the agent holds (/proc/<pid>/fdinfo)"));
    }
    let by_pid: Vec<MapInfo> = all
        .iter()
        .filter(|v| {
            v["pids"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["pid"].as_u64() == Some(u64::from(pid))))
        })
        .map(info)
        .collect();
    if !by_pid.is_empty() {
        return Ok((by_pid, "bpftool's pids of each map"));
    }
    let names: Vec<String> = KNOWN_MAPS
        .iter()
        .map(|n| n.chars().take(15).collect())
        .collect();
    let maps = all
        .iter()
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|k| k == n))
        })
        .map(info)
        .collect();
    Ok((maps, "the names of agent-ebpf/src/maps.rs (no owner known)"))
}

/// Entries of a map: bpftool's `Found N elements` after the dump.
fn map_entries(id: u64) -> Result<u64> {
    let out = Command::new("bpftool")
        .args(["map", "dump", "id", &id.to_string()])
        .stderr(Stdio::null())
        .output()
        .context("run bpftool map dump")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Found "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("bpftool map dump id {id} printed no count"))
}

/// Unique display names: a name seen twice gets its id.
fn map_names(maps: &[MapInfo]) -> Vec<String> {
    maps.iter()
        .map(|m| {
            if maps.iter().filter(|o| o.name == m.name).count() > 1 {
                format!("{}#{}", m.name, m.id)
            } else {
                m.name.clone()
            }
        })
        .collect()
}

struct Sampler<'a> {
    pid: u32,
    metrics_port: u16,
    maps: &'a [(String, MapInfo)],
    counts: &'a [PathBuf],
}

impl Sampler<'_> {
    fn take(&self, t: f64, drained: bool) -> Result<Sample> {
        let fds = fd_count(self.pid)?;
        let rss_kib = rss_kib(self.pid)?;
        let m = scrape(self.metrics_port)?;
        let export = export_of(&m)?;
        let mut maps = BTreeMap::new();
        for (name, info) in self.maps {
            maps.insert(name.clone(), map_entries(info.id)?);
        }
        Ok(Sample {
            t,
            rss_kib,
            fds,
            export,
            conns_tracked: metric(&m, "sonde_connections_tracked"),
            state_bytes: metric(&m, "sonde_conn_state_bytes"),
            tls_files: metric(&m, "sonde_tls_files_attached"),
            events_lost: metric(&m, "sonde_events_lost_total"),
            maps,
            received: self.counts.iter().map(|c| sink_count(c).spans).sum(),
            drained,
            others: other_agents()
                .into_iter()
                .filter(|&p| p != self.pid)
                .collect(),
        })
    }
}

/// One check's outcome.
struct Verdict {
    name: &'static str,
    level: Level,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Pass,
    Fail,
    /// Worth a look; does not fail the run.
    Note,
}

impl Level {
    fn of(pass: bool) -> Self {
        if pass { Self::Pass } else { Self::Fail }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Note => "NOTE",
        }
    }
}

/// A map's entries from the end of the warm-up to the last sample under load.
struct Growth {
    base: u64,
    last: u64,
    max: u64,
    /// Entries per minute between the two.
    per_min: f64,
}

impl Growth {
    fn grew(&self) -> bool {
        self.last as f64 > self.base as f64 * MAP_GROWTH_FACTOR + MAP_GROWTH_SLACK as f64
    }

    /// Minutes until `max_entries` at this rate, if growing.
    fn full_in(&self, max_entries: u64) -> Option<f64> {
        (self.per_min > 0.0).then(|| max_entries.saturating_sub(self.last) as f64 / self.per_min)
    }
}

fn growth(run: &Run, name: &str) -> Option<Growth> {
    let mut under_load = run.samples.iter().filter(|s| !s.drained);
    let base = under_load.clone().find(|s| s.t >= run.warmup)?;
    let last = under_load.next_back()?;
    let (b, l) = (*base.maps.get(name)?, *last.maps.get(name)?);
    let minutes = (last.t - base.t) / 60.0;
    Some(Growth {
        base: b,
        last: l,
        max: run
            .samples
            .iter()
            .filter_map(|s| s.maps.get(name).copied())
            .max()?,
        per_min: if minutes > 0.0 {
            (l as f64 - b as f64) / minutes
        } else {
            0.0
        },
    })
}

fn mmss(t: f64) -> String {
    let s = t.round() as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

struct Run {
    opts_line: String,
    strict_lru: bool,
    took: Duration,
    total: f64,
    warmup: f64,
    samples: Vec<Sample>,
    maps: Vec<(String, MapInfo)>,
    skipped_maps: Vec<MapInfo>,
    maps_how: &'static str,
    restarts: Vec<(f64, f64)>,
    loads: Vec<LoadStats>,
    summary: Value,
    kernel_losses: Vec<String>,
    verdicts: Vec<Verdict>,
}

fn check(run: &mut Run) {
    let under_load: Vec<&Sample> = run.samples.iter().filter(|s| !s.drained).collect();
    let after_warmup: Vec<&Sample> = under_load
        .iter()
        .copied()
        .filter(|s| s.t >= run.warmup)
        .collect();
    let mut v = Vec::new();

    // Accounting: exact on the final summary, within the in-flight bound at every sample.
    let e = &run.summary["export"];
    let created = e["created"].as_u64();
    let exported = e["exported"].as_u64().unwrap_or(0);
    let dropped: u64 = e["dropped"]
        .as_object()
        .map(|d| d.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let queued = e["queued"].as_u64().unwrap_or(0);
    let in_flight = e["in_flight"].as_u64().unwrap_or(0);
    let final_ok = created == Some(exported + dropped + queued + in_flight)
        && queued == 0
        && in_flight == 0
        && e["balanced"].as_bool() == Some(true);
    v.push(Verdict {
        name: "accounting (final summary)",
        level: Level::of(final_ok),
        detail: format!(
            "created {} = exported {exported} + dropped {dropped} + queued {queued} + in flight \
             {in_flight} (balanced: {})",
            opt(created),
            e["balanced"]
        ),
    });
    let bad: Vec<String> = run
        .samples
        .iter()
        .filter(|s| {
            let d = s.export.unaccounted();
            d < -READ_SLACK || d > IN_FLIGHT_LIMIT as i64 + READ_SLACK
        })
        .map(|s| format!("{} ({})", mmss(s.t), s.export.unaccounted()))
        .collect();
    let worst = run
        .samples
        .iter()
        .map(|s| s.export.unaccounted())
        .max_by_key(|d| d.abs())
        .unwrap_or(0);
    let worst_residual = run
        .samples
        .iter()
        .map(|s| s.export.unaccounted() - s.export.in_flight as i64)
        .max_by_key(|d| d.abs())
        .unwrap_or(0);
    v.push(Verdict {
        name: "accounting (every sample)",
        level: Level::of(bad.is_empty()),
        detail: if bad.is_empty() {
            format!(
                "created − (exported + dropped + queued) within [−{READ_SLACK}, {IN_FLIGHT_LIMIT} \
                 + {READ_SLACK}] at all {} samples (largest {worst}; minus the in-flight gauge, \
                 largest {worst_residual})",
                run.samples.len()
            )
        } else {
            format!(
                "outside [−{READ_SLACK}, {IN_FLIGHT_LIMIT} + {READ_SLACK}] at {}",
                bad.join(", ")
            )
        },
    });
    let received: u64 = run.samples.last().map_or(0, |s| s.received);
    v.push(Verdict {
        name: "receiver got what was exported",
        level: Level::of(received >= exported && exported > 0),
        detail: format!(
            "received {received} spans over {} incarnations, sonde exported {exported} \
             ({} more received: batches whose answer was lost when the receiver was killed, \
             sent again)",
            run.restarts.len() + 1,
            received as i64 - exported as i64
        ),
    });

    // RSS: the late window against the early one.
    let window = |from: f64, to: f64| -> Vec<f64> {
        under_load
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .map(|s| mib(s.rss_kib))
            .collect()
    };
    let mut early = window(run.warmup, run.total / 3.0);
    let mut late = window(run.total * 2.0 / 3.0, run.total);
    if early.is_empty() || late.is_empty() {
        v.push(Verdict {
            name: "RSS flat",
            level: Level::of(false),
            detail: "too few samples for the early or the late window (sample more often)".into(),
        });
    } else {
        let (e, l) = (median(&mut early), median(&mut late));
        let growth = l / e - 1.0;
        v.push(Verdict {
            name: "RSS flat",
            level: Level::of(growth <= RSS_GROWTH),
            detail: format!(
                "median {l:.1} MiB in the last third ({} samples) vs {e:.1} MiB from {} to {} \
                 ({} samples): {:+.1} % (limit +{:.0} %)",
                late.len(),
                mmss(run.warmup),
                mmss(run.total / 3.0),
                early.len(),
                growth * 100.0,
                RSS_GROWTH * 100.0
            ),
        });
    }

    // fds.
    let fds: Vec<u64> = after_warmup.iter().map(|s| s.fds).collect();
    match (fds.iter().min(), fds.iter().max()) {
        (Some(lo), Some(hi)) => v.push(Verdict {
            name: "fds flat",
            level: Level::of(hi - lo <= FD_SPREAD),
            detail: format!(
                "{lo} to {hi} open fds after {} ({} samples): spread {} (limit {FD_SPREAD})",
                mmss(run.warmup),
                fds.len(),
                hi - lo
            ),
        }),
        _ => v.push(Verdict {
            name: "fds flat",
            level: Level::of(false),
            detail: "no sample after the warm-up".into(),
        }),
    }

    // Maps. A hash map that keeps growing fills up and then refuses inserts; an LRU map
    // cannot pass max_entries (the kernel evicts), and sonde lets stale entries of its LRU maps
    // age out by eviction, so their growth is reported (with the time they take to fill) and
    // fails only with --strict-lru.
    let mut grew = Vec::new();
    let mut lru_grew = Vec::new();
    for (name, info) in &run.maps {
        let Some(g) = growth(run, name) else {
            continue;
        };
        let lru = info.kind.starts_with("lru_");
        if g.grew() {
            let what = format!(
                "{name} {} → {} ({:+.0}/min{})",
                g.base,
                g.last,
                g.per_min,
                g.full_in(info.max_entries)
                    .map(|m| format!(", full in {m:.0} min"))
                    .unwrap_or_default()
            );
            if lru { &mut lru_grew } else { &mut grew }.push(what);
        }
        if g.max > info.max_entries || (!lru && g.max >= info.max_entries) {
            grew.push(format!(
                "{name} {} entries of max_entries {}",
                g.max, info.max_entries
            ));
        }
    }
    let base_t = after_warmup.first().map(|b| mmss(b.t));
    let rule = format!(
        "entries at the last sample ≤ entries at the end of the warm-up × {MAP_GROWTH_FACTOR} + {MAP_GROWTH_SLACK}"
    );
    if run.strict_lru {
        grew.append(&mut lru_grew);
    }
    v.push(Verdict {
        name: "maps bounded",
        level: if grew.is_empty() && base_t.is_some() {
            Level::Pass
        } else {
            Level::Fail
        },
        detail: match &base_t {
            None => "no sample after the warm-up".into(),
            Some(b) if grew.is_empty() => format!(
                "{} {}maps: {rule} ({b}), below max_entries",
                run.maps
                    .iter()
                    .filter(|(_, m)| run.strict_lru || !m.kind.starts_with("lru_"))
                    .count(),
                if run.strict_lru { "" } else { "hash " }
            ),
            Some(_) => format!("{} ({rule})", grew.join(", ")),
        },
    });
    if !lru_grew.is_empty() {
        v.push(Verdict {
            name: "LRU maps growing (not failing without --strict-lru)",
            level: Level::Note,
            detail: format!(
                "{}: more than the rule for hash maps allows ({rule}); bounded only by \
                 eviction at max_entries",
                lru_grew.join(", ")
            ),
        });
    }

    // Every load ran.
    let idle: Vec<&str> = run
        .loads
        .iter()
        .filter(|l| l.ok == 0)
        .map(|l| l.name)
        .collect();
    v.push(Verdict {
        name: "load ran",
        level: Level::of(idle.is_empty()),
        detail: if idle.is_empty() {
            format!(
                "{} requests answered, {} failed",
                run.loads.iter().map(|l| l.ok).sum::<u64>(),
                run.loads.iter().map(|l| l.failed).sum::<u64>()
            )
        } else {
            format!("no request answered: {}", idle.join(", "))
        },
    });
    let shared: Vec<String> = run
        .samples
        .iter()
        .filter(|s| !s.others.is_empty())
        .map(|s| format!("{} (pid {:?})", mmss(s.t), s.others))
        .collect();
    if !shared.is_empty() {
        v.push(Verdict {
            name: "another sonde agent ran during the soak",
            level: Level::Note,
            detail: format!("seen at {}: the figures are skewed", shared.join(", ")),
        });
    }
    run.verdicts = v;
}

fn render(run: &Run) -> String {
    let mut s = format!(
        "# sonde soak\n\nMachine: {}. Command: `{}`. Took {:.0?}.\n\n",
        machine(),
        run.opts_line,
        run.took
    );
    s.push_str(&format!(
        "Load, at fixed rates, clients and servers in the traced cgroup (sonde traces both ends): \
         {}. Collector (OTLP receiver) killed and started again on the same port at {} \
         (down {} each time). Warm-up (excluded from the RSS and fd checks): {}. Export \
         settings: queue {MAX_QUEUE}, batches of {MAX_EXPORT_BATCH}, {MAX_CONCURRENT_EXPORTS} in \
         flight (bound {IN_FLIGHT_LIMIT} spans). Maps: {}.\n\n",
        run.loads
            .iter()
            .map(|l| format!("{} {}", l.name, l.rate))
            .collect::<Vec<_>>()
            .join("; "),
        if run.restarts.is_empty() {
            "no time (run too short)".to_owned()
        } else {
            run.restarts
                .iter()
                .map(|(t, _)| mmss(*t))
                .collect::<Vec<_>>()
                .join(", ")
        },
        run.restarts
            .first()
            .map_or_else(|| "–".into(), |(a, b)| format!("{:.0} s", b - a)),
        mmss(run.warmup),
        run.maps_how
    ));

    s.push_str("## Agent over time\n\n");
    s.push_str(
        "| time | RSS MiB | fds | conns tracked | state KiB | TLS files | spans built | created | \
         exported | dropped | queued | in flight | created − (exp + drop + queued) | retries | \
         received (all incarnations) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for x in &run.samples {
        let e = &x.export;
        s.push_str(&format!(
            "| {}{} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            mmss(x.t),
            if x.drained { " (drained)" } else { "" },
            mib(x.rss_kib),
            x.fds,
            opt(x.conns_tracked),
            x.state_bytes
                .map_or_else(|| "–".into(), |b| format!("{:.0}", b as f64 / 1024.0)),
            opt(x.tls_files),
            e.spans_built,
            e.created,
            e.exported,
            e.dropped_total(),
            e.queued,
            e.in_flight,
            e.unaccounted(),
            e.retries,
            x.received,
        ));
    }

    if !run.maps.is_empty() {
        s.push_str("\n## BPF map entries over time\n\n| time |");
        for (name, _) in &run.maps {
            s.push_str(&format!(" {name} |"));
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(run.maps.len()));
        s.push('\n');
        for x in &run.samples {
            s.push_str(&format!(
                "| {}{} |",
                mmss(x.t),
                if x.drained { " (drained)" } else { "" }
            ));
            for (name, _) in &run.maps {
                s.push_str(&format!(" {} |", opt(x.maps.get(name).copied())));
            }
            s.push('\n');
        }
        let under_load: Vec<&Sample> = run.samples.iter().filter(|x| !x.drained).collect();
        let base = under_load.iter().find(|x| x.t >= run.warmup);
        s.push_str(&format!(
            "\n| map | type | max_entries | at {} | max | last under load | after drain | \
             growth after warm-up | full in (at that rate) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            base.map_or_else(|| "warm-up end".into(), |b| mmss(b.t))
        ));
        for (name, info) in &run.maps {
            let get = |x: Option<&&Sample>| opt(x.and_then(|x| x.maps.get(name).copied()));
            let max = run
                .samples
                .iter()
                .filter_map(|x| x.maps.get(name).copied())
                .max();
            let g = growth(run, name);
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                info.kind,
                info.max_entries,
                get(base),
                opt(max),
                get(under_load.last()),
                get(run.samples.iter().rfind(|x| x.drained).as_ref()),
                g.as_ref()
                    .map_or_else(|| "–".into(), |g| format!("{:+.0}/min", g.per_min)),
                g.and_then(|g| g.full_in(info.max_entries))
                    .map_or_else(|| "–".into(), |m| format!("{m:.0} min")),
            ));
        }
        if !run.skipped_maps.is_empty() {
            s.push_str(&format!(
                "\nNot counted (fixed size, or no values readable from user space): {}.\n",
                run.skipped_maps
                    .iter()
                    .map(|m| format!("{} ({}, {})", m.name, m.kind, m.max_entries))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    s.push_str("\n## Load\n\n| load | rate | runs | answered | failed | last error |\n|---|---|---|---|---|---|\n");
    for l in &run.loads {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            l.name,
            l.rate,
            l.runs,
            l.ok,
            l.failed,
            l.last_error
                .as_deref()
                .map(|e| e.replace('|', "/").replace('\n', " "))
                .unwrap_or_default()
        ));
    }

    let e = &run.summary["export"];
    s.push_str(&format!(
        "\n## Final summary (`--summary-json` after SIGTERM)\n\nExport: created {}, exported {}, \
         dropped {} ({}), queued {}, in flight {}, retries {}, balanced {}. Spans built by the \
         pipeline: {}.\n",
        e["created"],
        e["exported"],
        e["dropped"]
            .as_object()
            .map(|d| d.values().filter_map(Value::as_u64).sum::<u64>())
            .unwrap_or(0),
        e["dropped"]
            .as_object()
            .map(|d| d
                .iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "none".into()),
        e["queued"],
        e["in_flight"],
        e["retries"],
        e["balanced"],
        run.summary["spans"]["created"],
    ));
    // Both ends of every request are traced: two spans per answered request, give or take the
    // requests cut off at the end and failed ones.
    let answered: u64 = run.loads.iter().map(|l| l.ok).sum();
    s.push_str(&format!(
        "Requests answered {answered} × 2 ends = {} spans expected; the pipeline built {} \
         (information, not a check).\n",
        answered * 2,
        run.summary["spans"]["created"],
    ));
    if let Some(last) = run.samples.last() {
        let req = &last.export.requests;
        s.push_str(&format!(
            "Export requests by outcome (last sample): {}.\n",
            req.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        s.push_str(&format!(
            "Kernel records lost (ring buffer full): {}.\n",
            opt(last.events_lost)
        ));
    }
    s.push_str(&format!(
        "Losses counted before export (kernel, capture): {}.\n",
        if run.kernel_losses.is_empty() {
            "none".into()
        } else {
            run.kernel_losses.join(", ")
        }
    ));

    s.push_str("\n## Verdicts\n\n");
    for v in &run.verdicts {
        s.push_str(&format!(
            "- **{}** {}: {}\n",
            v.level.as_str(),
            v.name,
            v.detail
        ));
    }
    s
}

fn to_json(run: &Run) -> Value {
    json!({
        "command": run.opts_line,
        "machine": machine(),
        "took_seconds": run.took.as_secs_f64(),
        "minutes": run.total / 60.0,
        "warmup_seconds": run.warmup,
        "in_flight_limit": IN_FLIGHT_LIMIT,
        "maps_found_by": run.maps_how,
        "maps": run.maps.iter().map(|(n, m)| json!({
            "name": n, "id": m.id, "type": m.kind, "max_entries": m.max_entries,
        })).collect::<Vec<_>>(),
        "maps_not_counted": run.skipped_maps.iter().map(|m| json!({
            "name": m.name, "type": m.kind, "max_entries": m.max_entries,
        })).collect::<Vec<_>>(),
        "collector_restarts": run.restarts.iter().map(|(down, up)| json!({
            "down_at_seconds": down, "up_at_seconds": up,
        })).collect::<Vec<_>>(),
        "loads": run.loads.iter().map(|l| json!({
            "name": l.name, "rate": l.rate, "runs": l.runs, "answered": l.ok,
            "failed": l.failed, "last_error": l.last_error,
        })).collect::<Vec<_>>(),
        "samples": run.samples.iter().map(|x| json!({
            "t_seconds": x.t,
            "drained": x.drained,
            "rss_kib": x.rss_kib,
            "fds": x.fds,
            "connections_tracked": x.conns_tracked,
            "conn_state_bytes": x.state_bytes,
            "tls_files_attached": x.tls_files,
            "events_lost": x.events_lost,
            "export": {
                "spans_built": x.export.spans_built,
                "created": x.export.created,
                "exported": x.export.exported,
                "dropped": x.export.dropped,
                "queued": x.export.queued,
                "in_flight": x.export.in_flight,
                "retries": x.export.retries,
                "requests": x.export.requests,
                "unaccounted": x.export.unaccounted(),
            },
            "maps": x.maps,
            "received": x.received,
            "other_agents": x.others,
        })).collect::<Vec<_>>(),
        "summary": run.summary,
        "kernel_losses": run.kernel_losses,
        "verdicts": run.verdicts.iter().map(|v| json!({
            "check": v.name, "level": v.level.as_str(), "detail": v.detail,
        })).collect::<Vec<_>>(),
    })
}

pub fn soak(opts: &Options, sonde: &Path) -> Result<()> {
    if opts.minutes == 0 || opts.sample_seconds == 0 {
        bail!("--minutes and --sample-seconds must be at least 1");
    }
    let started = Instant::now();
    let total = Duration::from_secs(opts.minutes * 60);
    let every = Duration::from_secs(opts.sample_seconds);
    let warmup = WARMUP_CAP.min(total / 6);
    let restart_every = RESTART_CAP.min(total / 4);
    let down = Duration::from_secs(opts.collector_down_seconds);
    let opts_line = format!(
        "cargo xtask soak --minutes {} --sample-seconds {} --collector-down-seconds {}{}",
        opts.minutes,
        opts.sample_seconds,
        opts.collector_down_seconds,
        if opts.strict_lru { " --strict-lru" } else { "" }
    );

    // Another agent would share the CPUs, the kernel hooks and the traffic of the machine.
    let others = other_agents();
    if !others.is_empty() {
        bail!(
            "another sonde agent is running (pid {}): stop it first, the soak measures one agent",
            others
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let out_dir = workspace_root().join("target/soak");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    let cg = BenchCgroup::new()?;
    let sink_port = free_port()?;
    let mut counts = vec![work.join("sink-counts-0.json")];
    let mut sink = Some(start_sink_on(sink_port, &counts[0])?);
    let (_nginx, h1_port, h2_port) = start_nginx(&cg, &work.join("nginx"))?;
    let (_tls, tls_port) = start_tls_nginx(&cg, &work.join("nginx-tls"))?;
    let (_grpc, grpc_port) = start_grpc(&cg)?;
    let metrics_port = free_port()?;
    let summary_path = work.join("summary.json");
    let log = work.join("sonde.log");
    let mut agent = start_sonde(sonde, &cg, sink_port, metrics_port, &summary_path, &log)?;
    let pid = agent.0.id();
    let (all_maps, maps_how) = sonde_maps(pid)?;
    let (counted, skipped): (Vec<MapInfo>, Vec<MapInfo>) = all_maps
        .into_iter()
        .partition(|m| COUNTED_KINDS.contains(&m.kind.as_str()));
    let mut maps: Vec<(String, MapInfo)> = map_names(&counted).into_iter().zip(counted).collect();
    // Hash maps first, then LRU maps, each by name: the same columns from run to run.
    maps.sort_by(|(a, x), (b, y)| {
        (x.kind.starts_with("lru_"), a).cmp(&(y.kind.starts_with("lru_"), b))
    });
    let mut skipped = skipped;
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    eprintln!(
        "soak: sonde pid {pid}; {} maps counted ({}), {} not; {} minutes, a sample every {} s, \
         collector restarts every {:.0?}",
        maps.len(),
        maps.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        skipped.len(),
        opts.minutes,
        opts.sample_seconds,
        restart_every
    );

    let stop = AtomicBool::new(false);
    let load_start = Instant::now();
    let end = load_start + total;
    let mut samples = Vec::new();
    let mut restarts: Vec<(f64, f64)> = Vec::new();
    let (loads, result) = thread::scope(|scope| {
        let (cg, stop) = (&cg, &stop);
        let handles = vec![
            scope.spawn(move || hey_loop(cg, h1_port, end, stop)),
            scope.spawn(move || h2load_loop(cg, h2_port, end, stop)),
            scope.spawn(move || grpc_loop(cg, grpc_port, end, stop)),
            scope.spawn(move || churn_loop(cg, tls_port, h1_port, end, stop)),
        ];
        let r = (|| -> Result<()> {
            let mut next_sample = load_start;
            let mut next_restart = load_start + restart_every;
            let mut up_at: Option<Instant> = None;
            loop {
                let now = Instant::now();
                if let Some(at) = up_at
                    && now >= at
                {
                    let path = work.join(format!("sink-counts-{}.json", counts.len()));
                    sink = Some(start_sink_on(sink_port, &path)?);
                    counts.push(path);
                    if let Some(r) = restarts.last_mut() {
                        r.1 = load_start.elapsed().as_secs_f64();
                    }
                    eprintln!(
                        "soak: {} collector up again",
                        mmss(load_start.elapsed().as_secs_f64())
                    );
                    up_at = None;
                }
                // A restart only when the collector will be back well before the end.
                if up_at.is_none() && now >= next_restart {
                    if next_restart + down + Duration::from_secs(30) <= end {
                        drop(sink.take());
                        let t = load_start.elapsed().as_secs_f64();
                        restarts.push((t, t));
                        eprintln!("soak: {} collector killed", mmss(t));
                        up_at = Some(now + down);
                    }
                    next_restart += restart_every;
                }
                // The last sample is the last one due before the end.
                if next_sample > end && now >= end {
                    break;
                }
                if now >= next_sample {
                    let s = Sampler {
                        pid,
                        metrics_port,
                        maps: &maps,
                        counts: &counts,
                    }
                    .take(load_start.elapsed().as_secs_f64(), false)?;
                    eprintln!(
                        "soak: {} RSS {:.1} MiB, {} fds, spans created {} exported {} dropped {} \
                         queued {}, received {}",
                        mmss(s.t),
                        mib(s.rss_kib),
                        s.fds,
                        s.export.created,
                        s.export.exported,
                        s.export.dropped_total(),
                        s.export.queued,
                        s.received
                    );
                    samples.push(s);
                    next_sample += every;
                    continue;
                }
                let mut wake = next_sample.min(next_restart).min(end);
                if let Some(at) = up_at {
                    wake = wake.min(at);
                }
                thread::sleep(
                    wake.saturating_duration_since(Instant::now())
                        .min(Duration::from_secs(1)),
                );
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let loads: Vec<LoadStats> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        (loads, r)
    });
    result?;
    if sink.is_none() {
        bail!("the collector was down at the end of the run");
    }

    // Drain: the queue empty, nothing in flight, nothing new for a second.
    eprintln!("soak: load stopped; waiting for the export queue to drain");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut prev = None;
    loop {
        let e = export_of(&scrape(metrics_port)?)?;
        let key = (e.created, e.exported, e.dropped_total());
        if e.queued == 0 && e.in_flight == 0 && prev == Some(key) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("soak: the export queue did not drain within 60 s");
            break;
        }
        prev = Some(key);
        thread::sleep(Duration::from_secs(1));
    }
    samples.push(
        Sampler {
            pid,
            metrics_port,
            maps: &maps,
            counts: &counts,
        }
        .take(load_start.elapsed().as_secs_f64(), true)?,
    );

    // SIGTERM; the summary is written on the way out.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = agent.0.try_wait()? {
            break st;
        }
        if Instant::now() > stop_deadline {
            bail!("sonde did not exit within 30 s of SIGTERM");
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("sonde exited with {status} (log: {})", log.display());
    }
    let summary: Value = serde_json::from_str(
        &fs::read_to_string(&summary_path)
            .with_context(|| format!("sonde wrote no summary at {}", summary_path.display()))?,
    )
    .context("sonde's summary is not JSON")?;
    // Spans exported after the last sample (the drain) are in the receiver's counts now.
    if let Some(last) = samples.last_mut() {
        last.received = counts.iter().map(|c| sink_count(c).spans).sum();
    }
    let kernel_losses = losses(&summary_path)?
        .into_iter()
        .filter(|l| !l.starts_with("export"))
        .collect();

    let mut run = Run {
        opts_line,
        strict_lru: opts.strict_lru,
        took: started.elapsed(),
        total: total.as_secs_f64(),
        warmup: warmup.as_secs_f64(),
        samples,
        maps,
        skipped_maps: skipped,
        maps_how,
        restarts,
        loads,
        summary,
        kernel_losses,
        verdicts: Vec::new(),
    };
    check(&mut run);
    let report = render(&run);
    fs::write(out_dir.join("report.md"), &report)?;
    fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&to_json(&run))?,
    )?;
    println!("{report}");
    eprintln!(
        "soak: wrote {} and report.json (sonde's log: {})",
        out_dir.join("report.md").display(),
        log.display()
    );
    let failed: Vec<&str> = run
        .verdicts
        .iter()
        .filter(|v| v.level == Level::Fail)
        .map(|v| v.name)
        .collect();
    if !failed.is_empty() {
        bail!("soak checks failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text_and_labels() {
        let m = parse_prometheus(
            "# HELP x y\n# TYPE sonde_export_spans_dropped_total counter\n\
             sonde_export_spans_dropped_total{reason=\"queue_full\"} 3\n\
             sonde_export_spans_dropped_total{reason=\"shutdown\"} 0\n\
             sonde_export_spans_created_total 12\n\
             sonde_conn_state_bytes 4.096e3\n",
        );
        assert_eq!(metric(&m, "sonde_export_spans_created_total"), Some(12));
        assert_eq!(metric(&m, "sonde_conn_state_bytes"), Some(4096));
        let d = by_label(&m, "sonde_export_spans_dropped_total", "reason");
        assert_eq!(d.get("queue_full"), Some(&3));
        assert_eq!(d.get("shutdown"), Some(&0));
        assert!(export_of(&m).is_err(), "exported is missing");
    }

    #[test]
    fn parses_hey_and_h2load() {
        let hey = "Status code distribution:\n  [200]\t3990 responses\n  [502]\t2 responses\n\n\
                   Error distribution:\n  [8]\tGet \"http://127.0.0.1:1/\": EOF\n";
        assert_eq!(parse_hey(hey), (3990, 10));
        let h2 = "requests: 2000 total, 2000 started, 2000 done, 1990 succeeded, 10 failed, \
                  0 errored, 0 timeout\n";
        assert_eq!(parse_h2load(h2), (1990, 10));
        assert_eq!(parse_h2load("nothing"), (0, 0));
    }

    #[test]
    fn map_growth_rule_and_time_to_fill() {
        let g = |base, last| Growth {
            base,
            last,
            max: last,
            per_min: (last as f64 - base as f64) / 2.0,
        };
        assert!(!g(0, 64).grew());
        assert!(g(0, 65).grew());
        assert!(!g(1000, 1264).grew());
        assert!(g(1000, 1265).grew());
        assert_eq!(
            g(300, 1800).full_in(65536),
            Some((65536.0 - 1800.0) / 750.0)
        );
        assert_eq!(g(18, 10).full_in(65536), None);
    }

    #[test]
    fn unaccounted_spans_are_the_ones_in_flight() {
        let e = Export {
            created: 100,
            exported: 50,
            dropped: [("queue_full".to_owned(), 10)].into(),
            queued: 15,
            in_flight: 25,
            ..Export::default()
        };
        assert_eq!(e.unaccounted(), 25);
    }
}
