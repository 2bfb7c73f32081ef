//! Syscall tracepoints: data transfers, connect, accept, close and dup.
//!
//! Record layout of `syscalls:sys_enter_*`: common fields (8 bytes), `__syscall_nr` (padded to
//! 16), then each argument as 8 bytes from offset 16. `sys_exit_*`: `ret` (a `long`) at 16.
//! These offsets are part of the kernel's ABI for syscall tracepoints.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_proto::{
    CONN_RX_DESYNC, CONN_TX_DESYNC, CONN_TX_H2, CloseReason, ConnKey, ConnSource, Counter,
    DATA_FLAG_IOV_LIMIT, DATA_FLAG_READ_FAILED, DataEvent, Direction, EventKind, MAX_CAPTURE,
    MAX_IOVECS, PROC_FLAG_TLS, Role, Syscall,
};

use crate::{
    CAPTURE_BYTES, context,
    filter::{traced, traced_with_flags},
    global,
    maps::{
        ARGS, CONNS, DataBuf, FD_NOT_TCP, HEAD_SCAN, OP_ACCEPT, OP_CONNECT, SCRATCH, SERVER_PROCS,
        SyscallArgs, TAIL, TAIL_CTX_CLIENT, TAIL_CTX_H2, TAIL_CTX_SERVER, TailArgs,
    },
    sockets::{Class, classify, conn_for_data, forget_fd, open_conn},
    util::{copy_user, count, emit_data, header, now_ns},
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

/// Leaves `args` for the syscall's exit. A thread's entry stays in `ARGS` between its syscalls
/// (removed when the thread exits) and is rewritten in place: a lookup, where an insert and a
/// delete per syscall took the bucket lock twice. `enter_ns == 0` marks it consumed.
#[inline(always)]
fn stash(pid_tgid: u64, args: &SyscallArgs) {
    if let Some(p) = ARGS.get_ptr_mut(pid_tgid) {
        // SAFETY: a valid map value pointer; only this thread uses its entry (and its exit
        // removes it, after its last syscall).
        unsafe { *p = *args };
        return;
    }
    if ARGS.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count(Counter::ArgsFull, 1);
    }
}

#[inline(always)]
fn take_args(pid_tgid: u64) -> Option<SyscallArgs> {
    let p = ARGS.get_ptr_mut(pid_tgid)?;
    // SAFETY: a valid map value pointer of this thread's own entry (see `stash`).
    unsafe {
        if (*p).enter_ns == 0 {
            return None;
        }
        let args = *p;
        (*p).enter_ns = 0;
        Some(args)
    }
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
    let Some((epoch, proc_flags)) = traced_with_flags(tgid) else {
        return;
    };
    let fd = arg(ctx, 0) as u32;
    let key = ConnKey { tgid, fd };
    let Some((conn_id, role)) = conn_for_data(&key, epoch, pid_tgid) else {
        return;
    };
    // Only a process whose TLS calls were seen can have TLS state (`PROC_FLAG_TLS`).
    if proc_flags & PROC_FLAG_TLS != 0 && crate::tls::on_socket_syscall(pid_tgid, &key, conn_id) {
        // Ciphertext: its plaintext comes from the TLS probes (`tls.rs`).
        crate::util::count(Counter::TlsCiphertextSkipped, 1);
        return;
    }
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
    if op.direction() == Direction::Egress && op != Syscall::Sendfile {
        if role == Role::Server as u8 {
            // The thread answers the request it was serving.
            context::server_response(pid_tgid);
        } else if role == Role::Client as u8 {
            client_send(ctx, &key, op, buf, count, pid_tgid);
        }
    }
}

/// Copies up to `limit` bytes of a send's data (plain buffer or iovec array) to the scratch
/// payload. Returns (bytes copied, total bytes the call is asked to send, flags).
#[inline(always)]
fn gather(payload: *mut u8, vectored: bool, buf: u64, count: u64, limit: u64) -> (u64, u64, u8) {
    let mut flags = 0u8;
    if !vectored {
        let n = if count < limit { count } else { limit };
        if n > 0 && !copy_user(payload, 0, buf, n) {
            return (0, count, DATA_FLAG_READ_FAILED);
        }
        return (n, count, 0);
    }
    let mut captured: u64 = 0;
    let mut total: u64 = 0;
    for i in 0..MAX_IOVECS as u64 {
        if i >= count {
            break;
        }
        // SAFETY: user memory through the checked helper; struct iovec is
        // { void *iov_base; size_t iov_len; }.
        let iov: Result<[u64; 2], i32> =
            unsafe { bpf_probe_read_user((buf + i * 16) as *const [u64; 2]) };
        let Ok([base, len]) = iov else {
            flags |= DATA_FLAG_READ_FAILED;
            break;
        };
        total += len;
        if captured >= limit {
            continue;
        }
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
    if count > MAX_IOVECS as u64 {
        flags |= DATA_FLAG_IOV_LIMIT;
    }
    (captured, total, flags)
}

/// A send on a client connection: if a request starts here, decide its trace context (and
/// injection plan) now, before the bytes leave.
#[inline(always)]
fn client_send(
    ctx: &TracePointContext,
    key: &ConnKey,
    op: Syscall,
    buf: u64,
    count: u64,
    pid_tgid: u64,
) {
    let Some(conn) = CONNS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a valid map value pointer.
    let (seq, next, http) = unsafe { ((*conn).tx_seq, (*conn).tx_next_req, (*conn).http) };
    let vectored = matches!(op, Syscall::Writev | Syscall::Sendmsg);
    let h2 = http & CONN_TX_H2 != 0;
    if http & CONN_TX_DESYNC != 0 {
        return;
    }
    if h2 {
        // HTTP/2: only sends that hold the next frame header are looked at.
        if !vectored && next >= seq.saturating_add(count) {
            return;
        }
    } else if seq < next {
        return;
    } else if seq > next {
        // A request boundary went by unseen.
        // SAFETY: as above.
        unsafe { (*conn).http = http | CONN_TX_DESYNC };
        count_http_desync();
        return;
    }
    let Some(sbuf) = SCRATCH.get_ptr_mut(crate::util::cpu()) else {
        return;
    };
    // SAFETY: this CPU's scratch value; nothing else uses it during this program.
    let sbuf: &mut DataBuf = unsafe { &mut *sbuf };
    let (copied, total, flags) = gather(
        sbuf.payload.as_mut_ptr(),
        vectored,
        buf,
        count,
        HEAD_SCAN as u64,
    );
    if flags & DATA_FLAG_READ_FAILED != 0 || copied == 0 {
        return;
    }
    // Through memory, for the verifier (see `data_exit`).
    sbuf.event.captured_len = copied as u32;
    let copied = unsafe { core::ptr::read_volatile(&sbuf.event.captured_len) };
    let copied = if copied > HEAD_SCAN {
        HEAD_SCAN
    } else {
        copied
    };
    sbuf.tc = TailArgs {
        key: *key,
        pid_tgid,
        seq,
        len: copied,
        _pad: 0,
        total,
    };
    if h2 {
        if next >= seq.saturating_add(total) {
            return;
        }
        // SAFETY: as below.
        unsafe { TAIL.tail_call(ctx, TAIL_CTX_H2) };
        crate::util::count(Counter::TailCallFailed, 1);
        return;
    }
    // At a request boundary (the connection's start, or after an `Upgrade: h2c` request).
    if copied >= 24 && is_h2_preface(sbuf) {
        // The client preface: this connection's egress is followed frame by frame from now.
        // SAFETY: a valid map value pointer.
        unsafe {
            (*conn).http = http | CONN_TX_H2;
            (*conn).tx_next_req = seq + 24;
        }
        if total > 24 {
            // SAFETY: as below.
            unsafe { TAIL.tail_call(ctx, TAIL_CTX_H2) };
            crate::util::count(Counter::TailCallFailed, 1);
        }
        return;
    }
    // SAFETY: a tail call to a program of the same type; on failure it returns and nothing
    // happened.
    unsafe { TAIL.tail_call(ctx, TAIL_CTX_CLIENT) };
    crate::util::count(Counter::TailCallFailed, 1);
}

#[inline(always)]
fn is_h2_preface(buf: &DataBuf) -> bool {
    let p = crate::h2ctx::PREFACE;
    let mut i = 0;
    while i < p.len() {
        if buf.payload[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn count_http_desync() {
    count(Counter::HttpDesync, 1);
}

/// The exit half of every data syscall: one `DataEvent` with the first bytes transferred.
#[inline(always)]
fn data_exit(ctx: &TracePointContext, op: Syscall) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid) else {
        return;
    };
    let ret = ret(ctx);
    if ret <= 0 {
        return;
    }
    let ret = ret as u64;
    // Each exit program knows its syscall: the compiler keeps only that syscall's paths, and
    // the verifier only walks those.
    if args.op != op as u8 {
        return;
    }
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
    let (mut captured, mut flags) = match op {
        Syscall::Sendfile => (0, 0),
        _ => {
            let vectored = matches!(
                op,
                Syscall::Readv | Syscall::Writev | Syscall::Recvmsg | Syscall::Sendmsg
            );
            let (c, _, f) = gather(payload, vectored, args.buf, args.count, limit);
            (c, f)
        }
    };
    if flags & DATA_FLAG_IOV_LIMIT != 0 {
        if captured < limit && flags & DATA_FLAG_READ_FAILED == 0 {
            count(Counter::IovLimit, 1);
        } else {
            flags &= !DATA_FLAG_IOV_LIMIT;
        }
    }
    if captured > ret {
        captured = ret;
    }
    if flags & DATA_FLAG_READ_FAILED != 0 {
        count(Counter::UserReadFailed, 1);
    }
    // Through memory: the verifier then sees one bounded value here instead of one state per
    // way the copy loop could have ended, and what follows is verified once.
    // SAFETY: this CPU's scratch value.
    let captured = unsafe {
        (*buf).event.captured_len = captured as u32;
        core::ptr::read_volatile(&(*buf).event.captured_len) as u64
    };
    // The mask bounds the register itself: LLVM makes the clamp below a store of either value
    // to a stack slot, which the 6.1 verifier refills without the clamp's bound (a too-large
    // value cannot occur: the mask never changes it).
    let captured = captured & (2 * MAX_CAPTURE as u64 - 1);
    let captured = if captured > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        captured
    };
    let mut server_ctx = false;
    match (op.direction(), role) {
        (Direction::Ingress, r) if r == Role::Server as u8 => {
            if seq == 0 {
                // This process serves (see `h2ctx.rs`).
                let _ = SERVER_PROCS.insert(&((pid_tgid >> 32) as u32), &1, BPF_ANY as u64);
            }
            // SAFETY: `conn` is still a valid map value pointer; `buf` this CPU's scratch.
            unsafe {
                let (next, http, pending) = ((*conn).rx_next_req, (*conn).http, (*conn).rx_pending);
                if http & CONN_RX_DESYNC == 0 {
                    // A request starts here, or its head goes on from the previous read.
                    if seq == next || pending != 0 {
                        (*buf).tc = TailArgs {
                            key,
                            pid_tgid,
                            seq,
                            len: captured as u32,
                            _pad: 0,
                            total: ret,
                        };
                        server_ctx = true;
                    } else if seq > next {
                        (*conn).http = http | CONN_RX_DESYNC;
                        count_http_desync();
                    }
                }
            }
        }
        (Direction::Egress, r) if r == Role::Client as u8 => {
            // SAFETY: this CPU's scratch value.
            context::finish_plan(unsafe { &mut *buf }, pid_tgid)
        }
        _ => {}
    }
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
    if !emit_data(buf, captured, ret) {
        return;
    }
    if server_ctx {
        // The request's trace context, from the payload still in the scratch slot.
        // SAFETY: a tail call to a program of the same type; returns only on failure.
        unsafe { TAIL.tail_call(ctx, TAIL_CTX_SERVER) };
        count(Counter::TailCallFailed, 1);
    }
}

macro_rules! data_exit_program {
    ($name:ident, $op:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            data_exit(&ctx, $op);
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

data_exit_program!(syscalls_exit_read, Syscall::Read);
data_exit_program!(syscalls_exit_write, Syscall::Write);
data_exit_program!(syscalls_exit_readv, Syscall::Readv);
data_exit_program!(syscalls_exit_writev, Syscall::Writev);
data_exit_program!(syscalls_exit_recvfrom, Syscall::Recvfrom);
data_exit_program!(syscalls_exit_sendto, Syscall::Sendto);
data_exit_program!(syscalls_exit_recvmsg, Syscall::Recvmsg);
data_exit_program!(syscalls_exit_sendmsg, Syscall::Sendmsg);
data_exit_program!(syscalls_exit_sendfile64, Syscall::Sendfile);

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
/// process stopped being traced meanwhile. Costs two lookups when nothing is cached (the
/// common case: most fds closed on a host were never looked at), which take no lock.
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
