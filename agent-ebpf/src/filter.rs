//! The traced set: which processes produce events.
//!
//! Decisions are looked up from the most to the least specific: the process (tgid) in `PROCS`,
//! then the cgroup v2 id of the calling task in `CGROUPS`, then the default in `FILTER`. The agent
//! writes all three (its own tgid is always `Ignore`); children inherit a process decision at
//! fork (`process.rs`).
//!
//! The cgroup/default answer is cached in the process's `PROCS` entry with the cgroup id it was
//! for and `FILTER`'s generation, which the agent moves after every change of `CGROUPS` or the
//! default; a process without an entry gets one at its first hooked syscall (fd epoch 0, what
//! it had without one). So a process, traced or not, pays one hash lookup per hooked syscall
//! here (the `FILTER` array and the cgroup id are cheap), where a process traced or ignored by
//! its cgroup paid two. If `PROCS` is full, processes without an entry are decided without the
//! cache, as before.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_get_current_cgroup_id};
use sonde_proto::{Decision, ProcState};

use crate::maps::{CGROUPS, FILTER, PROCS};

/// `Some(fd_epoch)` when the process `tgid` is traced.
#[inline(always)]
pub fn traced(tgid: u32) -> Option<u32> {
    traced_with_flags(tgid).map(|(epoch, _)| epoch)
}

/// `Some((fd_epoch, PROC_FLAG_* bits))` when the process `tgid` is traced.
#[inline(always)]
pub fn traced_with_flags(tgid: u32) -> Option<(u32, u32)> {
    // The generation is read before `CGROUPS`: a decision read before the agent's change is
    // then cached under the generation the agent moves after it, and never believed.
    let (default, generation) = match FILTER.get(0) {
        Some(f) => (f.default_decision, f.generation),
        None => (Decision::Unset as u32, 0),
    };
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(p) = PROCS.get_ptr_mut(tgid) else {
        let d = cgroup_decision(cgroup, default);
        if generation != 0 {
            let state = ProcState {
                decision: Decision::Unset as u32,
                fd_epoch: 0,
                flags: 0,
                cg_gen: generation,
                cg_id: cgroup,
                cg_decision: d,
                _pad: 0,
            };
            // Fails when another thread made it meanwhile, or the table is full.
            let _ = PROCS.insert(tgid, state, BPF_NOEXIST as u64);
        }
        return (d == Decision::Trace as u32).then_some((0, 0));
    };
    // SAFETY: a valid map value pointer; fields are plain integers.
    let s = unsafe { *p };
    if s.decision == Decision::Trace as u32 {
        return Some((s.fd_epoch, s.flags));
    }
    if s.decision == Decision::Ignore as u32 {
        return None;
    }
    let d = if generation != 0 && s.cg_gen == generation && s.cg_id == cgroup {
        s.cg_decision
    } else {
        let d = cgroup_decision(cgroup, default);
        if generation != 0 {
            // The generation last: a reader that sees it sees the rest. (Two threads of one
            // process in different cgroups, deciding at the same instant, could leave one's id
            // with the other's decision until the next generation; threaded cgroups only.)
            // SAFETY: a valid map value pointer.
            unsafe {
                (*p).cg_gen = 0;
                (*p).cg_id = cgroup;
                (*p).cg_decision = d;
                (*p).cg_gen = generation;
            }
        }
        d
    };
    (d == Decision::Trace as u32).then_some((s.fd_epoch, s.flags))
}

/// The decision of `cgroup`, or `default` when it has none.
#[inline(always)]
fn cgroup_decision(cgroup: u64, default: u32) -> u32 {
    if let Some(d) = CGROUPS.get_ptr(cgroup) {
        // SAFETY: a valid map value pointer.
        let d = unsafe { *d };
        if d == Decision::Trace as u32 || d == Decision::Ignore as u32 {
            return d;
        }
    }
    default
}
