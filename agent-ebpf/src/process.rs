//! Process lifecycle from `sched` tracepoints: exec, exit, fork.
//!
//! They keep the kernel-side state right (fd epochs on exec, decision inheritance on fork,
//! cleanup on exit) and tell the agent when its per-process metadata changes. Fork fires for
//! new threads as well as new processes (the record has no tgid of the child); a thread entry
//! made here is removed when that thread exits.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_prandom_u32},
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_proto::{Counter, Decision, EventKind, PROC_FLAG_INHERIT, ProcEvent, ProcState};

use crate::{
    OFFSETS,
    filter::traced,
    global,
    maps::{ARGS, PROCS},
    util::{count, emit, emit_now, header, now_ns},
};

/// The fd epoch of a process that gets its `PROCS` entry now: random and never 0 (the epoch of
/// a process without an entry). Classifications cached by an exited process stay in the LRU
/// maps (the kernel closed its fds, no `close` ran), and after pids wrap a new process with
/// the same tgid must not match them: with a fresh random epoch it does not (a chance of 2^-32).
#[inline(always)]
fn fresh_epoch() -> u32 {
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    if r == 0 { 1 } else { r }
}

/// Marks every cached fd classification of `tgid` as needing a new check.
#[inline(always)]
pub fn bump_epoch(tgid: u32) {
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer.
        unsafe { (*p).fd_epoch = (*p).fd_epoch.wrapping_add(1) };
    } else {
        let fresh = ProcState {
            decision: Decision::Unset as u32,
            fd_epoch: fresh_epoch(),
            flags: 0,
            cg_gen: 0,
            cg_id: 0,
            cg_decision: 0,
            _pad: 0,
        };
        let _ = PROCS.insert(tgid, fresh, BPF_NOEXIST as u64);
    }
}

#[inline(always)]
fn proc_event(kind: EventKind, pid_tgid: u64, other_pid: u32) {
    let now = now_ns();
    let ev = ProcEvent {
        header: header(kind, pid_tgid, now, now),
        other_pid,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // An exec is read about in /proc by the agent: wake it now, a short-lived process may be
    // gone by its next poll.
    let sent = if kind == EventKind::ProcExec {
        emit_now(&ev)
    } else {
        emit(&ev)
    };
    if sent {
        count(Counter::ProcEvents, 1);
    }
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    bump_epoch(tgid);
    if traced(tgid).is_some() {
        let off = global(&OFFSETS.tp_exec_old_pid) as usize;
        // SAFETY: offset of a pid_t field of this tracepoint, read from its format file.
        let old_pid = if off != 0 {
            unsafe { ctx.read_at::<u32>(off) }.unwrap_or(0)
        } else {
            0
        };
        proc_event(EventKind::ProcExec, pid_tgid, old_pid);
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let _ = ARGS.remove(pid_tgid);
    if tid != tgid {
        let _ = PROCS.remove(tid);
    }
    let off = global(&OFFSETS.tp_exit_group_dead) as usize;
    let group_dead = if off != 0 {
        // SAFETY: offset of the `bool group_dead` field, read from the format file.
        unsafe { ctx.read_at::<u8>(off) }.unwrap_or(0) != 0
    } else {
        tid == tgid
    };
    if group_dead {
        if traced(tgid).is_some() {
            proc_event(EventKind::ProcExit, pid_tgid, 0);
        }
        let _ = PROCS.remove(tgid);
    }
    0
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let off = global(&OFFSETS.tp_fork_child_pid) as usize;
    if off == 0 {
        return 0;
    }
    // SAFETY: offset of `pid_t child_pid`, read from the format file.
    let Ok(child) = (unsafe { ctx.read_at::<u32>(off) }) else {
        return 0;
    };
    // Plain integers, not an `Option<ProcState>`: LLVM stored the uninitialised half of the
    // option on the stack, which the verifier refuses ("!read_ok").
    let mut inherit_decision = Decision::Unset as u32;
    let mut inherit_flags = 0u32;
    if let Some(p) = PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        let (decision, flags) = unsafe { ((*p).decision, (*p).flags) };
        if decision != Decision::Unset as u32 && flags & PROC_FLAG_INHERIT != 0 {
            inherit_decision = decision;
            inherit_flags = flags;
        }
    }
    let traced_parent = traced(tgid).is_some();
    if inherit_decision != Decision::Unset as u32 || traced_parent {
        // An inherited decision; or a child of a traced process that does not exec (a forked
        // worker) gets an entry too, for its fresh epoch; the entry goes when it exits. (For a
        // new thread the entry is never looked up, which is by tgid, and goes when the thread
        // exits.)
        let state = ProcState {
            decision: inherit_decision,
            fd_epoch: fresh_epoch(),
            flags: inherit_flags,
            cg_gen: 0,
            cg_id: 0,
            cg_decision: 0,
            _pad: 0,
        };
        let _ = PROCS.insert(child, state, BPF_ANY as u64);
    }
    if traced_parent {
        proc_event(EventKind::ProcFork, pid_tgid, child);
    }
    0
}
