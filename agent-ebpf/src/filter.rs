//! The traced set: which processes produce events.
//!
//! Decisions are looked up from the most to the least specific: the process (tgid) in `PROCS`,
//! then the cgroup v2 id of the calling task in `CGROUPS`, then the default in `FILTER`. The agent
//! writes all three (its own tgid is always `Ignore`); children inherit a process decision at
//! fork (`process.rs`). An untraced process costs one or two hash lookups per hooked syscall.

use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;
use sonde_proto::Decision;

use crate::maps::{CGROUPS, FILTER, PROCS};

/// `Some(fd_epoch)` when the process `tgid` is traced.
#[inline(always)]
pub fn traced(tgid: u32) -> Option<u32> {
    traced_with_flags(tgid).map(|(epoch, _)| epoch)
}

/// `Some((fd_epoch, PROC_FLAG_* bits))` when the process `tgid` is traced.
#[inline(always)]
pub fn traced_with_flags(tgid: u32) -> Option<(u32, u32)> {
    let mut epoch = 0;
    let mut flags = 0;
    if let Some(p) = PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer; fields are plain integers.
        let p = unsafe { *p };
        epoch = p.fd_epoch;
        flags = p.flags;
        if p.decision == Decision::Trace as u32 {
            return Some((epoch, flags));
        }
        if p.decision == Decision::Ignore as u32 {
            return None;
        }
    }
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if let Some(d) = CGROUPS.get_ptr(cgroup) {
        // SAFETY: a valid map value pointer.
        let d = unsafe { *d };
        if d == Decision::Trace as u32 {
            return Some((epoch, flags));
        }
        if d == Decision::Ignore as u32 {
            return None;
        }
    }
    match FILTER.get(0) {
        Some(f) if f.default_decision == Decision::Trace as u32 => Some((epoch, flags)),
        _ => None,
    }
}
