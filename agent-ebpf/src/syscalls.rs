//! Syscall tracepoints: data transfers, connect, accept, close and dup.
//!
//! Record layout of `syscalls:sys_enter_*`: common fields (8 bytes), `__syscall_nr` (padded to
//! 16), then each argument as 8 bytes from offset 16. `sys_exit_*`: `ret` (a `long`) at 16.
//! These offsets are part of the kernel's ABI for syscall tracepoints.

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_proto::{
    CloseReason, ConnKey, ConnSource, Counter, DATA_FLAG_IOV_LIMIT, DATA_FLAG_READ_FAILED,
    DataEvent, Direction, EventKind, MAX_CAPTURE, MAX_IOVECS, Role, Syscall,
};

use crate::{
    CAPTURE_BYTES,
    filter::traced,
    global,
    maps::{ARGS, CONNS, FD_NOT_TCP, OP_ACCEPT, OP_CONNECT, SCRATCH, SyscallArgs},
    sockets::{Class, classify, conn_for_data, forget_fd, open_conn},
    util::{count, header, now_ns, wakeup_flags},
};

const EINPROGRESS: i64 = 115;
const MSG_PEEK: u64 = 2;

#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: syscall tracepoint records hold six 8-byte arguments from offset 16.
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[inline(always)]
fn stash(pid_tgid: u64, args: &SyscallArgs) {
    if ARGS.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count(Counter::ArgsFull, 1);
    }
}

#[inline(always)]
fn take_args(pid_tgid: u64) -> Option<SyscallArgs> {
    let p = ARGS.get_ptr(pid_tgid)?;
    // SAFETY: a valid map value pointer, copied before the entry is removed.
    let args = unsafe { *p };
    let _ = ARGS.remove(pid_tgid);
    Some(args)
}

// ---------------------------------------------------------------------------------------------
// Data transfers
// ---------------------------------------------------------------------------------------------

/// The enter half of every data syscall. `buf`/`count` are the buffer (or iovec array) and
/// its length (or iovec count); `msghdr` is the `struct user_msghdr *` of sendmsg/recvmsg.
#[inline(always)]
fn data_enter(ctx: &TracePointContext, op: Syscall, buf: u64, count: u64, msghdr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(epoch) = traced(tgid) else {
        return;
    };
    let fd = arg(ctx, 0) as u32;
    let key = ConnKey { tgid, fd };
    let Some((conn_id, _role)) = conn_for_data(&key, epoch, pid_tgid) else {
        return;
    };
    let (mut buf, mut count) = (buf, count);
    if msghdr != 0 {
        // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
        //                      size_t msg_iovlen; ... }: msg_iov at 16, msg_iovlen at 24.
        // SAFETY: user pointers are read through the checked helper.
        let hdr: Result<[u64; 2], i32> =
            unsafe { bpf_probe_read_user((msghdr + 16) as *const [u64; 2]) };
        match hdr {
            Ok([iov, iovlen]) => {
                buf = iov;
                count = iovlen;
            }
            Err(_) => {
                crate::util::count(Counter::UserReadFailed, 1);
                buf = 0;
                count = 0;
            }
        }
    }
    stash(
        pid_tgid,
        &SyscallArgs {
            enter_ns: now_ns(),
            buf,
            count,
            conn_id,
            fd,
            op: op as u8,
            _pad: [0; 3],
        },
    );
}

/// Copies `n` bytes from user address `src` to `payload[off..]`. The masks are for the
/// verifier: callers keep `off < MAX_CAPTURE` and `n <= MAX_CAPTURE - off`.
#[inline(always)]
fn copy_user(payload: *mut u8, off: u64, src: u64, n: u64) -> bool {
    let off = off & (MAX_CAPTURE as u64 - 1);
    let n = if n > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        n
    };
    // SAFETY: `payload` is the scratch map value's 2*MAX_CAPTURE array, so `off + n` stays
    // inside it; the helper checks `src`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            payload.add(off as usize) as *mut c_void,
            n as u32,
            src as *const c_void,
        )
    };
    rc == 0
}

/// The exit half of every data syscall: one `DataEvent` with the first bytes transferred.
#[inline(always)]
fn data_exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid) else {
        return;
    };
    let ret = ret(ctx);
    if ret <= 0 {
        return;
    }
    let ret = ret as u64;
    let Ok(op) = Syscall::try_from(args.op) else {
        return;
    };
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: args.fd,
    };
    let Some(conn) = CONNS.get_ptr_mut(key) else {
        count(Counter::ConnGoneAtExit, 1);
        return;
    };
    // SAFETY: `conn` is a valid map value pointer.
    let (conn_id, role, seq) = unsafe {
        let direction = op.direction();
        let counter = match direction {
            Direction::Egress => &raw mut (*conn).tx_seq,
            Direction::Ingress => &raw mut (*conn).rx_seq,
        };
        // Read, then add atomically: the total never loses bytes. Two threads moving bytes on
        // one socket in one direction at the same instant may read the same offset (bpf-linker
        // targets BPF v1, which cannot return the old value of an atomic add); the agent then
        // sees an overlap and orders those records by time.
        let seq = core::ptr::read_volatile(counter);
        core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, ret);
        ((*conn).conn_id, (*conn).role, seq)
    };
    if conn_id != args.conn_id {
        // The fd was closed and reused by another thread while this call was in flight.
        count(Counter::ConnGoneAtExit, 1);
        return;
    }
    let Some(buf) = SCRATCH.get_ptr_mut(crate::util::cpu()) else {
        return;
    };
    let limit = global(&CAPTURE_BYTES) as u64;
    let limit = if limit > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        limit
    };
    let limit = if ret < limit { ret } else { limit };
    // SAFETY: `buf` is this CPU's scratch value; nothing else uses it during this program.
    let payload = unsafe { (*buf).payload.as_mut_ptr() };
    let mut captured: u64 = 0;
    let mut flags: u8 = 0;
    match op {
        Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => {
            if limit > 0 {
                if copy_user(payload, 0, args.buf, limit) {
                    captured = limit;
                } else {
                    flags |= DATA_FLAG_READ_FAILED;
                }
            }
        }
        Syscall::Readv | Syscall::Writev | Syscall::Recvmsg | Syscall::Sendmsg => {
            for i in 0..MAX_IOVECS as u64 {
                if i >= args.count || captured >= limit {
                    break;
                }
                // SAFETY: user memory through the checked helper; struct iovec is
                // { void *iov_base; size_t iov_len; }.
                let iov: Result<[u64; 2], i32> =
                    unsafe { bpf_probe_read_user((args.buf + i * 16) as *const [u64; 2]) };
                let Ok([base, len]) = iov else {
                    flags |= DATA_FLAG_READ_FAILED;
                    break;
                };
                let room = limit - captured;
                let n = if len < room { len } else { room };
                if n == 0 {
                    continue;
                }
                if !copy_user(payload, captured, base, n) {
                    flags |= DATA_FLAG_READ_FAILED;
                    break;
                }
                captured += n;
            }
            if args.count > MAX_IOVECS as u64 && captured < limit && flags == 0 {
                flags |= DATA_FLAG_IOV_LIMIT;
                count(Counter::IovLimit, 1);
            }
        }
        Syscall::Sendfile => {}
    }
    if flags & DATA_FLAG_READ_FAILED != 0 {
        count(Counter::UserReadFailed, 1);
    }
    let captured = if captured > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        captured
    };
    // SAFETY: as above.
    unsafe {
        (*buf).event = DataEvent {
            header: header(EventKind::Data, pid_tgid, args.enter_ns, now_ns()),
            conn_id,
            seq,
            orig_len: ret as u32,
            captured_len: captured as u32,
            fd: args.fd,
            direction: op.direction() as u8,
            role,
            syscall: op as u8,
            flags,
        };
    }
    let size = core::mem::size_of::<DataEvent>() + captured as usize;
    // SAFETY: `size` is at most the scratch value's size (64 + MAX_CAPTURE of 64 + 2*MAX).
    let record = unsafe { core::slice::from_raw_parts(buf as *const u8, size) };
    if crate::maps::EVENTS
        .output::<[u8]>(record, wakeup_flags())
        .is_err()
    {
        count(Counter::RingbufFull, 1);
        count(Counter::RingbufFullBytes, ret);
        return;
    }
    count(Counter::DataEvents, 1);
    count(Counter::CapturedBytes, captured);
    count(Counter::TransferredBytes, ret);
    if captured < ret {
        count(Counter::TruncatedEvents, 1);
        count(Counter::TruncatedBytes, ret - captured);
    }
}

macro_rules! data_exit_program {
    ($name:ident) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            data_exit(&ctx);
            0
        }
    };
}

#[tracepoint]
pub fn syscalls_enter_read(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Read, arg(&ctx, 1), arg(&ctx, 2), 0);
    0
}

#[tracepoint]
pub fn syscalls_enter_write(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Write, arg(&ctx, 1), arg(&ctx, 2), 0);
    0
}

#[tracepoint]
pub fn syscalls_enter_readv(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Readv, arg(&ctx, 1), arg(&ctx, 2), 0);
    0
}

#[tracepoint]
pub fn syscalls_enter_writev(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Writev, arg(&ctx, 1), arg(&ctx, 2), 0);
    0
}

#[tracepoint]
pub fn syscalls_enter_recvfrom(ctx: TracePointContext) -> u32 {
    // recvfrom(fd, buf, size, flags, addr, addrlen). MSG_PEEK leaves the bytes queued for the
    // next read, which will report them: capturing both would duplicate them.
    if arg(&ctx, 3) & MSG_PEEK == 0 {
        data_enter(&ctx, Syscall::Recvfrom, arg(&ctx, 1), arg(&ctx, 2), 0);
    }
    0
}

#[tracepoint]
pub fn syscalls_enter_sendto(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Sendto, arg(&ctx, 1), arg(&ctx, 2), 0);
    0
}

#[tracepoint]
pub fn syscalls_enter_recvmsg(ctx: TracePointContext) -> u32 {
    // recvmsg(fd, msg, flags)
    if arg(&ctx, 2) & MSG_PEEK == 0 {
        data_enter(&ctx, Syscall::Recvmsg, 0, 0, arg(&ctx, 1));
    }
    0
}

#[tracepoint]
pub fn syscalls_enter_sendmsg(ctx: TracePointContext) -> u32 {
    data_enter(&ctx, Syscall::Sendmsg, 0, 0, arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn syscalls_enter_sendfile64(ctx: TracePointContext) -> u32 {
    // sendfile(out_fd, in_fd, offset, count): the bytes come from a file, so only their count
    // is reported; the parsers see a gap of that length.
    data_enter(&ctx, Syscall::Sendfile, 0, 0, 0);
    0
}

data_exit_program!(syscalls_exit_read);
data_exit_program!(syscalls_exit_write);
data_exit_program!(syscalls_exit_readv);
data_exit_program!(syscalls_exit_writev);
data_exit_program!(syscalls_exit_recvfrom);
data_exit_program!(syscalls_exit_sendto);
data_exit_program!(syscalls_exit_recvmsg);
data_exit_program!(syscalls_exit_sendmsg);
data_exit_program!(syscalls_exit_sendfile64);

// ---------------------------------------------------------------------------------------------
// Connection lifecycle
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn lifecycle_enter(ctx: &TracePointContext, op: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(epoch) = traced((pid_tgid >> 32) as u32) else {
        return;
    };
    stash(
        pid_tgid,
        &SyscallArgs {
            enter_ns: now_ns(),
            buf: 0,
            count: epoch as u64,
            conn_id: 0,
            fd: arg(ctx, 0) as u32,
            op,
            _pad: [0; 3],
        },
    );
}

/// Tracks `fd` as a new connection with `role` if it is a TCP socket.
#[inline(always)]
fn track_new(fd: u32, role: Role, source: ConnSource, args: &SyscallArgs, pid_tgid: u64) {
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    let epoch = args.count as u32;
    match classify(fd) {
        Class::Tcp(info) => {
            // Anything cached for this fd number describes a file it named before.
            forget_fd(&key, CloseReason::Replaced, pid_tgid);
            let _ = open_conn(&key, &info, role, source, epoch, pid_tgid, args.enter_ns);
        }
        Class::NotTcp => {
            count(Counter::FdNotTcp, 1);
            let _ = FD_NOT_TCP.insert(key, epoch, BPF_ANY as u64);
        }
        Class::Failed => {}
    }
}

#[tracepoint]
pub fn syscalls_enter_connect(ctx: TracePointContext) -> u32 {
    lifecycle_enter(&ctx, OP_CONNECT);
    0
}

#[tracepoint]
pub fn syscalls_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid) else {
        return 0;
    };
    let ret = ret(&ctx);
    // A non-blocking connect returns EINPROGRESS with the local port already bound.
    if args.op == OP_CONNECT && (ret == 0 || ret == -EINPROGRESS) {
        track_new(args.fd, Role::Client, ConnSource::Connect, &args, pid_tgid);
    }
    0
}

#[tracepoint]
pub fn syscalls_enter_accept(ctx: TracePointContext) -> u32 {
    lifecycle_enter(&ctx, OP_ACCEPT);
    0
}

#[tracepoint]
pub fn syscalls_enter_accept4(ctx: TracePointContext) -> u32 {
    lifecycle_enter(&ctx, OP_ACCEPT);
    0
}

#[inline(always)]
fn accept_exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid) else {
        return;
    };
    let ret = ret(ctx);
    if args.op == OP_ACCEPT && ret >= 0 {
        track_new(
            ret as u32,
            Role::Server,
            ConnSource::Accept,
            &args,
            pid_tgid,
        );
    }
}

#[tracepoint]
pub fn syscalls_exit_accept(ctx: TracePointContext) -> u32 {
    accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn syscalls_exit_accept4(ctx: TracePointContext) -> u32 {
    accept_exit(&ctx);
    0
}

/// `close(fd)`: runs for every process so that no cached entry outlives its fd, even when the
/// process stopped being traced meanwhile. Costs two hash operations.
#[tracepoint]
pub fn syscalls_enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: arg(&ctx, 0) as u32,
    };
    forget_fd(&key, CloseReason::Close, pid_tgid);
    0
}

/// `dup2(old, new)` and `dup3(old, new, flags)` close `new` first unless it equals `old`.
#[inline(always)]
fn dup_enter(ctx: &TracePointContext) {
    let old = arg(ctx, 0) as u32;
    let new = arg(ctx, 1) as u32;
    if old == new {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: new,
    };
    forget_fd(&key, CloseReason::Replaced, pid_tgid);
}

#[tracepoint]
pub fn syscalls_enter_dup2(ctx: TracePointContext) -> u32 {
    dup_enter(&ctx);
    0
}

#[tracepoint]
pub fn syscalls_enter_dup3(ctx: TracePointContext) -> u32 {
    dup_enter(&ctx);
    0
}

/// `close_range(first, last, flags)` frees fds without a `close` per fd: move the process's fd
/// epoch so every cached classification is checked again on next use.
#[tracepoint]
pub fn syscalls_enter_close_range(_ctx: TracePointContext) -> u32 {
    crate::process::bump_epoch((bpf_get_current_pid_tgid() >> 32) as u32);
    0
}
