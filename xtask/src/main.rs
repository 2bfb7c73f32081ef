//! Project tasks: `cargo xtask <setup|test|run|doctor|bench|soak|fuzz|vm-test>`.
//!
//! Everything a fresh machine needs is installed by `setup`, idempotently; the other tasks call
//! it first, so the README's two commands work on a machine that has nothing but Rust.

mod bench;
mod cycles;
mod fuzz;
mod setup;
mod soak;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sonde's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (Debian packages, rust-src, bpf-linker, test
    /// peers) and mount tracefs; quick when everything is there.
    Setup,
    /// Set up, then run every check and test: fmt, clippy, unit tests, privileged tests.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build sonde (release) and run it; arguments go to `sonde` (default: `run`).
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build sonde and run `sonde doctor`.
    Doctor,
    /// Fail if modules of one crate import each other in a cycle (part of `test`).
    Cycles,
    /// Run each cargo-fuzz target of the protocol parsers briefly (installs cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Only this target (`http1`, `h2_conn`, `hpack`).
        #[arg(long)]
        target: Option<String>,
    },
    /// Set up, build sonde and measure its overhead against no tracing and against the
    /// OpenTelemetry Python SDK; writes target/bench/report.{md,json}.
    Bench {
        #[arg(long, value_enum, default_value = "quick")]
        mode: bench::Mode,
        /// Benchmark the debug build instead of the release build (for smoke runs).
        #[arg(long)]
        debug: bool,
        /// Only these targets, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::TargetKind>,
    },
    /// Set up, build sonde (release) and trace mixed traffic for a long time (HTTP/1.1, h2c,
    /// gRPC, TLS, short-lived processes, connection churn, collector restarts): agent RSS, fds,
    /// export accounting and BPF map entries over time; writes target/soak/report.{md,json}.
    /// Not part of `test` (CI).
    Soak {
        /// Length of the run under load.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        sample_seconds: u64,
        /// How long the collector stays down at each restart (sonde's export timeout is 30 s).
        #[arg(long, default_value_t = 10)]
        collector_down_seconds: u64,
        /// Fail when an LRU map grows after the warm-up too (by default its growth and the
        /// time it takes to fill are reported: sonde lets stale LRU entries age out).
        #[arg(long)]
        strict_lru: bool,
    },
    /// Set up, then run sonde's kernel matrix: the same static binary and checks on Debian's
    /// 6.1 and 6.12 kernels under QEMU and on this machine's kernel; prints kernel × check.
    VmTest {
        #[arg(long, value_enum, default_value = "all")]
        kernel: vm::Which,
    },
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build_sonde() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--locked", "-p", "sonde"]))?;
    Ok(workspace_root().join("target/release/sonde"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.task {
        Task::Setup => setup::setup().map(|_| ()),
        Task::Test { no_lint, args } => test(no_lint, &args),
        Task::Run { args } => setup::setup().and_then(|_| {
            let sonde = build_sonde()?;
            // The console lines, and the trace view at http://127.0.0.1:9465/.
            let args = if args.is_empty() {
                vec!["run".to_string(), "--ui".to_string()]
            } else {
                args
            };
            run(Command::new(sonde).args(&args))
        }),
        Task::Bench { mode, debug, only } => setup::setup().and_then(|_| {
            let sonde = if debug {
                run(cargo().args(["build", "--locked", "-p", "sonde"]))?;
                workspace_root().join("target/debug/sonde")
            } else {
                build_sonde()?
            };
            bench::bench(mode, &sonde, &only)
        }),
        Task::Soak {
            minutes,
            sample_seconds,
            collector_down_seconds,
            strict_lru,
        } => setup::setup().and_then(|_| {
            let sonde = build_sonde()?;
            soak::soak(
                &soak::Options {
                    minutes,
                    sample_seconds,
                    collector_down_seconds,
                    strict_lru,
                },
                &sonde,
            )
        }),
        Task::Fuzz { seconds, target } => {
            setup::setup().and_then(|_| fuzz::fuzz(seconds, target.as_deref()))
        }
        Task::Cycles => cycles::check(&workspace_root()),
        Task::VmTest { kernel } => setup::setup().and_then(|_| vm::vm_test(kernel)),
        Task::Doctor => setup::setup().and_then(|_| {
            let sonde = build_sonde()?;
            run(Command::new(sonde).arg("doctor"))
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(no_lint: bool, extra: &[String]) -> Result<()> {
    let started = Instant::now();
    setup::setup()?;
    if !no_lint {
        step("cargo fmt --check");
        run(cargo().args(["fmt", "--all", "--check"]))?;
        step("cargo clippy");
        // The default members: every host crate (agent-ebpf only builds for the BPF target).
        run(cargo().args([
            "clippy",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
        step("import cycles between modules");
        cycles::check(&workspace_root())?;
    }
    // Privileged tests load kernel programs: they need root, which CI and our machines have.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the test suite loads eBPF programs and must run as root");
    }
    // The end-to-end tests run the `sonde` binary itself.
    step("cargo build (the sonde binary the end-to-end tests run)");
    run(cargo().args(["build", "--locked", "-p", "sonde"]))?;
    // The container image test builds the agent image from the Dockerfile: a static binary.
    step("cargo build --target x86_64-unknown-linux-musl (the binary of the agent image)");
    run(cargo().args([
        "build",
        "--locked",
        "-p",
        "sonde",
        "--target",
        setup::MUSL_TARGET,
    ]))?;
    // The same static binary on other kernels (QEMU) and on this one: kernel × check.
    step("kernel matrix (cargo xtask vm-test --kernel all)");
    vm::vm_test(vm::Which::All)?;
    step("cargo test (unit and privileged tests)");
    let mut cmd = cargo();
    cmd.args(["test", "--locked"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    run(&mut cmd)?;
    // Every fuzz target of the protocol parsers, briefly: a crash fails the suite (`cargo
    // xtask fuzz --seconds N` runs them longer).
    step("fuzz smoke run (every target of protocol/fuzz, 10 s each)");
    fuzz::fuzz(10, None)?;
    // The benchmark harness must keep working: a short run on the debug build (its numbers
    // mean nothing; `cargo xtask bench` measures the release build).
    step("benchmark smoke run");
    bench::bench(
        bench::Mode::Smoke,
        &workspace_root().join("target/debug/sonde"),
        &[],
    )?;
    eprintln!("xtask: all tests passed in {:.0?}", started.elapsed());
    Ok(())
}

pub fn step(what: &str) {
    eprintln!("\nxtask: ==> {what}");
}
