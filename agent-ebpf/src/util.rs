//! Small helpers shared by the programs: counters, ids, time, ring-buffer output.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
};
use sonde_proto::{Counter, DataEvent, EventHeader, EventKind, MAX_CAPTURE};

use crate::{
    WAKEUP_BYTES, global,
    maps::{CONN_IDS, COUNTERS, DataBuf, EVENTS},
};

/// Adds `n` to a per-CPU counter.
#[inline(always)]
pub fn count(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: `p` points at this CPU's slot; programs on one CPU do not run concurrently.
        unsafe { *p += n };
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn cpu() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_smp_processor_id() }
}

/// A connection id unique among all CPUs: CPU number in the top 12 bits, a per-CPU sequence
/// number below.
#[inline(always)]
pub fn next_conn_id() -> u64 {
    let cpu = cpu() as u64;
    let seq = match CONN_IDS.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: this CPU's slot; no concurrent writer on the same CPU.
            unsafe {
                *p += 1;
                *p
            }
        }
        None => 0,
    };
    (cpu << 52) | (seq & ((1 << 52) - 1))
}

#[inline(always)]
pub fn header(kind: EventKind, pid_tgid: u64, enter_ns: u64, exit_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        cpu: cpu(),
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        enter_ns,
        exit_ns,
    }
}

/// Wake the agent only when enough data is pending; otherwise its periodic poll collects it.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= global(&WAKEUP_BYTES) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Writes a fixed-size record; counts it if the ring buffer is full.
#[inline(always)]
pub fn emit<T: 'static>(record: &T) -> bool {
    emit_with(record, wakeup_flags())
}

/// [`emit`], waking the agent at once: for rare records it must handle while the process
/// that caused them still exists (an exec, whose `/proc` entry the agent reads).
#[inline(always)]
pub fn emit_now<T: 'static>(record: &T) -> bool {
    emit_with(record, BPF_RB_FORCE_WAKEUP as u64)
}

#[inline(always)]
fn emit_with<T: 'static>(record: &T, flags: u64) -> bool {
    match EVENTS.output::<T>(record, flags) {
        Ok(()) => true,
        Err(_) => {
            count(Counter::RingbufFull, 1);
            false
        }
    }
}

/// Writes the data event at the start of `buf` with the first `captured` payload bytes after
/// it, and counts it, or the ring buffer being full; `transferred` is what the syscall moved.
/// The one output of captured bytes, for syscalls and TLS uprobes alike.
#[inline(always)]
pub fn emit_data(buf: *const DataBuf, captured: u64, transferred: u64) -> bool {
    let size = core::mem::size_of::<DataEvent>() + captured as usize;
    // SAFETY: `buf` is this CPU's scratch value and callers keep `captured <= MAX_CAPTURE`, so
    // `size` is within it.
    let record = unsafe { core::slice::from_raw_parts(buf as *const u8, size) };
    if EVENTS.output::<[u8]>(record, wakeup_flags()).is_err() {
        count(Counter::RingbufFull, 1);
        count(Counter::RingbufFullBytes, transferred);
        return false;
    }
    count(Counter::DataEvents, 1);
    count(Counter::CapturedBytes, captured);
    count(Counter::TransferredBytes, transferred);
    if captured < transferred {
        count(Counter::TruncatedEvents, 1);
        count(Counter::TruncatedBytes, transferred - captured);
    }
    true
}

/// Copies `n` bytes from user address `src` to `payload[off..]`. The masks are for the
/// verifier: callers keep `off < MAX_CAPTURE` and `n <= MAX_CAPTURE - off`.
#[inline(always)]
pub fn copy_user(payload: *mut u8, off: u64, src: u64, n: u64) -> bool {
    // Both hidden from LLVM, which drops the mask and the clamp below when the caller's
    // bounds imply them; the 6.1 verifier cannot follow those (it bounds a register only by a
    // comparison with a constant) and rejected the copy (`cargo xtask vm-test --kernel 6.1`).
    // SAFETY: reads of locals.
    let (off, n) = unsafe { (core::ptr::read_volatile(&off), core::ptr::read_volatile(&n)) };
    let off = off & (MAX_CAPTURE as u64 - 1);
    let n = if n > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        n
    };
    // SAFETY: `payload` is the scratch map value's 2*MAX_CAPTURE array, so `off + n` stays
    // inside it; the helper checks `src`.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            payload.add(off as usize) as *mut core::ffi::c_void,
            n as u32,
            src as *const core::ffi::c_void,
        )
    };
    rc == 0
}
