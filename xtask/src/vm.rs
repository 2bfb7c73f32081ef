//! `cargo xtask vm-test`: the kernel matrix. The same static (musl) `sonde` runs the same
//! script (`xtask/vm/check.sh`) on Debian's 6.1 and 6.12 cloud kernels under QEMU and on this
//! machine's kernel; this file boots the VMs, collects what the script printed, judges every
//! kernel with the same code, and prints one table of kernel × check.
//!
//! The VMs have no network device (loopback only), 512 MiB and one CPU, and boot an
//! uncompressed initramfs of busybox-static, `sonde`, `sonde-vm-peer` and the script as
//! `/init`. QEMU runs under TCG: nested KVM does not boot on our machines (DESIGN.md: a hang;
//! measured again: "KVM internal error. Suberror: 1 ... emulation failure"), so it is not tried. Kernels come from Debian's archive with `apt-get download` and are never
//! installed; their `vmlinuz` is cached under `target/vm/`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cargo, run, setup::MUSL_TARGET, step, workspace_root};

/// The kernels of the matrix besides the host's: (name, Debian package). To add one, add a
/// line (`apt-cache search --names-only 'linux-image-.*-cloud-amd64$'` lists what Debian has);
/// the package's `vmlinuz` must have BTF (`CONFIG_DEBUG_INFO_BTF`), as Debian's do.
pub const KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-6.1.0-57-cloud-amd64"),
    ("6.12", "linux-image-6.12.118+deb12-cloud-amd64"),
];

/// Wall time one kernel may take, boot to power-off (TCG, one CPU).
const VM_TIMEOUT: Duration = Duration::from_secs(480);
/// The host row runs the same script; it waits for nothing but sonde and the peers.
const HOST_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    Host,
    All,
}

/// One kernel of the matrix.
#[derive(Clone, Debug)]
struct Kernel {
    name: String,
    /// None: this machine's kernel, no VM.
    package: Option<&'static str>,
}

impl Kernel {
    /// kprobe and fentry must work on Debian's kernels; the host has neither (DESIGN.md).
    fn expects_accelerators(&self) -> bool {
        self.package.is_some()
    }
}

fn kernels(which: Which) -> Vec<Kernel> {
    let vm = |name: &str| {
        let (n, p) = KERNELS.iter().find(|(n, _)| *n == name).expect("listed");
        Kernel {
            name: (*n).to_owned(),
            package: Some(p),
        }
    };
    let host = Kernel {
        name: "host".into(),
        package: None,
    };
    match which {
        Which::V6_1 => vec![vm("6.1")],
        Which::V6_12 => vec![vm("6.12")],
        Which::Host => vec![host],
        Which::All => KERNELS
            .iter()
            .map(|(n, _)| vm(n))
            .chain(std::iter::once(host))
            .collect(),
    }
}

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

pub fn vm_test(which: Which) -> Result<()> {
    let started = Instant::now();
    let kernels = kernels(which);
    step("cargo build --target musl (sonde and sonde-vm-peer for the kernel matrix)");
    run(cargo().args([
        "build",
        "--locked",
        "-p",
        "sonde",
        "-p",
        "sonde-vm-peer",
        "--target",
        MUSL_TARGET,
    ]))?;
    let bin = workspace_root().join(format!("target/{MUSL_TARGET}/debug"));
    let (sonde, peer) = (bin.join("sonde"), bin.join("sonde-vm-peer"));
    let initramfs = if kernels.iter().any(|k| k.package.is_some()) {
        Some(build_initramfs(&sonde, &peer)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for k in &kernels {
        let t = Instant::now();
        let out = match (k.package, &initramfs) {
            (Some(pkg), Some(initramfs)) => {
                step(&format!(
                    "kernel {}: booting {pkg} under QEMU (TCG)",
                    k.name
                ));
                let vmlinuz = fetch_kernel(pkg)?;
                boot(&vmlinuz, initramfs, &k.name)
            }
            _ => {
                step("kernel host: the same script on this machine");
                on_host(&sonde, &peer)
            }
        };
        let elapsed = t.elapsed();
        let row = match out {
            Ok(text) => {
                // Everything the kernel and the script printed, for a closer look.
                let log = vm_dir().join(format!("{}.log", k.name));
                fs::write(&log, &text)?;
                eprintln!("xtask: the whole output is in {}", log.display());
                judge(k, &Output::parse(&text), elapsed)
            }
            Err(e) => Row::failed(k, elapsed, format!("{e:#}")),
        };
        eprintln!("xtask: kernel {} done in {:.0?}", k.name, elapsed);
        rows.push(row);
    }
    let report = render(&rows);
    eprintln!("\n{report}");
    fs::create_dir_all(vm_dir())?;
    fs::write(vm_dir().join("matrix.txt"), &report)?;
    eprintln!(
        "xtask: kernel matrix took {:.0?} (written to target/vm/matrix.txt)",
        started.elapsed()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "the kernel matrix failed on {}: see the table and the details above",
            failed.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kernels, initramfs, QEMU

/// `target/vm/kernels/<package>/vmlinuz`, downloaded (not installed) on first use.
fn fetch_kernel(package: &str) -> Result<PathBuf> {
    let dir = vm_dir().join("kernels").join(package);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    let dl = vm_dir().join("download");
    fs::create_dir_all(&dl)?;
    eprintln!("vm: apt-get download {package}");
    let ok = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(&dl)
        .status()
        .context("cannot run apt-get")?
        .success();
    if !ok {
        bail!(
            "apt-get download {package} failed: Debian may have dropped that version; list the \
             current ones with `apt-cache search --names-only 'linux-image-.*-cloud-amd64$'` and \
             update KERNELS in xtask/src/vm.rs"
        );
    }
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                dl.display()
            )
        })?;
    // Only the kernel image: `dpkg-deb --fsys-tarfile` piped into tar, not the modules.
    let extract = dir.join("extract");
    fs::create_dir_all(&extract)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(&extract)
        .arg("./boot/vmlinuz-*")
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()?;
    if !dpkg.wait()?.success() || !tar.success() {
        bail!("cannot extract boot/vmlinuz-* from {}", deb.display());
    }
    let image = fs::read_dir(extract.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .next()
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))?;
    fs::rename(&image, &vmlinuz)?;
    let _ = fs::remove_dir_all(&extract);
    let _ = fs::remove_file(&deb);
    Ok(vmlinuz)
}

/// An uncompressed newc initramfs (the kernel unpacks it faster than gzip under TCG):
/// busybox, sonde and the peer without debug info, and the script as `/init`.
fn build_initramfs(sonde: &Path, peer: &Path) -> Result<PathBuf> {
    let root = vm_dir().join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: `cargo xtask setup` installs busybox-static");
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    // The script's interpreter; it installs busybox's other applets itself.
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    for (src, name) in [(sonde, "sonde"), (peer, "sonde-vm-peer")] {
        // The symbol table stays (the doctor's uprobe check may use it), DWARF goes.
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(src)
            .arg(root.join("bin").join(name)))?;
    }
    fs::write(
        root.join("init"),
        include_str!("../vm/check.sh").replace("\r\n", "\n"),
    )?;
    run(Command::new("chmod").arg("755").arg(root.join("init")))?;
    let image = vm_dir().join("initramfs.cpio");
    let out = fs::File::create(&image)?;
    let find = Command::new("find")
        .args([".", "-mindepth", "1"])
        .current_dir(&root)
        .output()?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("cannot run cpio: `cargo xtask setup` installs it")?;
    std::io::Write::write_all(&mut cpio.stdin.take().expect("piped"), &find.stdout)?;
    if !cpio.wait()?.success() {
        bail!("cpio failed to write {}", image.display());
    }
    eprintln!(
        "vm: initramfs {} ({} MiB)",
        image.display(),
        fs::metadata(&image)?.len() >> 20
    );
    Ok(image)
}

/// Runs `cmd`, echoing its output with a prefix, and kills it after `timeout`.
fn run_logged(mut cmd: Command, prefix: &str, timeout: Duration) -> Result<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut text = String::new();
    let mut in_section = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                // Progress on the terminal; the bulky sections only in the text.
                if line.starts_with("@@sonde-vm-begin") {
                    in_section = true;
                } else if line.starts_with("@@sonde-vm-end") {
                    in_section = false;
                } else if !in_section {
                    eprintln!("{prefix}| {line}");
                }
                text.push_str(&line);
                text.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                text.push_str(&format!("@@sonde-vm timeout {}\n", timeout.as_secs()));
                return Ok(text);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = child.wait()?;
    if !status.success() {
        text.push_str(&format!("@@sonde-vm exit-status {status}\n"));
    }
    Ok(text)
}

fn boot(vmlinuz: &Path, initramfs: &Path, name: &str) -> Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1"]);
    run_logged(qemu, name, VM_TIMEOUT)
}

fn on_host(sonde: &Path, peer: &Path) -> Result<String> {
    let cg2 = fs::read_to_string("/proc/self/mounts")?
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, path, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| path.to_owned())
        })
        .context("no cgroup2 mount on this host: the host row runs its peers in a cgroup")?;
    let out = vm_dir().join("host-out");
    let _ = fs::remove_dir_all(&out);
    // A free port for sonde's /readyz (other agents on this host may hold 9464).
    let mport = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut sh = Command::new("sh");
    sh.arg(workspace_root().join("xtask/vm/check.sh"))
        .env("VM_MODE", "host")
        .env("SONDE", sonde)
        .env("PEER", peer)
        .env("OUT", &out)
        .env("CG2", cg2)
        .env("MPORT", mport.to_string())
        // Not emulated: more calls per round for a steady figure.
        .env("HOOK_ITERATIONS", "50000");
    run_logged(sh, "host", HOST_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// What the script printed

#[derive(Default, Debug)]
struct Output {
    /// `@@sonde-vm KEY VALUE` lines (the last of each key).
    facts: BTreeMap<String, String>,
    /// `@@sonde-vm-begin NAME` … `@@sonde-vm-end NAME`.
    sections: BTreeMap<String, String>,
    /// Lines outside both: the kernel's console, QEMU.
    console: Vec<String>,
}

impl Output {
    fn parse(text: &str) -> Self {
        let mut o = Self::default();
        let mut section: Option<(String, String)> = None;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            // The console may put terminal escapes before a marker on its line.
            let line = line.find("@@sonde-vm").map_or(line, |i| &line[i..]);
            if let Some(name) = line.strip_prefix("@@sonde-vm-begin ") {
                section = Some((name.to_owned(), String::new()));
            } else if let Some(name) = line.strip_prefix("@@sonde-vm-end ") {
                if let Some((n, body)) = section.take()
                    && n == name
                {
                    o.sections.insert(n, body);
                }
            } else if let Some((_, body)) = &mut section {
                body.push_str(line);
                body.push('\n');
            } else if let Some(fact) = line.strip_prefix("@@sonde-vm ") {
                let (k, v) = fact.split_once(' ').unwrap_or((fact, ""));
                o.facts.insert(k.to_owned(), v.to_owned());
            } else {
                o.console.push(line.to_owned());
            }
        }
        o
    }

    fn fact(&self, k: &str) -> Option<&str> {
        self.facts.get(k).map(String::as_str)
    }

    fn json(&self, section: &str) -> Option<Value> {
        serde_json::from_str(self.sections.get(section)?.trim()).ok()
    }

    fn spans(&self) -> Vec<Value> {
        self.sections
            .get("spans.jsonl")
            .map(|s| {
                s.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Judging

#[derive(Clone, Debug, PartialEq, Eq)]
enum Cell {
    Pass(String),
    /// Not there, and not expected on this kernel.
    NotHere(String),
    Fail(String),
}

impl Cell {
    fn ok(&self) -> bool {
        !matches!(self, Self::Fail(_))
    }
}

const COLUMNS: &[&str] = &[
    "boot",
    "doctor",
    "tracepoint",
    "uprobe",
    "kprobe",
    "fentry",
    "sock_ops",
    "sk_msg",
    "capture",
    "run",
    "h1 spans",
    "inj h1",
    "h2 spans",
    "inj h2",
    "drops",
];

#[derive(Debug)]
struct Row {
    kernel: String,
    release: String,
    elapsed: Duration,
    cells: Vec<Cell>,
    notes: Vec<String>,
}

impl Row {
    fn failed(k: &Kernel, elapsed: Duration, why: String) -> Self {
        Self {
            kernel: k.name.clone(),
            release: "?".into(),
            elapsed,
            cells: COLUMNS.iter().map(|_| Cell::Fail(why.clone())).collect(),
            notes: vec![why],
        }
    }

    fn passed(&self) -> bool {
        self.cells.iter().all(Cell::ok)
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?
        .get("value")?
        .get("stringValue")?
        .as_str()
}

/// The request path: `url.path` on server spans, the path of `url.full` on client spans.
fn span_path(span: &Value) -> Option<&str> {
    attr(span, "url.path").or_else(|| {
        let full = attr(span, "url.full")?;
        let rest = full.split_once("://").map_or(full, |(_, r)| r);
        rest.find('/').map(|i| &rest[i..])
    })
}

fn nanos(span: &Value, key: &str) -> u64 {
    span[key].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The spans of `proto` ("h1" or "h2", by `network.protocol.version`) that are not one of its
/// exchange's two: the peers make one request per protocol, so any other span is a split or
/// doubled exchange (for example a request and its response seen as two half-connections).
fn strays(spans: &[Value], proto: &str) -> Option<String> {
    let of_proto: Vec<&Value> = spans
        .iter()
        .filter(|s| (attr(s, "network.protocol.version") == Some("2")) == (proto == "h2"))
        .collect();
    (of_proto.len() != 2).then(|| {
        let names: Vec<String> = of_proto
            .iter()
            .map(|s| {
                format!(
                    "{} (kind {}, path {:?})",
                    s["name"],
                    s["kind"],
                    span_path(s)
                )
            })
            .collect();
        format!(
            "{} {proto} spans, want 2 (server and client): {}",
            of_proto.len(),
            names.join(", ")
        )
    })
}

/// OTLP span kinds.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

/// The server and client spans of `path`, or why not.
fn span_pair<'a>(spans: &'a [Value], path: &str) -> Result<(&'a Value, &'a Value), String> {
    let of_kind = |kind: i64| -> Result<&Value, String> {
        let found: Vec<&Value> = spans
            .iter()
            .filter(|s| span_path(s) == Some(path) && s["kind"] == kind)
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            many => Err(format!(
                "{} {} spans of {path} (want 1)",
                many.len(),
                if kind == SERVER { "server" } else { "client" }
            )),
        }
    };
    Ok((of_kind(SERVER)?, of_kind(CLIENT)?))
}

/// Timing: each span ends after it starts, the server's starts after the client's (one
/// clock, 1 ms of slack) and, with `nested`, ends before it, and both lie within the script's
/// run by the guest's wall clock.
///
fn timing(
    server: &Value,
    client: &Value,
    window: (u64, u64),
    nested: bool,
) -> Result<String, String> {
    let (ss, se) = (
        nanos(server, "startTimeUnixNano"),
        nanos(server, "endTimeUnixNano"),
    );
    let (cs, ce) = (
        nanos(client, "startTimeUnixNano"),
        nanos(client, "endTimeUnixNano"),
    );
    let slack = 1_000_000;
    let (from, to) = (window.0 * 1_000_000_000, (window.1 + 1) * 1_000_000_000);
    if ss > se || cs > ce {
        return Err(format!(
            "a span ends before it starts: server {ss}..{se}, client {cs}..{ce}"
        ));
    }
    if ss + slack < cs {
        return Err(format!(
            "the server span {ss}..{se} starts before the client span {cs}..{ce}"
        ));
    }
    if nested && se > ce + slack {
        return Err(format!(
            "the server span {ss}..{se} ends after the client span {cs}..{ce}"
        ));
    }
    if cs < from || ce > to {
        return Err(format!(
            "the client span {cs}..{ce} is outside the run ({from}..{to})"
        ));
    }
    Ok(format!(
        "client {:.1} ms, server {:.1} ms",
        (ce - cs) as f64 / 1e6,
        (se - ss) as f64 / 1e6
    ))
}

/// The server span continues the client's trace, and the server got the client's context on
/// the wire.
fn injection(server: &Value, client: &Value, server_log: &str, proto: &str, path: &str) -> Cell {
    let (trace, span) = (
        client["traceId"].as_str().unwrap_or(""),
        client["spanId"].as_str().unwrap_or(""),
    );
    let prefix = format!("{proto} path={path} traceparent=");
    let Some(wire) = server_log.lines().find_map(|l| l.strip_prefix(&prefix)) else {
        return Cell::Fail(format!("the server logged no request {path}"));
    };
    let want = format!("00-{trace}-{span}-");
    if !wire.starts_with(&want) {
        return Cell::Fail(format!(
            "the server received traceparent {wire:?}, want {want}.."
        ));
    }
    if server["traceId"] != client["traceId"] || server["parentSpanId"] != client["spanId"] {
        return Cell::Fail(format!(
            "server span trace {} parent {} is not the client's trace {trace} span {span}",
            server["traceId"], server["parentSpanId"]
        ));
    }
    Cell::Pass(format!("trace {trace}"))
}

/// The doctor's check `name` as a cell; `optional`: n/a is fine on this kernel.
fn doctor_cell(doctor: Option<&Value>, name: &str, optional: bool) -> Cell {
    let Some(checks) = doctor.and_then(|d| d["checks"].as_array()) else {
        return Cell::Fail("no doctor report".into());
    };
    let Some(c) = checks.iter().find(|c| c["name"] == name) else {
        return Cell::Fail(format!("the doctor reported no check {name:?}"));
    };
    let detail = c["detail"].as_str().unwrap_or("").to_owned();
    match c["status"].as_str() {
        Some("ok") => Cell::Pass(detail),
        Some("unavailable") if optional => Cell::NotHere(detail),
        s => Cell::Fail(format!("{}: {detail}", s.unwrap_or("?"))),
    }
}

fn judge(k: &Kernel, o: &Output, elapsed: Duration) -> Row {
    let mut notes = Vec::new();
    let release = o.fact("kernel").unwrap_or("?").to_owned();
    let booted = o.fact("done").is_some();
    let boot = if booted {
        Cell::Pass(release.clone())
    } else {
        let tail: Vec<&String> = o.console.iter().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
        Cell::Fail(format!(
            "the script did not finish{}; last console lines:\n{}",
            o.fact("timeout")
                .map(|t| format!(" (killed after {t} s)"))
                .unwrap_or_default(),
            tail.join("\n")
        ))
    };
    let doctor = o.json("doctor.json");
    let doctor_exit = match o.fact("doctor-exit") {
        Some("0") => Cell::Pass("exit 0".into()),
        e => Cell::Fail(format!(
            "sonde doctor exit {}; {}",
            e.unwrap_or("?"),
            o.sections.get("doctor.err").map(|s| s.trim()).unwrap_or("")
        )),
    };
    let accel_optional = !k.expects_accelerators();
    let capture = match (
        doctor_cell(doctor.as_ref(), "capture programs", false),
        doctor_cell(doctor.as_ref(), "TLS programs", false),
    ) {
        (Cell::Pass(a), Cell::Pass(_)) => Cell::Pass(a),
        (Cell::Pass(_), b) => b,
        (a, _) => a,
    };
    let run = match o.fact("run-exit") {
        Some("0") if o.fact("leftover").is_some() => Cell::Fail(format!(
            "processes left in the test's cgroup: {}",
            o.fact("leftover").unwrap_or("")
        )),
        Some("0") => Cell::Pass("exit 0".into()),
        e => {
            let err = o
                .sections
                .get("sonde.err")
                .map(String::as_str)
                .unwrap_or("");
            let tail: Vec<&str> = err.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Cell::Fail(format!(
                "sonde run exit {} (ready: {}); its last stderr lines:\n{}",
                e.unwrap_or("?"),
                o.fact("ready").unwrap_or("?"),
                tail.join("\n")
            ))
        }
    };
    let window = (
        o.fact("start").and_then(|s| s.parse().ok()).unwrap_or(0),
        o.fact("done")
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX / 2_000_000_000),
    );
    let spans = o.spans();
    let server_log = o.sections.get("server.log").cloned().unwrap_or_default();
    let mut protocol = |proto: &str, path: &str| -> (Cell, Cell) {
        match span_pair(&spans, path) {
            Ok((server, client)) => {
                let t = match (timing(server, client, window, true), strays(&spans, proto)) {
                    (Ok(t), None) => Cell::Pass(t),
                    (Err(e), _) | (Ok(_), Some(e)) => Cell::Fail(e),
                };
                notes.push(format!(
                    "{path}: client span {} -> server span {} (parent {})",
                    client["spanId"], server["spanId"], server["parentSpanId"]
                ));
                (t, injection(server, client, &server_log, proto, path))
            }
            Err(e) => {
                let why = format!(
                    "{e}; {} spans in all; clients: {}",
                    spans.len(),
                    o.sections
                        .get("clients.log")
                        .map(|s| s.trim().replace('\n', "; "))
                        .unwrap_or_default()
                );
                (Cell::Fail(why.clone()), Cell::Fail(why))
            }
        }
    };
    let (h1, inj1) = protocol("h1", "/vm-h1");
    let (h2, inj2) = protocol("h2", "/vm-h2");
    let summary = o.json("summary.json");
    let drops = match &summary {
        None => Cell::Fail("no summary (sonde run --summary-json)".into()),
        Some(s) => {
            let mut lost = Vec::new();
            for c in [
                "ringbuf_full_events",
                "args_stash_full",
                "conn_table_full",
                "tail_call_failed",
            ] {
                let n = s["kernel"][c].as_u64().unwrap_or(0);
                if n != 0 {
                    lost.push(format!("kernel.{c} {n}"));
                }
            }
            if let Some(d) = s["export"]["dropped"].as_object() {
                for (r, n) in d {
                    if n.as_u64().unwrap_or(0) != 0 {
                        lost.push(format!("export.dropped.{r} {n}"));
                    }
                }
            }
            if lost.is_empty() {
                Cell::Pass(format!(
                    "{} data events, 0 lost",
                    s["kernel"]["data_events"].as_u64().unwrap_or(0)
                ))
            } else {
                Cell::Fail(lost.join(", "))
            }
        }
    };
    if let Some(p) = summary.as_ref().and_then(|s| s["programs"].as_array()) {
        notes.push(program_stats(p));
    }
    notes.push(hook_cost(o));
    let cells = vec![
        boot,
        doctor_exit,
        doctor_cell(doctor.as_ref(), "tracepoint programs", false),
        doctor_cell(doctor.as_ref(), "uprobe programs", false),
        doctor_cell(doctor.as_ref(), "kprobe programs", accel_optional),
        doctor_cell(doctor.as_ref(), "fentry programs", accel_optional),
        doctor_cell(doctor.as_ref(), "sock_ops programs", false),
        doctor_cell(doctor.as_ref(), "sk_msg programs", false),
        capture,
        run,
        h1,
        inj1,
        h2,
        inj2,
        drops,
    ];
    Row {
        kernel: k.name.clone(),
        release,
        elapsed,
        cells,
        notes,
    }
}

/// BPF run-time statistics of the run (zero unless `kernel.bpf_stats_enabled`: the VMs turn
/// it on, the host row leaves the host's setting alone).
fn program_stats(programs: &[Value]) -> String {
    let mut p: Vec<(String, u64, u64)> = programs
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let total: u64 = p.iter().map(|x| x.1).sum();
    let runs: u64 = p.iter().map(|x| x.2).sum();
    if runs == 0 {
        return "BPF run time: not measured (kernel.bpf_stats_enabled is 0)".into();
    }
    p.sort_by_key(|x| std::cmp::Reverse(x.1));
    let top: Vec<String> = p
        .iter()
        .take(4)
        .map(|(n, t, c)| format!("{n} {t} ns/{c} runs"))
        .collect();
    format!(
        "BPF run time during the run: {total} ns in {runs} program runs ({} ns a run); top: {}",
        total / runs,
        top.join(", ")
    )
}

/// `sonde doctor --hook-cost` on that kernel, in one line: per hook type the time it adds to
/// a send (and the part inside the programs). Informational: the cells judge, this informs.
fn hook_cost(o: &Output) -> String {
    let Some(cost) = o.json("hookcost.json") else {
        return format!(
            "hook cost: not measured (exit {}): {}",
            o.fact("hookcost-exit").unwrap_or("?"),
            o.sections
                .get("hookcost.err")
                .map(|s| s.trim())
                .unwrap_or("")
        );
    };
    let ns = |v: &Value| v.as_f64().map(|v| format!("{v:.0}"));
    let rows = cost["rows"].as_array().cloned().unwrap_or_default();
    let base = rows
        .iter()
        .find(|r| r["hook"] == "none")
        .and_then(|r| ns(&r["ns_per_call"]))
        .unwrap_or_else(|| "?".into());
    let hooks: Vec<String> = rows
        .iter()
        .filter(|r| r["hook"] != "none")
        .map(|r| {
            let name = r["hook"].as_str().unwrap_or("?");
            match r["unavailable"].as_str() {
                Some(why) => format!(
                    "{name} unavailable ({})",
                    excerpt(why).lines().next().unwrap_or("")
                ),
                None => format!(
                    "{name} +{} ns ({} in programs)",
                    ns(&r["added_ns"]).unwrap_or_else(|| "?".into()),
                    ns(&r["bpf_ns"]).unwrap_or_else(|| "?".into())
                ),
            }
        })
        .collect();
    format!(
        "hook cost per send (send + recv {base} ns untraced, median of {} x {}): {}",
        cost["rounds"],
        cost["iterations"],
        hooks.join(", ")
    )
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let w0 = 8;
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.len().max(4)).collect();
    widths.iter_mut().for_each(|w| *w = (*w).max(4));
    let _ = write!(s, "{:<w0$} {:>7}", "kernel", "time");
    for (c, w) in COLUMNS.iter().zip(&widths) {
        let _ = write!(s, " | {c:^w$}");
    }
    s.push('\n');
    for r in rows {
        let _ = write!(s, "{:<w0$} {:>6.0}s", r.kernel, r.elapsed.as_secs_f64());
        for (c, w) in r.cells.iter().zip(&widths) {
            let t = match c {
                Cell::Pass(_) => "ok",
                Cell::NotHere(_) => "n/a",
                Cell::Fail(_) => "FAIL",
            };
            let _ = write!(s, " | {t:^w$}");
        }
        s.push('\n');
    }
    s.push_str(
        "\nn/a: unavailable on that kernel and not expected there (kprobe, fentry on the host)\n",
    );
    for r in rows {
        let _ = writeln!(s, "\n{} (Linux {}):", r.kernel, r.release);
        for (c, name) in r.cells.iter().zip(COLUMNS) {
            match c {
                Cell::Fail(why) => {
                    let why = excerpt(why);
                    let _ = writeln!(s, "  FAIL {name}: {}", why.replace('\n', "\n       "));
                }
                Cell::NotHere(why) => {
                    let _ = writeln!(s, "  n/a  {name}: {why}");
                }
                Cell::Pass(what)
                    if !what.is_empty()
                        && matches!(*name, "h1 spans" | "h2 spans" | "drops" | "capture") =>
                {
                    let _ = writeln!(s, "  ok   {name}: {what}");
                }
                Cell::Pass(_) => {}
            }
        }
        for n in &r.notes {
            let _ = writeln!(s, "  note {n}");
        }
    }
    s
}

/// A long detail (a verifier log) cut to its head and its end, where the verifier says why.
fn excerpt(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 40 {
        return text.to_owned();
    }
    format!(
        "{}\n[... {} lines of the log left out ...]\n{}",
        lines[..6].join("\n"),
        lines.len() - 36,
        lines[lines.len() - 30..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    fn span(kind: i64, span: &str, parent: &str, path: &str, t: (u64, u64)) -> String {
        let (key, value) = if kind == SERVER {
            ("url.path", path.to_owned())
        } else {
            ("url.full", format!("http://127.0.0.1:4000{path}"))
        };
        let version = if path.contains("h2") { "2" } else { "1.1" };
        serde_json::json!({
            "traceId": TRACE, "spanId": span, "parentSpanId": parent, "kind": kind,
            "startTimeUnixNano": t.0.to_string(), "endTimeUnixNano": t.1.to_string(),
            "attributes": [
                {"key": key, "value": {"stringValue": value}},
                {"key": "network.protocol.version", "value": {"stringValue": version}},
            ],
        })
        .to_string()
    }

    /// What the script prints on a kernel where everything works; `wire` is the traceparent
    /// the server logs for /vm-h2.
    fn output(wire: &str) -> String {
        let s = 1_800_000_000_000_000_000u64;
        let checks: Vec<Value> =
            [
                "tracepoint programs",
                "uprobe programs",
                "sock_ops programs",
                "sk_msg programs",
                "capture programs",
                "TLS programs",
            ]
            .iter()
            .map(|n| serde_json::json!({"name": n, "status": "ok", "detail": "loads"}))
            .chain(["kprobe programs", "fentry programs"].iter().map(
                |n| serde_json::json!({"name": n, "status": "unavailable", "detail": "EPERM"}),
            ))
            .collect();
        let doctor = serde_json::json!({ "checks": checks });
        let spans = [
            span(
                CLIENT,
                "00f067aa0ba902b7",
                "",
                "/vm-h1",
                (s + 1000, s + 9_000_000),
            ),
            span(
                SERVER,
                "1111111111111111",
                "00f067aa0ba902b7",
                "/vm-h1",
                (s + 2000, s + 8_000_000),
            ),
            span(
                CLIENT,
                "2222222222222222",
                "",
                "/vm-h2",
                (s + 1000, s + 9_000_000),
            ),
            span(
                SERVER,
                "3333333333333333",
                "2222222222222222",
                "/vm-h2",
                (s + 2000, s + 8_000_000),
            ),
        ];
        format!(
            "\x1b[2J@@sonde-vm kernel 6.18.0\n@@sonde-vm start 1800000000\n\
             @@sonde-vm doctor-exit 0\n@@sonde-vm-begin doctor.json\n{doctor}\n@@sonde-vm-end doctor.json\n\
             @@sonde-vm run-exit 0\n\
             @@sonde-vm-begin server.log\nh1 path=/vm-h1 traceparent=00-{TRACE}-00f067aa0ba902b7-01\n\
             h2 path=/vm-h2 traceparent={wire}\n@@sonde-vm-end server.log\n\
             @@sonde-vm-begin spans.jsonl\n{spans}\n@@sonde-vm-end spans.jsonl\n\
             @@sonde-vm-begin summary.json\n{{\"kernel\": {{\"data_events\": 12, \"ringbuf_full_events\": 0}}, \
             \"export\": {{\"dropped\": {{}}}}, \"programs\": []}}\n@@sonde-vm-end summary.json\n\
             @@sonde-vm done 1800000001\n",
            spans = spans.join("\n"),
        )
    }

    fn host() -> Kernel {
        Kernel {
            name: "host".into(),
            package: None,
        }
    }

    #[test]
    fn a_kernel_where_everything_works_passes_every_cell() {
        let good = format!("00-{TRACE}-2222222222222222-01");
        let row = judge(&host(), &Output::parse(&output(&good)), Duration::ZERO);
        assert_eq!(row.release, "6.18.0");
        let failed: Vec<_> = row.cells.iter().filter(|c| !c.ok()).collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            matches!(row.cells[4], Cell::NotHere(_)),
            "kprobe is n/a on the host"
        );
    }

    #[test]
    fn a_missing_injection_or_accelerator_fails_its_cell() {
        let row = judge(&host(), &Output::parse(&output("-")), Duration::ZERO);
        assert!(row.cells[COLUMNS.iter().position(|c| *c == "inj h1").unwrap()].ok());
        let inj2 = &row.cells[COLUMNS.iter().position(|c| *c == "inj h2").unwrap()];
        assert!(matches!(inj2, Cell::Fail(w) if w.contains("received traceparent \"-\"")));
        // On Debian's kernels kprobe and fentry must work.
        let vm = Kernel {
            name: "6.1".into(),
            package: Some("linux-image-x"),
        };
        let good = format!("00-{TRACE}-2222222222222222-01");
        let row = judge(&vm, &Output::parse(&output(&good)), Duration::ZERO);
        assert!(matches!(&row.cells[4], Cell::Fail(w) if w.contains("EPERM")));
        assert!(!row.passed());
        assert!(render(&[row]).contains("FAIL kprobe"));
    }

    #[test]
    fn a_span_beyond_the_two_of_an_exchange_fails_its_protocol() {
        // A request and its response seen as two half-connections: the client's request
        // span and an `HTTP` span without a request, beside the pair.
        let good = format!("00-{TRACE}-2222222222222222-01");
        let stray = span(CLIENT, "4444444444444444", "", "/other-h2", (0, 1));
        let out = output(&good).replace(
            "@@sonde-vm-end spans.jsonl",
            &format!("{stray}\n@@sonde-vm-end spans.jsonl"),
        );
        let row = judge(&host(), &Output::parse(&out), Duration::ZERO);
        let h2 = &row.cells[COLUMNS.iter().position(|c| *c == "h2 spans").unwrap()];
        assert!(
            matches!(h2, Cell::Fail(w) if w.contains("3 h2 spans, want 2")),
            "{h2:?}"
        );
        assert!(row.cells[COLUMNS.iter().position(|c| *c == "h1 spans").unwrap()].ok());
    }

    #[test]
    fn a_server_span_outside_its_client_span_fails_timing() {
        let c = serde_json::json!({"startTimeUnixNano": "2000", "endTimeUnixNano": "3000"});
        let s = serde_json::json!({"startTimeUnixNano": "1000", "endTimeUnixNano": "2500"});
        assert!(timing(&s, &c, (0, 1), true).is_ok(), "within 1 ms of slack");
        let s = serde_json::json!({"startTimeUnixNano": "1000", "endTimeUnixNano": "9000000"});
        assert!(timing(&s, &c, (0, 1), true).is_err());
        assert!(timing(&s, &c, (0, 1), false).is_ok(), "not held to nesting");
        let late =
            serde_json::json!({"startTimeUnixNano": "5000000", "endTimeUnixNano": "6000000"});
        assert!(timing(&late, &c, (0, 1), false).is_ok());
        let early = serde_json::json!({"startTimeUnixNano": "0", "endTimeUnixNano": "3000000"});
        let c = serde_json::json!({"startTimeUnixNano": "2000000", "endTimeUnixNano": "3000000"});
        assert!(
            timing(&early, &c, (0, 1), false).is_err(),
            "served before it was sent"
        );
        let c = serde_json::json!({"startTimeUnixNano": "9000", "endTimeUnixNano": "3000"});
        assert!(timing(&s, &c, (0, 1), true).is_err());
    }
}
