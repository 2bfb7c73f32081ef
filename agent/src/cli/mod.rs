//! The command line: one module per command (`run`, `replay`, `targets`; `doctor` lives in
//! [`crate::doctor`]), the arguments in [`args`], and their resolution into one [`RunPlan`] in
//! [`plan`].

mod args;
mod plan;
mod replay;
mod run;
mod targets;
mod ui;

use std::{io, process::ExitCode};

use clap::{Parser, Subcommand};

pub use self::{
    args::{ReplayArgs, ReplaySide, RunArgs},
    plan::{ArgError, RunPlan},
    targets::render_targets,
};
use crate::doctor;

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
    Run(Box<RunArgs>),
    /// Turn a pcap or pcapng capture into spans, without root.
    Replay(ReplayArgs),
    /// Which pods a running `sonde run --kubernetes` traces, and why (asks its /targets).
    Targets {
        /// The agent's metrics address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        address: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check what this host offers and what sonde will use; exits non-zero if tracing cannot work.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Instead of the checks, measure what one traced send costs on this kernel through
        /// each hook type (syscall tracepoints, fentry + fexit, fexit), on a loopback TCP pair.
        #[arg(long)]
        hook_cost: bool,
        /// Calls per hook and round for --hook-cost.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 20_000,
            requires = "hook_cost"
        )]
        iterations: u64,
        /// Rounds for --hook-cost (the figure is each hook's median).
        #[arg(long, value_name = "N", default_value_t = 5, requires = "hook_cost")]
        rounds: u32,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Replay(args) => replay::replay(args),
        Command::Targets { address, json } => targets::targets(&address, json),
        Command::Doctor {
            json,
            hook_cost: true,
            iterations,
            rounds,
        } => hook_cost(json, iterations, rounds),
        Command::Doctor { json, .. } => {
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

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn hook_cost(json: bool, iterations: u64, rounds: u32) -> ExitCode {
    match crate::probes::hookcost::measure(iterations.max(1), rounds.max(1)) {
        Ok(cost) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&cost).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(cost) => {
            print!("{}", cost.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sonde doctor --hook-cost: {}", run::chain(&e));
            ExitCode::FAILURE
        }
    }
}
