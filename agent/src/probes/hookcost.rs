//! `sonde doctor --hook-cost`: what one traced syscall costs on this kernel through each hook
//! type sonde could use (the programs are in `agent-ebpf/src/hookcost.rs`): syscall tracepoints
//! (sonde's path), fentry + fexit on `tcp_sendmsg`, and fexit alone.
//!
//! The measure is a loop of 64-byte `send` + `recv` on a loopback TCP pair made here, timed
//! with no program attached and with each hook in turn, rounds interleaved so that a slow
//! moment of the machine spreads over all hooks; the figure is each hook's median. With BPF
//! run-time statistics on (turned on for the measurement when the kernel allows), the time
//! inside the programs is given too; the rest of the added time is the hook's dispatch.

use std::{
    io,
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::HashMap,
    programs::{FEntry, FExit, Program, TracePoint},
};
use serde::Serialize;

use super::{EBPF_OBJECT, support::chain};

/// One hook type's figures.
#[derive(Clone, Debug, Serialize)]
pub struct HookRow {
    /// `none`, `tracepoints`, `fentry+fexit` or `fexit`.
    pub hook: &'static str,
    /// Programs run per send.
    pub programs: usize,
    /// Median wall time of one send + recv, ns.
    pub ns_per_call: Option<f64>,
    /// `ns_per_call` minus the same without programs.
    pub added_ns: Option<f64>,
    /// Time inside the programs per send, ns (BPF run-time statistics).
    pub bpf_ns: Option<f64>,
    /// Why the hook could not be measured here.
    pub unavailable: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HookCost {
    pub kernel: String,
    pub iterations: u64,
    pub rounds: u32,
    /// Whether BPF run-time statistics could be turned on.
    pub bpf_stats: bool,
    pub rows: Vec<HookRow>,
}

impl HookCost {
    pub fn render(&self) -> String {
        let f = |v: Option<f64>, sign: bool| match v {
            Some(v) if sign => format!("{v:+.0}"),
            Some(v) => format!("{v:.0}"),
            None => "-".into(),
        };
        let mut out = format!(
            "Hook cost on {}: one 64-byte send + recv over loopback TCP, the send hooked; \
             median of {} rounds of {} calls\n\n",
            self.kernel, self.rounds, self.iterations
        );
        out.push_str(&format!(
            "{:<14} {:>8} {:>12} {:>9} {:>14}\n",
            "hook", "programs", "ns per call", "added", "ns in programs"
        ));
        for r in &self.rows {
            match &r.unavailable {
                Some(why) => out.push_str(&format!("{:<14} unavailable: {why}\n", r.hook)),
                None => out.push_str(&format!(
                    "{:<14} {:>8} {:>12} {:>9} {:>14}\n",
                    r.hook,
                    r.programs,
                    f(r.ns_per_call, false),
                    f(r.added_ns, true),
                    f(r.bpf_ns, false),
                )),
            }
        }
        if !self.bpf_stats {
            out.push_str(
                "\n(BPF run-time statistics could not be turned on: no time in programs)\n",
            );
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookCostError {
    #[error("cannot load sonde's kernel object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the measured process map: {0}")]
    Map(#[source] aya::maps::MapError),
    #[error("loopback TCP pair: {0}")]
    Socket(#[source] io::Error),
}

const TP: [(&str, &str); 2] = [
    ("hookcost_tp_enter", "sys_enter_sendto"),
    ("hookcost_tp_exit", "sys_exit_sendto"),
];
const FENTRY_FEXIT: [&str; 2] = ["hookcost_fentry", "hookcost_fexit"];
const FEXIT_ONLY: &str = "hookcost_fexit_only";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    None,
    Tracepoints,
    FentryFexit,
    Fexit,
}

impl Hook {
    const ALL: [Hook; 4] = [
        Hook::None,
        Hook::Tracepoints,
        Hook::FentryFexit,
        Hook::Fexit,
    ];

    fn name(self) -> &'static str {
        match self {
            Hook::None => "none",
            Hook::Tracepoints => "tracepoints",
            Hook::FentryFexit => "fentry+fexit",
            Hook::Fexit => "fexit",
        }
    }

    fn programs(self) -> &'static [&'static str] {
        match self {
            Hook::None => &[],
            Hook::Tracepoints => &[TP[0].0, TP[1].0],
            Hook::FentryFexit => &FENTRY_FEXIT,
            Hook::Fexit => &[FEXIT_ONLY],
        }
    }
}

fn program_error(
    what: impl Into<String>,
) -> impl FnOnce(aya::programs::ProgramError) -> HookCostError {
    let what = what.into();
    move |source| HookCostError::Program { what, source }
}

/// Loads the hook programs; a hook whose programs the kernel refuses is unavailable, with the
/// reason.
fn load(ebpf: &mut Ebpf, hook: Hook, btf: Option<&Btf>) -> Result<(), String> {
    for name in hook.programs() {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("{name} is missing from the kernel object"))?;
        let r = match program {
            Program::TracePoint(p) => p.load(),
            Program::FEntry(p) => {
                let btf = btf.ok_or("no kernel BTF")?;
                p.load("tcp_sendmsg", btf)
            }
            Program::FExit(p) => {
                let btf = btf.ok_or("no kernel BTF")?;
                p.load("tcp_sendmsg", btf)
            }
            _ => return Err(format!("{name}: unexpected program type")),
        };
        r.map_err(|e| format!("load {name}: {}", chain(&e)))?;
    }
    Ok(())
}

/// Attached programs of one hook; detached on drop.
struct Attached<'a> {
    ebpf: &'a mut Ebpf,
    links: Vec<(&'static str, AttachedLink)>,
}

enum AttachedLink {
    Tp(aya::programs::trace_point::TracePointLinkId),
    Fentry(aya::programs::fentry::FEntryLinkId),
    Fexit(aya::programs::fexit::FExitLinkId),
}

impl<'a> Attached<'a> {
    fn attach(ebpf: &'a mut Ebpf, hook: Hook) -> Result<Self, HookCostError> {
        let mut me = Attached {
            ebpf,
            links: Vec::new(),
        };
        for (i, name) in hook.programs().iter().enumerate() {
            let program = me.ebpf.program_mut(name).expect("loaded before");
            let link = match program {
                Program::TracePoint(p) => {
                    let p: &mut TracePoint = p;
                    AttachedLink::Tp(
                        p.attach("syscalls", TP[i].1)
                            .map_err(program_error(format!("attach {name}")))?,
                    )
                }
                Program::FEntry(p) => {
                    let p: &mut FEntry = p;
                    AttachedLink::Fentry(
                        p.attach()
                            .map_err(program_error(format!("attach {name}")))?,
                    )
                }
                Program::FExit(p) => {
                    let p: &mut FExit = p;
                    AttachedLink::Fexit(
                        p.attach()
                            .map_err(program_error(format!("attach {name}")))?,
                    )
                }
                _ => unreachable!("hook programs are tracepoints, fentry and fexit"),
            };
            me.links.push((name, link));
        }
        Ok(me)
    }

    /// Total BPF run time (ns) and runs of the attached programs so far.
    fn run_stats(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for (name, _) in &self.links {
            if let Some(Ok(info)) = self.ebpf.program(name).map(|p| p.info()) {
                total.0 += info.run_time().as_nanos() as u64;
                total.1 += info.run_count();
            }
        }
        total
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        for (name, link) in self.links.drain(..) {
            let _ = match (self.ebpf.program_mut(name), link) {
                (Some(Program::TracePoint(p)), AttachedLink::Tp(l)) => p.detach(l),
                (Some(Program::FEntry(p)), AttachedLink::Fentry(l)) => p.detach(l),
                (Some(Program::FExit(p)), AttachedLink::Fexit(l)) => p.detach(l),
                _ => Ok(()),
            };
        }
    }
}

/// `n` sends of 64 bytes on `tx`, each read back on `rx`.
fn send_recv(tx: RawFd, rx: RawFd, n: u64) -> Duration {
    let out = [0x5au8; 64];
    let mut back = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: valid fds and buffers of the lengths given.
        unsafe {
            libc::send(tx, out.as_ptr().cast(), out.len(), 0);
            let mut got = 0;
            while got < back.len() {
                let r = libc::recv(rx, back[got..].as_mut_ptr().cast(), back.len() - got, 0);
                if r <= 0 {
                    break;
                }
                got += r as usize;
            }
        }
    }
    start.elapsed()
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Measures every hook type: `rounds` rounds of `iterations` calls per hook.
pub fn measure(iterations: u64, rounds: u32) -> Result<HookCost, HookCostError> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(sonde_proto::maps::SCRATCH, 1)
        .load(EBPF_OBJECT)
        .map_err(HookCostError::Load)?;
    let btf = Btf::from_sys_fs().ok();
    let mut unavailable: Vec<(Hook, String)> = Vec::new();
    for hook in Hook::ALL {
        if let Err(why) = load(&mut ebpf, hook, btf.as_ref()) {
            unavailable.push((hook, why));
        }
    }
    let mut procs: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut("HC_PROCS").ok_or_else(|| {
            HookCostError::Map(aya::maps::MapError::InvalidName {
                name: "HC_PROCS".into(),
            })
        })?)
        .map_err(HookCostError::Map)?;
    procs
        .insert(std::process::id(), 1, 0)
        .map_err(HookCostError::Map)?;
    // Held for the measurement: the kernel counts run time while the fd is open.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();

    let listener = TcpListener::bind("127.0.0.1:0").map_err(HookCostError::Socket)?;
    let tx = TcpStream::connect(listener.local_addr().map_err(HookCostError::Socket)?)
        .map_err(HookCostError::Socket)?;
    tx.set_nodelay(true).map_err(HookCostError::Socket)?;
    let (rx, _) = listener.accept().map_err(HookCostError::Socket)?;
    let (txfd, rxfd) = (tx.as_raw_fd(), rx.as_raw_fd());

    let measured: Vec<Hook> = Hook::ALL
        .into_iter()
        .filter(|h| !unavailable.iter().any(|(u, _)| u == h))
        .collect();
    // Warm-up: caches, the connection's buffers, the CPU's frequency.
    send_recv(txfd, rxfd, iterations / 4 + 1);
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); measured.len()];
    let mut inside: Vec<Vec<f64>> = vec![Vec::new(); measured.len()];
    for _ in 0..rounds {
        for (i, hook) in measured.iter().enumerate() {
            let attached = Attached::attach(&mut ebpf, *hook)?;
            // Untimed calls first: attaching patches kernel code (a trampoline, the tracepoint's
            // call list), which an emulator retranslates on the first calls after.
            send_recv(txfd, rxfd, iterations / 10 + 1);
            let before = attached.run_stats();
            let t = send_recv(txfd, rxfd, iterations);
            let after = attached.run_stats();
            drop(attached);
            wall[i].push(t.as_nanos() as f64 / iterations as f64);
            if stats.is_some() && *hook != Hook::None && after.1 > before.1 {
                inside[i].push((after.0 - before.0) as f64 / iterations as f64);
            }
        }
    }
    drop(stats);

    let none = measured
        .iter()
        .position(|h| *h == Hook::None)
        .and_then(|i| median(&mut wall[i].clone()));
    let rows = Hook::ALL
        .into_iter()
        .map(|hook| {
            if let Some((_, why)) = unavailable.iter().find(|(u, _)| *u == hook) {
                return HookRow {
                    hook: hook.name(),
                    programs: hook.programs().len(),
                    ns_per_call: None,
                    added_ns: None,
                    bpf_ns: None,
                    unavailable: Some(why.clone()),
                };
            }
            let i = measured.iter().position(|h| *h == hook).expect("measured");
            let ns = median(&mut wall[i]);
            HookRow {
                hook: hook.name(),
                programs: hook.programs().len(),
                ns_per_call: ns,
                added_ns: match (hook, ns, none) {
                    (Hook::None, ..) => None,
                    (_, Some(ns), Some(none)) => Some(ns - none),
                    _ => None,
                },
                bpf_ns: median(&mut inside[i]),
                unavailable: None,
            }
        })
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "this kernel".into());
    Ok(HookCost {
        kernel,
        iterations,
        rounds,
        bpf_stats: stats_were_on(&inside),
        rows,
    })
}

fn stats_were_on(inside: &[Vec<f64>]) -> bool {
    inside.iter().any(|v| !v.is_empty())
}
