//! The command line: `sonde run`, `sonde doctor`.

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use sonde_proto::{Decision, MAX_CAPTURE};

use crate::{
    capture::{Capture, CaptureConfig},
    cgroup,
    debug_view::DebugView,
    doctor,
    probes::{FilterSpec, ProbeConfig},
};

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Zero-code distributed tracing with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace TCP traffic of processes on this host until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Check what this host offers and what sonde will use; exits non-zero if tracing cannot work.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Trace only this process (and children it forks later). Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only processes in this cgroup v2 (path under the cgroup2 mount, or absolute).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Never trace this process. Repeatable.
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Bytes captured per read or write (0 to 16384).
    #[arg(long, default_value_t = sonde_proto::DEFAULT_CAPTURE, env = "SONDE_CAPTURE_BYTES")]
    pub capture_bytes: u32,
    /// Kernel ring buffer size in bytes (a power of two).
    #[arg(long, default_value_t = 16 * 1024 * 1024, env = "SONDE_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: u32,
    /// Payload bytes shown per chunk in the console view.
    #[arg(long, default_value_t = 96)]
    pub preview_bytes: usize,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

/// Errors in command-line values: what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("--capture-bytes {0} is above {MAX_CAPTURE}; choose 0..={MAX_CAPTURE}")]
    CaptureBytes(u32),
    #[error("--cgroup {arg}: {why}")]
    Cgroup { arg: String, why: String },
    #[error("--duration {0} must be a positive number of seconds")]
    Duration(f64),
}

impl RunArgs {
    pub fn capture_config(&self) -> Result<CaptureConfig, ArgError> {
        if self.capture_bytes as usize > MAX_CAPTURE {
            return Err(ArgError::CaptureBytes(self.capture_bytes));
        }
        if let Some(d) = self.duration
            && !(d > 0.0 && d.is_finite())
        {
            return Err(ArgError::Duration(d));
        }
        let mut cgroups = Vec::new();
        for arg in &self.cgroups {
            let dir = cgroup::resolve(arg).map_err(|why| ArgError::Cgroup {
                arg: arg.clone(),
                why,
            })?;
            let id = cgroup::id_of(&dir).map_err(|e| ArgError::Cgroup {
                arg: arg.clone(),
                why: e.to_string(),
            })?;
            cgroups.push((id, Decision::Trace));
        }
        let mut pids: Vec<(u32, Decision)> =
            self.pids.iter().map(|&p| (p, Decision::Trace)).collect();
        pids.extend(self.exclude_pids.iter().map(|&p| (p, Decision::Ignore)));
        let selective = !self.pids.is_empty() || !self.cgroups.is_empty();
        Ok(CaptureConfig {
            probes: ProbeConfig {
                capture_bytes: self.capture_bytes,
                ring_buffer_bytes: self.ring_buffer_bytes,
                filter: FilterSpec {
                    default: if selective {
                        Decision::Ignore
                    } else {
                        Decision::Trace
                    },
                    pids,
                    cgroups,
                },
                ..ProbeConfig::default()
            },
            ..CaptureConfig::default()
        })
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Doctor { json } => {
            let report = doctor::run();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.capture_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(2);
        }
    };
    let view = DebugView::new(io::stdout(), args.preview_bytes);
    let mut handle = Capture::spawn(config, view);
    if let Err(e) = handle.wait_ready() {
        eprintln!("sonde: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "sonde: tracing {}; Ctrl-C to stop",
        if args.pids.is_empty() && args.cgroups.is_empty() {
            "every process but sonde".to_string()
        } else {
            format!("pids {:?} cgroups {:?}", args.pids, args.cgroups)
        }
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sleep = async {
            match args.duration {
                Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            _ = sleep => {}
        }
    });
    match handle.stop() {
        Ok((_, summary)) => {
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "sonde: stopped; totals:");
            for line in summary.lines() {
                let _ = writeln!(err, "  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::FAILURE
        }
    }
}
