//! Which fds are TCP sockets, and the connection table.
//!
//! Socket classification without kprobes. The hooks are syscall tracepoints, which see only an fd
//! number, and the fd may name a file, a pipe, a unix or UDP socket, or a TCP socket that sonde
//! never saw being opened (it existed before sonde started, was inherited over fork, or was
//! passed with SCM_RIGHTS). So the kernel programs answer "is this fd a TCP socket" themselves by
//! walking the kernel's own structures from the current task:
//!
//! ```text
//! task_struct.files -> files_struct.fdt -> fdtable.fd[fd] -> file
//!   file.f_inode->i_mode is S_IFSOCK          (a socket, not a file or pipe)
//!   file.private_data -> socket: type == SOCK_STREAM, socket.sk -> sock
//!   sock: family AF_INET/AF_INET6, sk_protocol == IPPROTO_TCP; addresses and ports from
//!   sock_common, network namespace from sock_common.skc_net
//! ```
//!
//! Rust eBPF has no CO-RE, so the agent resolves every offset from the running kernel's BTF and
//! passes them in `OFFSETS` (reads go through `bpf_probe_read_kernel`, which lockdown=integrity
//! allows). The walk costs about ten probe reads, so its answer is cached per (tgid, fd): TCP
//! sockets in `CONNS` (with the `struct sock` address and the connection id), everything else in
//! `FD_NOT_TCP`. A cached answer is dropped when the fd is closed (`close`, `dup2`/`dup3` onto it)
//! and re-checked when the process's fd epoch moved (`exec`, `close_range`, which free fds
//! without a `close` call). A process gets a random epoch of its own when its `PROCS` entry is
//! made (exec, or fork from a traced parent), so what an exited process left cached is never
//! believed for a later process with the same pid. So an fd that is closed and reused is a new
//! connection with a new id, and every tracked connection has both addresses, whichever way sonde learned of it.
//! `connect` and `accept` run the same walk on their fd to record the role.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_comm, bpf_probe_read_kernel, generated::bpf_get_current_task},
};
use sonde_proto::{
    CONN_RX_DESYNC, CONN_TX_DESYNC, CloseReason, ConnCloseEvent, ConnKey, ConnOpenEvent,
    ConnSource, ConnState, Counter, EventKind, Role,
};

use crate::{
    OFFSETS, global,
    maps::{CONNS, FD_NOT_TCP},
    util::{count, emit, header, next_conn_id, now_ns},
};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: i16 = 1;
const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

macro_rules! off {
    ($field:ident) => {
        global(&OFFSETS.$field) as u64
    };
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn rk<T>(base: u64, off: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer yields an error, never
    // a fault.
    unsafe { bpf_probe_read_kernel((base + off) as *const T) }
}

/// A TCP socket found behind an fd.
pub struct SockInfo {
    pub sk: u64,
    pub family: u16,
    pub state: u8,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub netns: u32,
}

pub enum Class {
    Tcp(SockInfo),
    NotTcp,
    /// A kernel read failed: nothing is cached, the next call tries again.
    Failed,
}

/// The `struct file *` behind `fd` in the current task, or 0 if the fd is not open.
#[inline(always)]
fn fd_file(fd: u32) -> Result<u64, i32> {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = rk(task, off!(task_files))?;
    let fdt: u64 = rk(files, off!(files_fdt))?;
    let max_fds: u32 = rk(fdt, off!(fdtable_max_fds))?;
    if fd >= max_fds {
        return Ok(0);
    }
    let fd_array: u64 = rk(fdt, off!(fdtable_fd))?;
    rk(fd_array, fd as u64 * 8)
}

/// The `struct socket *` behind `fd` if it is a stream socket of any family, else 0.
#[inline(always)]
fn fd_stream_socket(fd: u32) -> Result<u64, i32> {
    let file = fd_file(fd)?;
    if file == 0 {
        return Ok(0);
    }
    let inode: u64 = rk(file, off!(file_inode))?;
    let mode: u16 = rk(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(0);
    }
    let socket: u64 = rk(file, off!(file_private_data))?;
    let stype: i16 = rk(socket, off!(socket_type))?;
    if stype != SOCK_STREAM {
        return Ok(0);
    }
    Ok(socket)
}

/// Classifies `fd` of the current process.
#[inline(always)]
pub fn classify(fd: u32) -> Class {
    match classify_inner(fd) {
        Ok(Some(info)) => Class::Tcp(info),
        Ok(None) => Class::NotTcp,
        Err(_) => {
            count(Counter::KernelReadFailed, 1);
            Class::Failed
        }
    }
}

#[inline(always)]
fn classify_inner(fd: u32) -> Result<Option<SockInfo>, i32> {
    let socket = fd_stream_socket(fd)?;
    if socket == 0 {
        return Ok(None);
    }
    let sk: u64 = rk(socket, off!(socket_sk))?;
    if sk == 0 {
        return Ok(None);
    }
    let family: u16 = rk(sk, off!(sock_family))?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let protocol: u16 = rk(sk, off!(sock_protocol))?;
    if protocol != IPPROTO_TCP {
        return Ok(None);
    }
    let mut info = SockInfo {
        sk,
        family,
        state: rk(sk, off!(sock_state))?,
        local_port: rk(sk, off!(sock_num))?,
        remote_port: u16::from_be(rk(sk, off!(sock_dport))?),
        local_addr: [0; 16],
        remote_addr: [0; 16],
        netns: 0,
    };
    if family == AF_INET {
        let l: [u8; 4] = rk(sk, off!(sock_rcv_saddr))?;
        let r: [u8; 4] = rk(sk, off!(sock_daddr))?;
        info.local_addr[..4].copy_from_slice(&l);
        info.remote_addr[..4].copy_from_slice(&r);
    } else {
        info.local_addr = rk(sk, off!(sock_v6_rcv_saddr))?;
        info.remote_addr = rk(sk, off!(sock_v6_daddr))?;
    }
    if off!(net_ns_inum) != 0 {
        let net: u64 = rk(sk, off!(sock_net))?;
        if net != 0 {
            info.netns = rk(net, off!(net_ns_inum)).unwrap_or(0);
        }
    }
    Ok(Some(info))
}

/// Starts tracking `info` as the connection behind `key`; returns its id, or `None` if the
/// table is full.
#[inline(always)]
pub fn open_conn(
    key: &ConnKey,
    info: &SockInfo,
    role: Role,
    source: ConnSource,
    epoch: u32,
    pid_tgid: u64,
    enter_ns: u64,
) -> Option<u64> {
    let conn_id = next_conn_id();
    let state = ConnState {
        conn_id,
        sk: info.sk,
        tx_seq: 0,
        rx_seq: 0,
        tx_next_req: 0,
        rx_next_req: 0,
        rx_req_start: 0,
        epoch,
        role: role as u8,
        // A connection found mid-stream: where its requests start is unknown.
        http: if matches!(source, ConnSource::Discovered) {
            CONN_TX_DESYNC | CONN_RX_DESYNC
        } else {
            0
        },
        rx_pending: 0,
        _pad: 0,
        tx_h2_stream: 0,
        _pad2: 0,
    };
    if CONNS.insert(key, state, BPF_ANY as u64).is_err() {
        count(Counter::ConnTableFull, 1);
        return None;
    }
    count(
        if matches!(source, ConnSource::Discovered) {
            Counter::ConnDiscovered
        } else {
            Counter::ConnOpened
        },
        1,
    );
    let ev = ConnOpenEvent {
        header: header(EventKind::ConnOpen, pid_tgid, enter_ns, now_ns()),
        conn_id,
        fd: key.fd,
        role: role as u8,
        source: source as u8,
        family: info.family,
        local_port: info.local_port,
        remote_port: info.remote_port,
        state: info.state,
        _pad: [0; 3],
        local_addr: info.local_addr,
        remote_addr: info.remote_addr,
        netns: info.netns,
        _pad2: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() },
    };
    emit(&ev);
    Some(conn_id)
}

/// Stops tracking the connection behind `key`, if any, and tells the agent why.
#[inline(always)]
pub fn close_conn(key: &ConnKey, reason: CloseReason, pid_tgid: u64) {
    let Some(state) = CONNS.get_ptr(key) else {
        return;
    };
    // SAFETY: a valid map value pointer; copied out before the entry is removed.
    let state = unsafe { *state };
    let _ = CONNS.remove(key);
    count(Counter::ConnClosed, 1);
    let now = now_ns();
    let ev = ConnCloseEvent {
        header: header(EventKind::ConnClose, pid_tgid, now, now),
        conn_id: state.conn_id,
        tx_bytes: state.tx_seq,
        rx_bytes: state.rx_seq,
        fd: key.fd,
        reason: reason as u8,
        _pad: [0; 3],
    };
    emit(&ev);
}

/// Forgets everything cached about `key` (the fd was closed or replaced).
#[inline(always)]
pub fn forget_fd(key: &ConnKey, reason: CloseReason, pid_tgid: u64) {
    close_conn(key, reason, pid_tgid);
    // A lookup first: a delete takes the bucket lock even when the key is absent.
    if FD_NOT_TCP.get_ptr(key).is_some() {
        let _ = FD_NOT_TCP.remove(key);
    }
}

/// The connection behind `fd` for a data syscall of a traced process at fd epoch `epoch`:
/// `Some((conn_id, role))` if it is a TCP socket (discovering it if new), `None` otherwise.
#[inline(always)]
pub fn conn_for_data(key: &ConnKey, epoch: u32, pid_tgid: u64) -> Option<(u64, u8)> {
    if let Some(c) = CONNS.get_ptr_mut(key) {
        // SAFETY: a valid map value pointer.
        let (conn_id, role, sk, c_epoch) =
            unsafe { ((*c).conn_id, (*c).role, (*c).sk, (*c).epoch) };
        if c_epoch == epoch {
            return Some((conn_id, role));
        }
        // Fds may have been freed without close since this entry was made: check again.
        match classify(key.fd) {
            Class::Tcp(info) if info.sk == sk => {
                // SAFETY: as above; the entry is still in the map (this thread holds no lock,
                // but a concurrent close only makes this write land in a freed slot the map
                // reuses, which the next lookup revalidates).
                unsafe { (*c).epoch = epoch };
                return Some((conn_id, role));
            }
            Class::Failed => return None,
            class => {
                count(Counter::FdStale, 1);
                close_conn(key, CloseReason::Stale, pid_tgid);
                return after_classify(key, class, epoch, pid_tgid);
            }
        }
    }
    if let Some(e) = FD_NOT_TCP.get_ptr(key) {
        // SAFETY: a valid map value pointer.
        if unsafe { *e } == epoch {
            return None;
        }
    }
    after_classify(key, classify(key.fd), epoch, pid_tgid)
}

#[inline(always)]
fn after_classify(key: &ConnKey, class: Class, epoch: u32, pid_tgid: u64) -> Option<(u64, u8)> {
    match class {
        Class::Tcp(info) => {
            let now = now_ns();
            let id = open_conn(
                key,
                &info,
                Role::Unknown,
                ConnSource::Discovered,
                epoch,
                pid_tgid,
                now,
            )?;
            Some((id, Role::Unknown as u8))
        }
        Class::NotTcp => {
            count(Counter::FdNotTcp, 1);
            let _ = FD_NOT_TCP.insert(key, epoch, BPF_ANY as u64);
            None
        }
        Class::Failed => None,
    }
}
