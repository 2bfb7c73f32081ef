//! Loading and attaching the kernel programs, and the maps the agent writes.
//!
//! The only module that imports `aya::programs`. [`Probes::load`] resolves kernel offsets,
//! loads the object built by `build.rs` with the load-time globals, fills the filter maps (sonde
//! itself is never traced) and attaches every tracepoint. Dropping [`Probes`] detaches them all;
//! if the agent dies, the kernel releases them with its file descriptors.

pub mod hookcost;
pub mod offsets;
pub mod support;
pub mod tracefs;
pub mod uprobes;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf, SockHash},
    programs::{CgroupAttachMode, ProgramError, SkMsg, SockOps, TracePoint},
};
use sonde_proto::{
    COUNTER_SLOTS, ConnKey, Counter, Decision, FilterConfig, KernelOffsets, MAX_CAPTURE,
    PROC_FLAG_INHERIT, ProcState, globals, maps, programs,
};

use self::{
    offsets::{KernelBtf, OffsetsError, VMLINUX_BTF},
    tracefs::{TraceFs, TracefsError},
};

/// The kernel object compiled by `build.rs` (empty when built with `SONDE_SKIP_EBPF=1`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde"));

pub use sonde_proto::programs::TRACEPOINTS;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this sonde was built without its kernel programs (SONDE_SKIP_EBPF=1); rebuild after \
         `cargo xtask setup`"
    )]
    NoObject,
    #[error(
        "capture size {0} is above the maximum {MAX_CAPTURE}; choose --capture-bytes <= {MAX_CAPTURE}"
    )]
    CaptureTooLarge(u32),
    #[error(
        "ring buffer size {0} must be a power of two and a multiple of the page size \
         (e.g. 16777216 for 16 MiB); fix --ring-buffer-bytes"
    )]
    RingSize(u32),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error(
        "loading the kernel programs failed: {0}; are you root (CAP_BPF, CAP_PERFMON, \
         CAP_SYS_ADMIN)? `sonde doctor` checks every requirement"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("kernel program {name} is missing from the object; the build is inconsistent")]
    MissingProgram { name: &'static str },
    #[error(
        "cannot load program {name} (verifier or permissions): {source}; `sonde doctor` \
         says what this kernel allows"
    )]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot attach {category}:{tracepoint}: {source}; is tracefs mounted at {root}?")]
    Attach {
        category: &'static str,
        tracepoint: &'static str,
        root: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot attach uprobe {name} to {target} at offset {offset:#x}: {source}")]
    Uprobe {
        name: &'static str,
        target: String,
        offset: u64,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {0} is missing from the object; the build is inconsistent")]
    MissingMap(&'static str),
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

impl ProbeError {
    /// The error of loading (or looking up, or attaching through a link) program `name`.
    fn load(name: &'static str) -> impl FnOnce(ProgramError) -> Self {
        move |e| Self::ProgramLoad {
            name,
            source: Box::new(e),
        }
    }

    /// The error of using map `name`.
    fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |e| Self::Map {
            name,
            source: Box::new(e),
        }
    }
}

/// Program `name` of the object, as its type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(ProbeError::load(name))
}

/// Which processes are traced, before any runtime change.
#[derive(Clone, Debug)]
pub struct FilterSpec {
    /// Decision for processes with no process or cgroup decision.
    pub default: Decision,
    /// Per-process decisions (inherited by children forked afterwards).
    pub pids: Vec<(u32, Decision)>,
    /// Per-cgroup decisions, by cgroup v2 id.
    pub cgroups: Vec<(u64, Decision)>,
}

impl Default for FilterSpec {
    /// Every process but sonde itself.
    fn default() -> Self {
        Self {
            default: Decision::Trace,
            pids: Vec::new(),
            cgroups: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Bytes captured per syscall.
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Pending bytes before the kernel wakes the agent.
    pub wakeup_bytes: u32,
    pub filter: FilterSpec,
    /// Put `traceparent` into outgoing HTTP/1 requests of traced processes.
    pub inject: bool,
    /// Head sampling of new root traces in the kernel ([`sonde_proto::sampled_by_ratio`]).
    pub sample_threshold: u64,
    /// Load the TLS uprobe programs (OpenSSL, Go crypto/tls).
    pub tls: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            capture_bytes: sonde_proto::DEFAULT_CAPTURE,
            ring_buffer_bytes: 16 * 1024 * 1024,
            wakeup_bytes: 256 * 1024,
            filter: FilterSpec::default(),
            inject: true,
            sample_threshold: sonde_proto::SAMPLE_ALL,
            tls: true,
        }
    }
}

/// Kernel-side counters summed over CPUs, by [`Counter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters(pub BTreeMap<&'static str, u64>);

impl KernelCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0.get(c.name()).copied().unwrap_or(0)
    }
}

/// Loaded and attached kernel programs, with handles on the maps the agent writes.
pub struct Probes {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    procs: HashMap<MapData, u32, ProcState>,
    cgroups: HashMap<MapData, u64, u32>,
    filter: Array<MapData, FilterConfig>,
    /// What `FILTER` holds: the default decision and the generation of the traced set.
    default_decision: Decision,
    generation: u32,
    conns: HashMap<MapData, ConnKey, sonde_proto::ConnState>,
    /// Kept alive while injection runs (the sk_msg program is attached to it).
    socks: Option<SockHash<MapData, u64>>,
    /// The tail-call table of the context programs.
    tail: Option<ProgramArray<MapData>>,
    pub offsets: KernelOffsets,
    pub load_time: Duration,
    /// Whether injection is on (asked for, and the sock_ops and sk_msg programs attached).
    pub inject: bool,
    /// Why injection uses the sock_ops program without the process filter
    /// (`programs::SOCK_OPS_ALL`): the kernel refused the filtering one.
    pub inject_unfiltered: Option<String>,
    /// Whether the TLS uprobe programs are loaded (attached per file by `crate::tls`).
    pub tls: bool,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(ProbeError::map(name))
}

impl Probes {
    /// Loads, configures and attaches everything. Needs root (or CAP_BPF + CAP_PERFMON).
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        let started = Instant::now();
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        if config.capture_bytes as usize > MAX_CAPTURE {
            return Err(ProbeError::CaptureTooLarge(config.capture_bytes));
        }
        let page = page_size();
        if !config.ring_buffer_bytes.is_power_of_two()
            || !config.ring_buffer_bytes.is_multiple_of(page)
        {
            return Err(ProbeError::RingSize(config.ring_buffer_bytes));
        }
        raise_memlock_limit();
        let tracefs = TraceFs::find_or_mount()?;
        let btf = KernelBtf::open(Path::new(VMLINUX_BTF))?;
        let offsets = offsets::resolve(&btf, &tracefs)?;
        // The parsed kernel BTF is large (tens of MiB here) and aya parses its own copy in
        // `load`: free ours first, so the two never add up in the start-up peak.
        drop(btf);

        // Injection needs a cgroup v2 hierarchy for sock_ops; without one it is off.
        let cgroup2 = crate::cgroup::v2_mount();
        let inject = config.inject && cgroup2.is_some();
        if config.inject && cgroup2.is_none() {
            tracing::warn!("no cgroup v2 hierarchy: traceparent injection is off");
        }
        let inject_flag: u32 = u32::from(inject);
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::CAPTURE_BYTES, &config.capture_bytes, true)
            .override_global(globals::INJECT, &inject_flag, true)
            .override_global(globals::SAMPLE_THRESHOLD, &config.sample_threshold, true)
            .override_global(globals::WAKEUP_BYTES, &config.wakeup_bytes, true)
            .override_global(globals::OFFSETS, &offsets, true)
            .map_max_entries(maps::EVENTS, config.ring_buffer_bytes)
            .map_max_entries(maps::SCRATCH, possible_cpus())
            .load(EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;

        let mut probes = Self {
            events: Some(take(&mut ebpf, maps::EVENTS)?),
            counters: take(&mut ebpf, maps::COUNTERS)?,
            procs: take(&mut ebpf, maps::PROCS)?,
            cgroups: take(&mut ebpf, maps::CGROUPS)?,
            filter: take(&mut ebpf, maps::FILTER)?,
            default_decision: Decision::Unset,
            generation: 0,
            conns: take(&mut ebpf, maps::CONNS)?,
            socks: None,
            tail: None,
            ebpf,
            offsets,
            load_time: Duration::ZERO,
            inject: false,
            inject_unfiltered: None,
            tls: false,
        };

        // The traced set is in place before the first program runs; sonde never traces itself.
        probes.set_process(std::process::id(), Decision::Ignore, false)?;
        for &(pid, d) in &config.filter.pids {
            probes.set_process(pid, d, true)?;
        }
        for &(id, d) in &config.filter.cgroups {
            probes.set_cgroup(id, d)?;
        }
        probes.set_default(config.filter.default)?;
        probes.load_context_programs()?;

        for &(name, category, tracepoint) in TRACEPOINTS {
            let prog: &mut TracePoint = program(&mut probes.ebpf, name)?;
            let t0 = Instant::now();
            prog.load().map_err(ProbeError::load(name))?;
            let t1 = Instant::now();
            prog.attach(category, tracepoint)
                .map_err(|e| ProbeError::Attach {
                    category,
                    tracepoint,
                    root: tracefs.root().display().to_string(),
                    source: Box::new(e),
                })?;
            tracing::debug!(
                program = name,
                load = ?(t1 - t0),
                attach = ?t1.elapsed(),
                "program loaded and attached"
            );
        }
        if config.tls {
            match probes.load_tls_programs() {
                Ok(()) => probes.tls = true,
                Err(e) => tracing::warn!("TLS capture is off: {e}"),
            }
        }
        if let (true, Some(root)) = (inject, cgroup2) {
            probes.attach_injection(&root)?;
            probes.inject = true;
        }
        probes.load_time = started.elapsed();
        Ok(probes)
    }

    /// Loads the context programs and puts them in the tail-call table, before any data
    /// program runs.
    fn load_context_programs(&mut self) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .take_map(maps::TAIL)
            .ok_or(ProbeError::MissingMap(maps::TAIL))?;
        let mut tail: ProgramArray<MapData> =
            ProgramArray::try_from(map).map_err(ProbeError::map(maps::TAIL))?;
        for (index, name) in [
            (0u32, programs::CTX_SERVER),
            (1, programs::CTX_CLIENT),
            (2, programs::CTX_H2_CLIENT),
        ] {
            let prog: &mut TracePoint = program(&mut self.ebpf, name)?;
            prog.load().map_err(ProbeError::load(name))?;
            let fd = prog.fd().map_err(ProbeError::load(name))?;
            tail.set(index, fd, 0)
                .map_err(ProbeError::map(maps::TAIL))?;
        }
        self.tail = Some(tail);
        Ok(())
    }

    /// sock_ops at the cgroup v2 root (a BPF link: it coexists with other programs attached
    /// there), sk_msg on
    /// the socket map.
    fn attach_injection(&mut self, root: &Path) -> Result<(), ProbeError> {
        let socks = self
            .ebpf
            .take_map(maps::SOCKS)
            .ok_or(ProbeError::MissingMap(maps::SOCKS))?;
        let socks: SockHash<MapData, u64> =
            SockHash::try_from(socks).map_err(ProbeError::map(maps::SOCKS))?;
        let fd = socks.fd().try_clone().map_err(|e| ProbeError::Cgroup {
            path: root.display().to_string(),
            source: e,
        })?;
        let name = programs::SK_MSG;
        let msg: &mut SkMsg = program(&mut self.ebpf, name)?;
        msg.load().map_err(ProbeError::load(name))?;
        msg.attach(&fd).map_err(ProbeError::load(name))?;
        let cgroup = std::fs::File::open(root).map_err(|source| ProbeError::Cgroup {
            path: root.display().to_string(),
            source,
        })?;
        let mut name = programs::SOCK_OPS;
        if let Err(e) = self.load_sock_ops(name) {
            // Older kernels (6.1) refuse `bpf_get_current_pid_tgid` in sock_ops: fall back to
            // the program without the process filter.
            let why = match &e {
                ProbeError::ProgramLoad { source, .. } => verifier_last_line(source.as_ref()),
                e => e.to_string(),
            };
            tracing::warn!(
                "{name} refused ({why}); using {} (every new outgoing connection passes the \
                 sk_msg program; only traced processes' requests change)",
                programs::SOCK_OPS_ALL
            );
            name = programs::SOCK_OPS_ALL;
            self.load_sock_ops(name)?;
            self.inject_unfiltered = Some(why);
        }
        let ops: &mut SockOps = program(&mut self.ebpf, name)?;
        // aya attaches through a BPF link, which the kernel always adds alongside other
        // programs (links are multi by nature): `Single` replaces nobody's program here,
        // whereas `AllowMultiple` makes aya pass a flag that link_create refuses (EINVAL).
        ops.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(ProbeError::load(name))?;
        self.socks = Some(socks);
        Ok(())
    }

    fn load_sock_ops(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let ops: &mut SockOps = program(&mut self.ebpf, name)?;
        ops.load().map_err(ProbeError::load(name))
    }

    /// The event ring buffer; can be taken once (by the `events` module).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Sets the decision for one process (and, with `inherit`, for the children it forks from
    /// now on), keeping its fd epoch moving forward.
    pub fn set_process(
        &mut self,
        pid: u32,
        decision: Decision,
        inherit: bool,
    ) -> Result<(), ProbeError> {
        // Moving the epoch makes the kernel re-check cached fds, so a concurrent kernel bump
        // lost to this write is never a problem. A process without an entry gets a random
        // one, as the kernel gives at exec and fork (`agent-ebpf/src/process.rs`): an exited
        // process with the same pid may have left classifications behind.
        // The kernel's own flags (`PROC_FLAG_TLS`) and `mark_no_link`'s are kept.
        let (epoch, kept) = match self.procs.get(&pid, 0) {
            Ok(p) => (p.fd_epoch.wrapping_add(1), p.flags & !PROC_FLAG_INHERIT),
            Err(_) => (fresh_epoch(), 0),
        };
        let state = ProcState {
            decision: decision as u32,
            fd_epoch: epoch,
            flags: kept | if inherit { PROC_FLAG_INHERIT } else { 0 },
            cg_gen: 0,
            cg_id: 0,
            cg_decision: 0,
            _pad: 0,
        };
        self.procs
            .insert(pid, state, 0)
            .map_err(ProbeError::map(maps::PROCS))
    }

    /// Marks a process whose outgoing requests must never be linked to the request its thread
    /// serves (see `enrich::runtime`); its decision and fd epoch are kept.
    pub fn mark_no_link(&mut self, pid: u32) -> Result<(), ProbeError> {
        let mut state = self.procs.get(&pid, 0).unwrap_or(ProcState {
            decision: Decision::Unset as u32,
            fd_epoch: 0,
            flags: 0,
            cg_gen: 0,
            cg_id: 0,
            cg_decision: 0,
            _pad: 0,
        });
        state.flags |= sonde_proto::PROC_FLAG_NO_LINK;
        self.procs
            .insert(pid, state, 0)
            .map_err(ProbeError::map(maps::PROCS))
    }

    pub fn set_cgroup(&mut self, cgroup_id: u64, decision: Decision) -> Result<(), ProbeError> {
        let r = if decision == Decision::Unset {
            match self.cgroups.remove(&cgroup_id) {
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                r => r,
            }
        } else {
            self.cgroups.insert(cgroup_id, decision as u32, 0)
        };
        r.map_err(ProbeError::map(maps::CGROUPS))?;
        self.next_generation()
    }

    pub fn set_default(&mut self, decision: Decision) -> Result<(), ProbeError> {
        self.default_decision = decision;
        self.next_generation()
    }

    /// Moves the filter's generation, after a change of `CGROUPS` or the default: the
    /// decisions the kernel cached per process (`agent-ebpf/src/filter.rs`) are looked up
    /// again at their next syscall.
    fn next_generation(&mut self) -> Result<(), ProbeError> {
        self.generation = self.generation.wrapping_add(1).max(1);
        let cfg = FilterConfig {
            default_decision: self.default_decision as u32,
            generation: self.generation,
        };
        self.filter
            .set(0, cfg, 0)
            .map_err(ProbeError::map(maps::FILTER))
    }

    /// Whether the kernel traces `pid`: the lookup of `agent-ebpf/src/filter.rs` (process, then
    /// cgroup, then default) done from userspace. A process whose cgroup cannot be read counts
    /// as traced when the default is to trace.
    pub fn traces(&self, pid: u32) -> bool {
        if let Ok(p) = self.procs.get(&pid, 0) {
            if p.decision == Decision::Trace as u32 {
                return true;
            }
            if p.decision == Decision::Ignore as u32 {
                return false;
            }
        }
        if let Some(d) = crate::cgroup::id_of_pid(pid).and_then(|id| self.cgroups.get(&id, 0).ok())
        {
            if d == Decision::Trace as u32 {
                return true;
            }
            if d == Decision::Ignore as u32 {
                return false;
            }
        }
        self.filter
            .get(&0, 0)
            .is_ok_and(|f| f.default_decision == Decision::Trace as u32)
    }

    /// Drops the kernel's connection entries of an exited process.
    pub fn forget_process(&mut self, pid: u32, fds: impl IntoIterator<Item = u32>) {
        for fd in fds {
            let _ = self.conns.remove(&ConnKey { tgid: pid, fd });
        }
    }

    /// Number of entries in the kernel's connection table (walks the map: for tests and
    /// summaries, not hot paths).
    pub fn kernel_conn_count(&self) -> usize {
        self.conns.keys().filter(Result::is_ok).count()
    }

    /// Reads every counter, summed over CPUs.
    pub fn counters(&self) -> KernelCounters {
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            debug_assert!((c as u32) < COUNTER_SLOTS);
            let v = self
                .counters
                .get(&(c as u32), 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0);
            out.insert(c.name(), v);
        }
        KernelCounters(out)
    }

    /// Kernel run time and run count of every program (needs `kernel.bpf_stats_enabled`).
    pub fn program_stats(&self) -> Vec<(String, Duration, u64)> {
        let mut out = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            if let Ok(info) = prog.info() {
                out.push((name.to_owned(), info.run_time(), info.run_count()));
            }
        }
        out
    }
}

/// Number of possible CPUs (the highest CPU number + 1), for per-CPU slots.
fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(256, |n| n as u32)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u32 } else { 4096 }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so large maps load there too.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to an initialised rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if rc != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The verifier's last words (its log ends with the reason and statistics), or the error.
fn verifier_last_line(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("processed ")
                && !l.starts_with(';')
        })
        .unwrap_or(&text)
        .to_owned()
}

/// A random fd epoch, never 0 (see [`Probes::set_process`]).
fn fresh_epoch() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifiers_reason_is_its_last_words_before_the_statistics() {
        // The end of 6.1's log for inject_sock_ops, as aya's LoadError prints it.
        let e = std::io::Error::other(
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier \
             output: 0: R1=ctx(off=0,imm=0) R10=fp0\n\
             6: (85) call bpf_get_current_pid_tgid#14\n\
             unknown func bpf_get_current_pid_tgid#14\n\
             verification time 1356 usec\nstack depth 0\n\
             processed 7 insns (limit 1000000) max_states_per_insn 0\n",
        );
        assert_eq!(
            verifier_last_line(&e),
            "unknown func bpf_get_current_pid_tgid#14"
        );
    }
}
