//! TLS plaintext from uprobes on TLS libraries: OpenSSL (`libssl`, or binaries that embed it
//! with exported symbols, like Node.js) and Go `crypto/tls`.
//!
//! Syscalls on a TLS socket carry ciphertext, so the plaintext is taken where the application
//! hands it to the library (writes) or gets it back (reads). Each call must be tied to the TCP
//! connection that `sockets.rs` already tracks, without reading library structs:
//!
//! * **OpenSSL**: the entry probe stashes `(ssl, buf, num[, out])` per thread in `TLS_CALLS`.
//!   With a socket BIO the library's own `write`/`read` syscalls run inside the call on the same
//!   thread: the data tracepoint finds the stash, learns the fd and remembers `ssl -> fd`
//!   (`TLS_SSL_FD`). With a memory BIO (Node.js) the syscall comes right after the call
//!   returns: the return probe leaves the `SSL *` in `TLS_UNMAPPED` and the thread's next TCP
//!   syscall names the fd. The return probe (a uretprobe: C stacks do not move) reads the
//!   length (`rax`, or `*out` for the `_ex` forms) and emits the plaintext. `SSL_do_handshake`
//!   is hooked too, so a socket is known as TLS from its first record.
//! * **Go** (register ABI, 1.17+): `(*Conn).Write`/`Read` get `c` in RAX, `b.ptr` in RBX,
//!   `b.len` in RCX, and return `n` in RAX. The fd is read through the connection struct
//!   (`c.conn` interface data → `*net.TCPConn` → `*netFD` → `pfd.Sysfd`) with offsets the agent
//!   took from the binary's DWARF and put in the attach cookie. `Write` sends all of `b` or
//!   fails, so it is emitted at entry (before its bytes leave: never after the peer's answer).
//!   `Read`'s result is known only at its return; goroutines move between threads and their
//!   stacks move, so there are no uretprobes: the agent puts a probe on every `RET` of `Read`,
//!   and calls are keyed by the goroutine (`g` in R14).
//!
//! Once a socket is in `TLS_SOCKS` its syscalls are not emitted (`TlsCiphertextSkipped`), so
//! the bytes are parsed once. Plaintext events carry `DATA_FLAG_TLS` and their own offsets.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sonde_proto::{
    ConnKey, Counter, DATA_FLAG_READ_FAILED, DATA_FLAG_TLS, DataEvent, Decision, Direction,
    EventKind, MAX_CAPTURE, PROC_FLAG_TLS, ProcState, Syscall,
};

use crate::{
    CAPTURE_BYTES,
    filter::traced,
    global,
    maps::{
        CONNS, GO_CALLS, ObjKey, PROCS, SCRATCH, TLS_CALLS, TLS_OP_HANDSHAKE, TLS_OP_READ,
        TLS_OP_WRITE, TLS_SOCKS, TLS_SSL_FD, TLS_UNMAPPED, TlsCall, TlsSock,
    },
    util::copy_user,
    util::{count, emit_data, header, now_ns},
};

const NO_FD: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// Called by the data syscalls (`syscalls.rs`)
// ---------------------------------------------------------------------------------------------

/// A data syscall on the tracked TCP connection `key` (`conn_id`). Learns the socket of a TLS
/// call in flight (or just returned) on this thread, and answers whether the socket carries
/// TLS, in which case the syscall's ciphertext is not emitted.
#[inline(always)]
pub fn on_socket_syscall(pid_tgid: u64, key: &ConnKey, conn_id: u64) -> bool {
    let mut ssl = 0u64;
    if let Some(call) = TLS_CALLS.get_ptr_mut(pid_tgid) {
        // SAFETY: a valid map value pointer.
        unsafe {
            if (*call).fd == NO_FD {
                (*call).fd = key.fd;
                ssl = (*call).ssl;
            }
        }
    } else if let Some(p) = TLS_UNMAPPED.get_ptr(pid_tgid) {
        // SAFETY: a valid map value pointer.
        ssl = unsafe { *p };
        let _ = TLS_UNMAPPED.remove(pid_tgid);
    }
    if ssl != 0 {
        let k = ObjKey {
            ptr: ssl,
            tgid: key.tgid,
            _pad: 0,
        };
        let _ = TLS_SSL_FD.insert(k, key.fd, 0);
        mark_tls(key, conn_id);
        return true;
    }
    match TLS_SOCKS.get_ptr(key) {
        // SAFETY: a valid map value pointer.
        Some(s) => unsafe { (*s).conn_id == conn_id },
        None => false,
    }
}

/// Puts the socket in `TLS_SOCKS` (fresh offsets when the entry is missing or stale).
#[inline(always)]
fn mark_tls(key: &ConnKey, conn_id: u64) {
    if let Some(s) = TLS_SOCKS.get_ptr(key) {
        // SAFETY: a valid map value pointer.
        if unsafe { (*s).conn_id } == conn_id {
            return;
        }
    }
    let fresh = TlsSock {
        conn_id,
        tx_seq: 0,
        rx_seq: 0,
    };
    let _ = TLS_SOCKS.insert(key, &fresh, 0);
}

// ---------------------------------------------------------------------------------------------
// Plaintext events
// ---------------------------------------------------------------------------------------------

/// Emits `len` plaintext bytes at `buf`, moved by a TLS call on socket `fd` of this process.
#[inline(always)]
fn emit_plain(pid_tgid: u64, enter_ns: u64, fd: u32, op: u8, buf: u64, len: u64) {
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(conn) = CONNS.get_ptr(&key) else {
        count(Counter::TlsNoConn, 1);
        return;
    };
    // SAFETY: a valid map value pointer.
    let (conn_id, role) = unsafe { ((*conn).conn_id, (*conn).role) };
    mark_tls(&key, conn_id);
    let Some(sock) = TLS_SOCKS.get_ptr_mut(&key) else {
        return;
    };
    let (direction, syscall) = if op == TLS_OP_WRITE {
        (Direction::Egress, Syscall::Write)
    } else {
        (Direction::Ingress, Syscall::Read)
    };
    // SAFETY: a valid map value pointer. One thread moves a TLS connection's plaintext in one
    // direction at a time (the libraries are not safe otherwise), so read-then-write is enough.
    let seq = unsafe {
        let counter = if op == TLS_OP_WRITE {
            &raw mut (*sock).tx_seq
        } else {
            &raw mut (*sock).rx_seq
        };
        let seq = *counter;
        *counter = seq + len;
        seq
    };
    let Some(sbuf) = SCRATCH.get_ptr_mut(crate::util::cpu()) else {
        return;
    };
    let limit = global(&CAPTURE_BYTES) as u64;
    let limit = if limit > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        limit
    };
    let n = if len < limit { len } else { limit };
    // SAFETY: this CPU's scratch value; nothing else uses it during this program.
    let payload = unsafe { (*sbuf).payload.as_mut_ptr() };
    let mut flags = DATA_FLAG_TLS;
    let captured = if n > 0 && !copy_user(payload, 0, buf, n) {
        flags |= DATA_FLAG_READ_FAILED;
        count(Counter::UserReadFailed, 1);
        0
    } else {
        n
    };
    // Through memory, for the verifier (as in `syscalls::data_exit`).
    // SAFETY: this CPU's scratch value.
    let captured = unsafe {
        (*sbuf).event.captured_len = captured as u32;
        core::ptr::read_volatile(&(*sbuf).event.captured_len) as u64
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
    // SAFETY: as above.
    unsafe {
        (*sbuf).event = DataEvent {
            header: header(EventKind::Data, pid_tgid, enter_ns, now_ns()),
            conn_id,
            seq,
            orig_len: len as u32,
            captured_len: captured as u32,
            fd,
            direction: direction as u8,
            role,
            syscall: syscall as u8,
            flags,
        };
    }
    if emit_data(sbuf, captured, len) {
        count(Counter::TlsEvents, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// OpenSSL
// ---------------------------------------------------------------------------------------------

/// Sets `PROC_FLAG_TLS` on a traced process making a TLS call, before the call stashes
/// anything: from then on its socket syscalls consult the TLS maps (`on_socket_syscall`). A
/// process without a `PROCS` entry gets one with fd epoch 0, the epoch it had without one.
#[inline(always)]
fn mark_tls_process(tgid: u32) {
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer; a bit only ever set here (and kept by the agent).
        unsafe {
            if (*p).flags & PROC_FLAG_TLS == 0 {
                (*p).flags |= PROC_FLAG_TLS;
            }
        }
        return;
    }
    let state = ProcState {
        decision: Decision::Unset as u32,
        fd_epoch: 0,
        flags: PROC_FLAG_TLS,
        cg_gen: 0,
        cg_id: 0,
        cg_decision: 0,
        _pad: 0,
    };
    if PROCS.insert(tgid, state, BPF_NOEXIST as u64).is_err() {
        // Made by another thread meanwhile, or the table is full.
        match PROCS.get_ptr_mut(tgid) {
            // SAFETY: as above.
            Some(p) => unsafe { (*p).flags |= PROC_FLAG_TLS },
            None => count(Counter::TlsProcsFull, 1),
        }
    }
}

#[inline(always)]
fn ssl_enter(ctx: &ProbeContext, op: u8, ex: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if traced(tgid).is_none() {
        return;
    }
    mark_tls_process(tgid);
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    if ssl == 0 {
        return;
    }
    let (buf, out) = if op == TLS_OP_HANDSHAKE {
        (0, 0)
    } else {
        (
            ctx.arg(1).unwrap_or(0),
            if ex { ctx.arg(3).unwrap_or(0) } else { 0 },
        )
    };
    let call = TlsCall {
        enter_ns: now_ns(),
        ssl,
        buf,
        out,
        fd: NO_FD,
        op,
        _pad: [ex as u8, 0, 0],
    };
    // A handshake run inside a data call must not replace the data call's stash.
    let flags = if op == TLS_OP_HANDSHAKE {
        BPF_NOEXIST as u64
    } else {
        0
    };
    let _ = TLS_CALLS.insert(pid_tgid, &call, flags);
}

#[uprobe]
pub fn tls_enter_ssl_write(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, TLS_OP_WRITE, false);
    0
}

#[uprobe]
pub fn tls_enter_ssl_read(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, TLS_OP_READ, false);
    0
}

#[uprobe]
pub fn tls_enter_ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, TLS_OP_WRITE, true);
    0
}

#[uprobe]
pub fn tls_enter_ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, TLS_OP_READ, true);
    0
}

#[uprobe]
pub fn tls_enter_ssl_handshake(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, TLS_OP_HANDSHAKE, false);
    0
}

/// The return of `SSL_do_handshake`: ends its own stash only.
#[uretprobe]
pub fn tls_exit_ssl_handshake(_ctx: RetProbeContext) -> u32 {
    ssl_exit(None, true);
    0
}

/// The return of the hooked OpenSSL data functions.
#[uretprobe]
pub fn tls_exit_ssl(ctx: RetProbeContext) -> u32 {
    ssl_exit(Some(&ctx), false);
    0
}

#[inline(always)]
fn ssl_exit(ctx: Option<&RetProbeContext>, handshake: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = TLS_CALLS.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: a valid map value pointer, copied before the entry is removed.
    let call = unsafe { *p };
    if handshake != (call.op == TLS_OP_HANDSHAKE) {
        return;
    }
    let _ = TLS_CALLS.remove(pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    let mut fd = call.fd;
    if fd == NO_FD {
        let k = ObjKey {
            ptr: call.ssl,
            tgid,
            _pad: 0,
        };
        if let Some(f) = TLS_SSL_FD.get_ptr(&k) {
            // SAFETY: a valid map value pointer.
            fd = unsafe { *f };
        }
    }
    if fd == NO_FD {
        // A memory BIO: the thread's next TCP syscall moves this call's records.
        let _ = TLS_UNMAPPED.insert(pid_tgid, call.ssl, 0);
    }
    let Some(ctx) = ctx else {
        return;
    };
    // The four functions return a C `int`: only EAX is defined (-1 is 0x00000000ffffffff).
    let rc: u64 = ctx.ret();
    let rc = rc as u32 as i32;
    let len: u64 = if call._pad[0] != 0 {
        // SSL_read_ex/SSL_write_ex: 1 on success, the length in *out.
        if rc != 1 || call.out == 0 {
            return;
        }
        // SAFETY: user memory through the checked helper.
        match unsafe { bpf_probe_read_user(call.out as *const u64) } {
            Ok(v) => v,
            Err(_) => {
                count(Counter::UserReadFailed, 1);
                return;
            }
        }
    } else if rc > 0 {
        rc as u64
    } else {
        return;
    };
    if len == 0 {
        return;
    }
    if fd == NO_FD {
        count(Counter::TlsNoFd, 1);
        return;
    }
    emit_plain(pid_tgid, call.enter_ns, fd, call.op, call.buf, len);
}

// ---------------------------------------------------------------------------------------------
// Go crypto/tls
// ---------------------------------------------------------------------------------------------

/// Reads a `u64` at user address `addr`.
#[inline(always)]
fn ru64(addr: u64) -> Option<u64> {
    // SAFETY: user memory through the checked helper.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
fn go_enter(ctx: &ProbeContext, op: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if traced(tgid).is_none() {
        return;
    }
    mark_tls_process(tgid);
    // SAFETY: `regs` is the probe's register frame, valid for the program's duration.
    let (conn, buf, len, g) = unsafe {
        (
            (*ctx.regs).rax,
            (*ctx.regs).rbx,
            (*ctx.regs).rcx,
            (*ctx.regs).r14,
        )
    };
    // SAFETY: helper taking the program context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let (conn_data, tcp_fd, sysfd) = (cookie & 0xff, (cookie >> 8) & 0xff, (cookie >> 16) & 0xff);
    // c.conn (net.Conn interface: itab, data) -> *net.TCPConn -> conn.fd *netFD -> pfd.Sysfd
    let fd = ru64(conn + conn_data)
        .and_then(|tcp| ru64(tcp + tcp_fd))
        .and_then(|nfd| ru64(nfd + sysfd));
    let Some(fd) = fd else {
        count(Counter::UserReadFailed, 1);
        return;
    };
    if fd > i32::MAX as u64 {
        count(Counter::TlsNoConn, 1);
        return;
    }
    let fd = fd as u32;
    let key = ConnKey { tgid, fd };
    // The handshake runs inside the first Write or Read: mark the socket now so that its
    // records are not emitted as data.
    if let Some(c) = CONNS.get_ptr(&key) {
        // SAFETY: a valid map value pointer.
        mark_tls(&key, unsafe { (*c).conn_id });
    }
    if op == TLS_OP_WRITE {
        // `Write` sends all of `b` or fails, so its plaintext is emitted here, before any of it
        // leaves: emitted at a RET, after the goroutine made its way back up from the
        // syscall, it could reach the agent after the peer's answer to it, which another
        // goroutine read meanwhile.
        if len > 0 && len <= i32::MAX as u64 {
            emit_plain(pid_tgid, now_ns(), fd, TLS_OP_WRITE, buf, len);
        }
        return;
    }
    let call = TlsCall {
        enter_ns: now_ns(),
        ssl: conn,
        buf,
        out: 0,
        fd,
        op,
        _pad: [0; 3],
    };
    let k = ObjKey {
        ptr: g,
        tgid,
        _pad: 0,
    };
    let _ = GO_CALLS.insert(k, &call, 0);
}

#[uprobe]
pub fn tls_enter_go_write(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, TLS_OP_WRITE);
    0
}

#[uprobe]
pub fn tls_enter_go_read(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, TLS_OP_READ);
    0
}

/// A `RET` of `(*Conn).Read` (or of `Write`, which has no stash: its bytes went out at entry):
/// `n` in RAX.
#[uprobe]
pub fn tls_exit_go(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: as in `go_enter`.
    let (n, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).r14) };
    let k = ObjKey {
        ptr: g,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    let Some(p) = GO_CALLS.get_ptr(&k) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, copied before the entry is removed.
    let call = unsafe { *p };
    let _ = GO_CALLS.remove(&k);
    let n = n as i64;
    if n <= 0 {
        return 0;
    }
    emit_plain(
        pid_tgid,
        call.enter_ns,
        call.fd,
        call.op,
        call.buf,
        n as u64,
    );
    0
}
