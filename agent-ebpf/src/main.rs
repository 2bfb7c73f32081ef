//! sonde's kernel programs.
//!
//! Capture rests on syscall tracepoints only (`syscalls:sys_{enter,exit}_*`, `sched:*`): they
//! exist on every kernel sonde targets, whereas kprobes (CONFIG_KPROBES off) and fentry/fexit
//! (refused) are missing on some. Each data syscall is split in two halves:
//!
//! * **enter**: decide whether the process is traced ([`filter`]), whether the fd names a TCP
//!   socket ([`sockets`]), and if both hold, stash the arguments per thread ([`maps::ARGS`]).
//!   Untraced processes stop after the filter lookups; fds that are not TCP sockets stop after
//!   one cached lookup.
//! * **exit**: take the stash, and if the call moved bytes, copy the first `CAPTURE_BYTES` of
//!   them into one ring-buffer record ([`syscalls`]).
//!
//! Files are split per hook family: `syscalls.rs` (data, connect, accept, close, dup),
//! `sockets.rs` (fd classification and the connection table), `process.rs` (exec, exit, fork),
//! `filter.rs` (the traced set), `tls.rs` (TLS plaintext from uprobes), `maps.rs` (every map),
//! `util.rs` (counters, output).
#![no_std]
#![no_main]
// Atomic fetch-add on map values (stream offsets): the BPF target exposes no `AtomicU64`.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map inserts take `&value` on purpose: passing a scratch struct by value would copy it onto
// the 512-byte BPF stack, which the verifier refuses for the larger ones.
#![allow(clippy::needless_borrows_for_generic_args)]

mod context;
mod doctor;
mod filter;
mod h2ctx;
mod hookcost;
mod inject;
mod maps;
mod process;
mod sockets;
mod syscalls;
mod tls;
mod util;

use sonde_proto::{DEFAULT_CAPTURE, KernelOffsets};

/// Bytes copied per data syscall; set by the agent at load time (`--capture-bytes`).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = DEFAULT_CAPTURE;

/// 1 when `traceparent` injection into outgoing requests is on (set at load time).
#[unsafe(no_mangle)]
static INJECT: u32 = 0;

/// Head sampling of new root traces: see `sonde_proto::sampled_by_ratio` (set at load time;
/// the default keeps everything).
#[unsafe(no_mangle)]
static SAMPLE_THRESHOLD: u64 = sonde_proto::SAMPLE_ALL;

/// Pending ring-buffer bytes above which a record wakes the agent up; below it the agent's
/// periodic poll collects records, so a busy host pays one wakeup per batch, not per record.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u32 = 256 * 1024;

/// Kernel structure offsets, resolved by the agent from BTF.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    socket_type: 0,
    socket_sk: 0,
    sock_family: 0,
    sock_state: 0,
    sock_daddr: 0,
    sock_rcv_saddr: 0,
    sock_dport: 0,
    sock_num: 0,
    sock_v6_daddr: 0,
    sock_v6_rcv_saddr: 0,
    sock_net: 0,
    net_ns_inum: 0,
    sock_protocol: 0,
    tp_exit_group_dead: 0,
    tp_exec_old_pid: 0,
    tp_fork_parent_pid: 0,
    tp_fork_child_pid: 0,
};

/// Reads a load-time global without letting the compiler fold its initial value.
#[inline(always)]
fn global<T: Copy>(g: &'static T) -> T {
    // SAFETY: `g` is a valid, aligned reference to an immutable static; the volatile read only
    // stops the optimiser from assuming the value the object file was built with.
    unsafe { core::ptr::read_volatile(g) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this: a panic here is a load failure,
    // never a runtime path.
    loop {}
}

/// Probe-read helpers of the kernel are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
