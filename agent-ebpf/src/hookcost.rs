//! Programs for `sonde doctor --hook-cost`: the same per-call work hooked three ways, to measure
//! on the running kernel what a syscall of a traced process costs through each hook type.
//!
//! The work is the skeleton of sonde's data path (`syscalls.rs`) without the copy: the traced-set
//! lookup, the connection lookup, the in-flight record between enter and exit, the byte count.
//! - tracepoints (what sonde uses): `sys_enter_sendto` stashes the arguments by thread,
//!   `sys_exit_sendto` takes them back and updates the connection: two programs, five map
//!   operations;
//! - fentry + fexit on `tcp_sendmsg`: the exit sees the arguments itself, only the start time
//!   goes through a map: two programs, four map operations;
//! - fexit alone: one program, two map operations, no start time (the end time only).
//!
//! Only the process that `sonde doctor` names in `HC_PROCS` does the work; the others return
//! after one lookup, like untraced processes in sonde.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, map, tracepoint},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, TracePointContext},
};

/// The measured process (tgid → 1).
#[map]
static HC_PROCS: HashMap<u32, u32> = HashMap::with_max_entries(16, 0);

/// In flight between enter and exit, by thread: (start ns, fd or socket, buffer).
#[map]
static HC_INFLIGHT: HashMap<u64, [u64; 3]> = HashMap::with_max_entries(1024, 0);

/// Bytes sent per connection key ((tgid << 32) | fd, or the socket's address).
#[map]
static HC_CONNS: HashMap<u64, u64> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn measured() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    HC_PROCS.get_ptr((pid_tgid >> 32) as u32)?;
    Some(pid_tgid)
}

#[inline(always)]
fn account(key: u64, sent: i64) {
    if sent <= 0 {
        return;
    }
    match HC_CONNS.get_ptr_mut(key) {
        // SAFETY: a valid map value pointer; one writer per key in the measurement.
        Some(total) => unsafe { *total += sent as u64 },
        // The first call on a connection only.
        None => {
            let _ = HC_CONNS.insert(key, sent as u64, 0);
        }
    }
}

#[tracepoint]
pub fn hookcost_tp_enter(ctx: TracePointContext) -> u32 {
    let Some(pid_tgid) = measured() else {
        return 0;
    };
    // sys_enter_sendto: fd at 16, buff at 24 (after the common header and the syscall nr).
    // SAFETY: offsets of the tracepoint's format.
    let (fd, buf) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = HC_INFLIGHT.insert(pid_tgid, [now, fd, buf], 0);
    0
}

#[tracepoint]
pub fn hookcost_tp_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = HC_INFLIGHT.get_ptr(pid_tgid) else {
        return 0;
    };
    // SAFETY: a valid map value pointer.
    let [_, fd, _] = unsafe { *p };
    let _ = HC_INFLIGHT.remove(pid_tgid);
    // sys_exit_sendto: ret at 16.
    // SAFETY: offset of the tracepoint's format.
    let sent = unsafe { ctx.read_at::<i64>(16).unwrap_or(0) };
    account(
        (pid_tgid & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff),
        sent,
    );
    0
}

#[fentry(function = "tcp_sendmsg")]
pub fn hookcost_fentry(ctx: FEntryContext) -> u32 {
    let Some(pid_tgid) = measured() else {
        return 0;
    };
    let sk: u64 = ctx.arg(0);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = HC_INFLIGHT.insert(pid_tgid, [now, sk, 0], 0);
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn hookcost_fexit(ctx: FExitContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if HC_INFLIGHT.get_ptr(pid_tgid).is_none() {
        return 0;
    }
    let _ = HC_INFLIGHT.remove(pid_tgid);
    // tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size): the return value follows
    // the three arguments.
    let sk: u64 = ctx.arg(0);
    let sent: i64 = ctx.arg(3);
    account(sk, sent);
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn hookcost_fexit_only(ctx: FExitContext) -> u32 {
    if measured().is_none() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let sent: i64 = ctx.arg(3);
    account(sk, sent);
    0
}
