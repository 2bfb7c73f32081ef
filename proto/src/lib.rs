//! The protocol between sonde's kernel programs (`agent-ebpf`) and its agent.
//!
//! Both sides compile this crate, so every record here is `#[repr(C)]`, made of fixed-width
//! integers and byte arrays only, with explicit padding: the kernel writes the bytes, the agent's
//! `events` module reads them, and nothing in between may reinterpret a field. Kinds and counter
//! indices carry explicit numbers that are never reused; a new kind gets a new number.
//!
//! Layout checks at the bottom of this file fail the build if a record changes size or a field
//! moves, so a change here is always a deliberate change to both sides.
#![no_std]

use core::mem::{offset_of, size_of};

/// Largest capture size the kernel programs can be loaded with (bytes copied per syscall).
///
/// The per-CPU scratch buffer is sized from this at compile time; `capture_bytes` chosen at load
/// time may be anything from 0 up to this.
pub const MAX_CAPTURE: usize = 16 * 1024;

/// Capture size used when the user does not choose one: the first 4 KiB of each read or write.
///
/// An HTTP/1 request line plus headers is typically 0.3 to 2 KiB (cookies make the long tail), so
/// 4 KiB keeps every header that decides framing (`Content-Length`, `Transfer-Encoding`) and
/// naming (method, target, `Host`, `traceparent`) for nearly every message; bodies beyond it
/// become counted gaps whose length is known, which the parsers skip by length. For HTTP/2 a
/// write usually starts at a frame boundary, and 4 KiB holds the connection preface, SETTINGS and
/// HPACK-compressed HEADERS frames (rarely above 1 KiB) together with the 9-byte header of the
/// DATA frame that follows, so the frame layer can count its way across the rest. The cost of a
/// capture grows with the bytes copied, so larger values trade CPU for completeness.
pub const DEFAULT_CAPTURE: u32 = 4096;

/// How many `iovec` entries of a `readv`/`writev`/`sendmsg`/`recvmsg` call are walked.
/// Bytes in later entries are still counted in `orig_len` and appear as a gap; the event carries
/// [`DATA_FLAG_IOV_LIMIT`].
pub const MAX_IOVECS: u32 = 64;

/// Names of the maps, shared by both sides.
pub mod maps {
    /// Ring buffer carrying every event record to the agent.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU `u64` counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Explicit per-process tracing decisions and fd epochs: [`crate::ProcState`] by tgid.
    pub const PROCS: &str = "PROCS";
    /// Explicit per-cgroup (v2 id) tracing decisions: [`crate::Decision`] as `u32`.
    pub const CGROUPS: &str = "CGROUPS";
    /// One [`crate::FilterConfig`] at index 0: the decision for processes with no explicit one.
    pub const FILTER: &str = "FILTER";
    /// Tracked TCP connections: [`crate::ConnState`] by [`crate::ConnKey`].
    pub const CONNS: &str = "CONNS";
    /// Per-CPU scratch slots (an array indexed by CPU number, sized by the agent).
    pub const SCRATCH: &str = "SCRATCH";
    /// Sockets of traced processes whose outgoing messages the sk_msg program sees.
    pub const SOCKS: &str = "SOCKS";
    /// The context programs, tail-called by the data programs.
    pub const TAIL: &str = "TAIL";
}

/// Names of the TLS uprobe programs (`agent-ebpf/src/tls.rs`).
pub mod tls_programs {
    /// Entry of `SSL_write`, `SSL_read` (`ssl, buf, num`) and of the `_ex` forms
    /// (`ssl, buf, num, size_t *out`).
    pub const SSL_WRITE: &str = "tls_enter_ssl_write";
    pub const SSL_READ: &str = "tls_enter_ssl_read";
    pub const SSL_WRITE_EX: &str = "tls_enter_ssl_write_ex";
    pub const SSL_READ_EX: &str = "tls_enter_ssl_read_ex";
    /// Entry of `SSL_do_handshake`: the socket is known as TLS before its first record.
    pub const SSL_HANDSHAKE: &str = "tls_enter_ssl_handshake";
    /// Return of the four data functions (a uretprobe: C stacks do not move).
    pub const SSL_RET: &str = "tls_exit_ssl";
    /// Return of `SSL_do_handshake` (which OpenSSL may call inside `SSL_read`/`SSL_write`:
    /// it only ends a handshake stash, never the data call around it).
    pub const SSL_HANDSHAKE_RET: &str = "tls_exit_ssl_handshake";
    /// Entry of Go `crypto/tls.(*Conn).Write` / `Read` (register ABI).
    pub const GO_WRITE: &str = "tls_enter_go_write";
    pub const GO_READ: &str = "tls_enter_go_read";
    /// Each `RET` instruction of those two functions (Go stacks move: no uretprobes).
    pub const GO_RET: &str = "tls_exit_go";
}

/// Go struct offsets packed into the attach cookie of the Go entry probes, one byte each
/// (bits 0-7, 8-15, 16-23), resolved per binary from its DWARF:
/// `tls.Conn.conn` interface data word, `net.conn.fd` (inside `net.TCPConn`), and
/// `netFD.pfd` + `poll.FD.Sysfd`.
pub const fn go_cookie(conn_data: u8, tcpconn_fd: u8, netfd_sysfd: u8) -> u64 {
    conn_data as u64 | (tcpconn_fd as u64) << 8 | (netfd_sysfd as u64) << 16
}

/// Names of the programs that are not tracepoints.
pub mod programs {
    /// sock_ops at the cgroup v2 root: puts connections of traced processes in `SOCKS`.
    pub const SOCK_OPS: &str = "inject_sock_ops";
    /// sock_ops for kernels whose sock_ops programs cannot call `bpf_get_current_pid_tgid`
    /// (Linux 6.1): puts every new outgoing connection in `SOCKS`.
    pub const SOCK_OPS_ALL: &str = "inject_sock_ops_all";
    /// sk_msg on `SOCKS`: splices `traceparent` into outgoing HTTP/1 requests.
    pub const SK_MSG: &str = "inject_sk_msg";
    /// Tail-called at a request start on a server connection (index 0 of `TAIL`).
    pub const CTX_SERVER: &str = "ctx_server";
    /// Tail-called at a request start on a client connection (index 1 of `TAIL`).
    pub const CTX_CLIENT: &str = "ctx_client";
    /// Tail-called at a send on an HTTP/2 client connection that holds a frame header
    /// (index 2 of `TAIL`).
    pub const CTX_H2_CLIENT: &str = "ctx_h2_client";
    /// Every tracepoint program of the object: (program name, i.e. the function name in
    /// `agent-ebpf`, tracepoint category, tracepoint).
    pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
        ("syscalls_enter_read", "syscalls", "sys_enter_read"),
        ("syscalls_exit_read", "syscalls", "sys_exit_read"),
        ("syscalls_enter_readv", "syscalls", "sys_enter_readv"),
        ("syscalls_exit_readv", "syscalls", "sys_exit_readv"),
        ("syscalls_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
        ("syscalls_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
        ("syscalls_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
        ("syscalls_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
        ("syscalls_enter_write", "syscalls", "sys_enter_write"),
        ("syscalls_exit_write", "syscalls", "sys_exit_write"),
        ("syscalls_enter_writev", "syscalls", "sys_enter_writev"),
        ("syscalls_exit_writev", "syscalls", "sys_exit_writev"),
        ("syscalls_enter_sendto", "syscalls", "sys_enter_sendto"),
        ("syscalls_exit_sendto", "syscalls", "sys_exit_sendto"),
        ("syscalls_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
        ("syscalls_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
        (
            "syscalls_enter_sendfile64",
            "syscalls",
            "sys_enter_sendfile64",
        ),
        (
            "syscalls_exit_sendfile64",
            "syscalls",
            "sys_exit_sendfile64",
        ),
        ("syscalls_enter_connect", "syscalls", "sys_enter_connect"),
        ("syscalls_exit_connect", "syscalls", "sys_exit_connect"),
        ("syscalls_enter_accept", "syscalls", "sys_enter_accept"),
        ("syscalls_exit_accept", "syscalls", "sys_exit_accept"),
        ("syscalls_enter_accept4", "syscalls", "sys_enter_accept4"),
        ("syscalls_exit_accept4", "syscalls", "sys_exit_accept4"),
        ("syscalls_enter_close", "syscalls", "sys_enter_close"),
        (
            "syscalls_enter_close_range",
            "syscalls",
            "sys_enter_close_range",
        ),
        ("syscalls_enter_dup2", "syscalls", "sys_enter_dup2"),
        ("syscalls_enter_dup3", "syscalls", "sys_enter_dup3"),
        ("sched_process_exec", "sched", "sched_process_exec"),
        ("sched_process_exit", "sched", "sched_process_exit"),
        ("sched_process_fork", "sched", "sched_process_fork"),
    ];
}

/// Names of the global variables the agent sets at load time.
pub mod globals {
    /// `u32`: bytes captured per syscall, at most [`crate::MAX_CAPTURE`].
    pub const CAPTURE_BYTES: &str = "CAPTURE_BYTES";
    /// `u32`: bytes pending in the ring buffer before the kernel wakes the agent up.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// [`crate::KernelOffsets`], resolved from the running kernel's BTF.
    pub const OFFSETS: &str = "OFFSETS";
    /// `u32`: 1 when `traceparent` injection into outgoing requests is on.
    pub const INJECT: &str = "INJECT";
    /// `u64`: head-sampling threshold for new root traces, see [`crate::sampled_by_ratio`].
    pub const SAMPLE_THRESHOLD: &str = "SAMPLE_THRESHOLD";
}

/// [`globals::SAMPLE_THRESHOLD`] that keeps every trace (ratio 1.0, the default).
pub const SAMPLE_ALL: u64 = 1 << 63;

/// The head-sampling decision for a new root trace, as a function of its id alone, so that
/// the kernel, the agent and other agents (and OpenTelemetry SDKs' `TraceIdRatioBased`, which
/// uses the same rule) agree without talking to each other: sampled when the id's last eight
/// bytes, big-endian and shifted right by one, are below `threshold` = ratio × 2^63.
#[inline(always)]
pub const fn sampled_by_ratio(trace_id: &[u8; 16], threshold: u64) -> bool {
    let t = trace_id;
    let low = u64::from_be_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]);
    (low >> 1) < threshold
}

/// Kind of an event record; the first field of every [`EventHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`DataEvent`] followed by `captured_len` payload bytes.
    Data = 1,
    /// [`ConnOpenEvent`]: a TCP connection became known.
    ConnOpen = 2,
    /// [`ConnCloseEvent`]: a TCP connection ended or its fd was reused.
    ConnClose = 3,
    /// [`ProcEvent`]: a process called `execve`.
    ProcExec = 4,
    /// [`ProcEvent`]: the last thread of a process exited.
    ProcExit = 5,
    /// [`ProcEvent`]: a process forked; `other_pid` is the child.
    ProcFork = 6,
    /// [`TraceCtxEvent`]: trace context the kernel assigned to a request.
    TraceCtx = 7,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Data,
            2 => Self::ConnOpen,
            3 => Self::ConnClose,
            4 => Self::ProcExec,
            5 => Self::ProcExit,
            6 => Self::ProcFork,
            7 => Self::TraceCtx,
            other => return Err(other),
        })
    }
}

/// Header at the start of every event record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// CPU the record was written on.
    pub cpu: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall entered (equal to `exit_ns` where there is
    /// no syscall, as for scheduler events).
    pub enter_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall returned or the event happened.
    pub exit_ns: u64,
}

/// Which way bytes moved, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process wrote them (write, writev, sendto, sendmsg, sendfile).
    Egress = 1,
    /// The process read them (read, readv, recvfrom, recvmsg).
    Ingress = 2,
}

impl TryFrom<u8> for Direction {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::Egress),
            2 => Ok(Self::Ingress),
            other => Err(other),
        }
    }
}

/// Which end of the connection the traced process is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not seen being opened (the connection existed before sonde, or the fd was inherited or
    /// passed); the agent infers the role from listening ports.
    Unknown = 0,
    /// The process called `connect`.
    Client = 1,
    /// The process called `accept`/`accept4`.
    Server = 2,
}

impl TryFrom<u8> for Role {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Self::Unknown),
            1 => Ok(Self::Client),
            2 => Ok(Self::Server),
            other => Err(other),
        }
    }
}

/// How the kernel learned about a connection.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnSource {
    Connect = 1,
    Accept = 2,
    /// First seen on a read or write: opened before sonde started, inherited, or passed.
    Discovered = 3,
}

impl TryFrom<u8> for ConnSource {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::Connect),
            2 => Ok(Self::Accept),
            3 => Ok(Self::Discovered),
            other => Err(other),
        }
    }
}

/// Why a connection ended, as far as the kernel can tell.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// `close(fd)`.
    Close = 1,
    /// The fd now names another socket: `dup2`/`dup3` onto it, or a new `connect`/`accept`.
    Replaced = 2,
    /// The fd was found naming a different file after `exec` or `close_range`.
    Stale = 3,
}

impl TryFrom<u8> for CloseReason {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::Close),
            2 => Ok(Self::Replaced),
            3 => Ok(Self::Stale),
            other => Err(other),
        }
    }
}

/// The syscall that moved the bytes of a [`DataEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    Read = 1,
    Readv = 2,
    Recvfrom = 3,
    Recvmsg = 4,
    Write = 5,
    Writev = 6,
    Sendto = 7,
    Sendmsg = 8,
    /// `sendfile` to a socket: bytes are counted, never captured (they come from a file).
    Sendfile = 9,
}

impl Syscall {
    pub const fn direction(self) -> Direction {
        match self {
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg => Direction::Ingress,
            Self::Write | Self::Writev | Self::Sendto | Self::Sendmsg | Self::Sendfile => {
                Direction::Egress
            }
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Readv => "readv",
            Self::Recvfrom => "recvfrom",
            Self::Recvmsg => "recvmsg",
            Self::Write => "write",
            Self::Writev => "writev",
            Self::Sendto => "sendto",
            Self::Sendmsg => "sendmsg",
            Self::Sendfile => "sendfile",
        }
    }
}

impl TryFrom<u8> for Syscall {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => Self::Read,
            2 => Self::Readv,
            3 => Self::Recvfrom,
            4 => Self::Recvmsg,
            5 => Self::Write,
            6 => Self::Writev,
            7 => Self::Sendto,
            8 => Self::Sendmsg,
            9 => Self::Sendfile,
            other => return Err(other),
        })
    }
}

/// More iovecs than [`MAX_IOVECS`]: bytes beyond the walked ones were not captured.
pub const DATA_FLAG_IOV_LIMIT: u8 = 1;
/// Copying from the process's memory failed: the payload is shorter than it should be.
pub const DATA_FLAG_READ_FAILED: u8 = 2;
/// Plaintext of a TLS connection, taken from a TLS library call (OpenSSL `SSL_write`/`SSL_read`
/// and their `_ex` forms, Go `crypto/tls.(*Conn).Write`/`Read`), not from a syscall. Its `seq`
/// counts plaintext bytes; the `syscall` field says which way (`Write` or `Read`). The socket's
/// own ciphertext is not emitted once the kernel knows the socket carries TLS.
pub const DATA_FLAG_TLS: u8 = 4;

/// Bytes moved by one read- or write-family syscall on a tracked TCP connection.
///
/// ```text
/// | EventHeader (32) | conn_id | seq | orig_len | captured_len | fd | dir | role | sys | flags |
/// | payload: captured_len bytes, the first bytes of the transfer ...                          |
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataEvent {
    pub header: EventHeader,
    /// Connection id, unique for the life of the loaded programs.
    pub conn_id: u64,
    /// Offset of the first byte in this direction's byte stream (counted from when sonde
    /// first saw the connection).
    pub seq: u64,
    /// Bytes the syscall transferred (its return value).
    pub orig_len: u32,
    /// Payload bytes that follow this record: `min(orig_len, capture size)`, less on failures.
    pub captured_len: u32,
    pub fd: u32,
    /// [`Direction`].
    pub direction: u8,
    /// [`Role`] of the process on this connection.
    pub role: u8,
    /// [`Syscall`].
    pub syscall: u8,
    /// `DATA_FLAG_*` bits.
    pub flags: u8,
}

/// A TCP connection became known to the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnOpenEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    pub fd: u32,
    /// [`Role`].
    pub role: u8,
    /// [`ConnSource`].
    pub source: u8,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    /// Host byte order.
    pub remote_port: u16,
    /// TCP state (`TCP_ESTABLISHED` = 1, ...) when the connection was found.
    pub state: u8,
    pub _pad: [u8; 3],
    /// IPv4 addresses use the first 4 bytes, network byte order.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Network namespace inode number of the socket, 0 if unknown.
    pub netns: u32,
    pub _pad2: u32,
    /// The task's `comm` (NUL-padded): short-lived processes may be gone before the agent
    /// can read `/proc`.
    pub comm: [u8; 16],
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`): which container it runs in,
    /// even after the process is gone.
    pub cgroup_id: u64,
}

/// A TCP connection ended, or its fd stopped naming it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCloseEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    /// Bytes the process wrote on this connection since sonde saw it (end of the egress stream).
    pub tx_bytes: u64,
    /// Bytes the process read on this connection since sonde saw it (end of the ingress stream).
    pub rx_bytes: u64,
    pub fd: u32,
    /// [`CloseReason`].
    pub reason: u8,
    pub _pad: [u8; 3],
}

/// Process lifecycle: exec, exit, fork.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub header: EventHeader,
    /// Fork: the child's pid. Exec: the pid before exec (differs when a thread other than the
    /// leader called exec). Exit: 0.
    pub other_pid: u32,
    pub _pad: u32,
    /// The task's `comm` (NUL-padded).
    pub comm: [u8; 16],
}

/// Which span a [`TraceCtxEvent`] is for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtxKind {
    /// An incoming request read on an accepted connection.
    Server = 1,
    /// An outgoing request written on a connected one.
    Client = 2,
    /// An outgoing HTTP/2 request (its HEADERS) on a connected socket: `seq` is the stream id.
    H2Client = 3,
}

/// Where the ids of a [`TraceCtxEvent`] come from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtxSource {
    /// A new trace: no incoming `traceparent`, or no incoming request to be a child of.
    NewTrace = 1,
    /// The incoming request's `traceparent`: the caller is the parent.
    Header = 2,
    /// A child of the server span this thread is serving.
    Linked = 3,
    /// More than one incoming request is outstanding on this thread: not linked, a new trace.
    Ambiguous = 4,
    /// The outgoing request carries its own `traceparent`: the agent adopts it.
    Adopted = 5,
}

/// What happened to `traceparent` injection for an outgoing request.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectOutcome {
    /// Server side, or injection off.
    NotAttempted = 0,
    Injected = 1,
    /// The request already had a `traceparent`.
    SkipExisting = 2,
    /// The header block did not end within the first send or the scan window.
    SkipHeadersIncomplete = 3,
    /// The request line did not end within the scan window.
    SkipRequestLine = 4,
    /// The connection's request boundaries are unknown (pipelining, chunked bodies, a
    /// connection older than sonde): not sure where a request starts.
    SkipNotAtBoundary = 5,
    /// The kernel refused to grow the message.
    SkipPushFailed = 6,
    /// An HTTP/2 request of a process that serves requests whose context the agent decides
    /// (HTTP/2 servers) from a thread that holds none: a header from the kernel could start a
    /// trace the agent would not link, so the request goes unchanged and the agent links it.
    SkipUnlinked = 7,
}

/// Trace context the kernel chose for a request, so the span the agent builds later carries
/// exactly the ids that went on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtxEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    /// Stream offset of the request's first byte in its direction (ingress for a server,
    /// egress for a client).
    pub seq: u64,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero: no parent.
    pub parent_span_id: [u8; 8],
    /// W3C trace flags.
    pub flags: u8,
    /// [`CtxKind`].
    pub kind: u8,
    /// [`CtxSource`].
    pub source: u8,
    /// [`InjectOutcome`].
    pub inject: u8,
    pub _pad: [u8; 4],
}

impl TryFrom<u8> for CtxKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::Server),
            2 => Ok(Self::Client),
            3 => Ok(Self::H2Client),
            other => Err(other),
        }
    }
}

impl TryFrom<u8> for CtxSource {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => Self::NewTrace,
            2 => Self::Header,
            3 => Self::Linked,
            4 => Self::Ambiguous,
            5 => Self::Adopted,
            other => return Err(other),
        })
    }
}

impl TryFrom<u8> for InjectOutcome {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            0 => Self::NotAttempted,
            1 => Self::Injected,
            2 => Self::SkipExisting,
            3 => Self::SkipHeadersIncomplete,
            4 => Self::SkipRequestLine,
            5 => Self::SkipNotAtBoundary,
            6 => Self::SkipPushFailed,
            7 => Self::SkipUnlinked,
            other => return Err(other),
        })
    }
}

impl InjectOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotAttempted => "not_attempted",
            Self::Injected => "injected",
            Self::SkipExisting => "existing_traceparent",
            Self::SkipHeadersIncomplete => "headers_incomplete",
            Self::SkipRequestLine => "request_line_too_long",
            Self::SkipNotAtBoundary => "not_at_request_boundary",
            Self::SkipPushFailed => "push_failed",
            Self::SkipUnlinked => "unlinked_h2_server",
        }
    }
}

/// Key of [`maps::CONNS`]: one entry per open fd that names a tracked TCP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of [`maps::CONNS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub conn_id: u64,
    /// Address of the kernel `struct sock`: identifies the socket when the fd is revalidated.
    pub sk: u64,
    /// Next egress stream offset (bytes written so far).
    pub tx_seq: u64,
    /// Next ingress stream offset (bytes read so far).
    pub rx_seq: u64,
    /// Egress offset where the next HTTP/1 request is expected (client side), for injection.
    pub tx_next_req: u64,
    /// Ingress offset where the next HTTP/1 request is expected (server side); `u64::MAX`
    /// while a head is being read in several parts.
    pub rx_next_req: u64,
    /// Ingress offset where the request whose head is being read started.
    pub rx_req_start: u64,
    /// The process's fd epoch when this entry was last validated ([`ProcState::fd_epoch`]).
    pub epoch: u32,
    /// [`Role`].
    pub role: u8,
    /// `CONN_*_DESYNC` bits: request boundaries of that direction are no longer known.
    pub http: u8,
    /// Reads of the current request head seen so far, when it spans several (0: none).
    pub rx_pending: u8,
    pub _pad: u8,
    /// HTTP/2 client connections (`CONN_TX_H2`): the highest stream id whose request HEADERS
    /// went out; `tx_next_req` is then where the next frame header starts.
    pub tx_h2_stream: u32,
    pub _pad2: u32,
}

/// [`ConnState::http`]: egress request boundaries unknown (no more injection).
pub const CONN_TX_DESYNC: u8 = 1;
/// [`ConnState::http`]: ingress request boundaries unknown (no more server contexts).
pub const CONN_RX_DESYNC: u8 = 2;
/// The name `traceparent` Huffman-coded as HPACK does (RFC 7541 Appendix B): 59 bits and
/// five of EOS padding. The kernel looks for it (and the raw name) before it adds the header.
pub const H2_TRACEPARENT_HUFFMAN: [u8; 8] = [0x4d, 0x83, 0x21, 0x6b, 0x1d, 0x85, 0xa9, 0x3f];

/// [`ConnState::http`]: the egress is HTTP/2 (the client preface went out); frames are followed.
pub const CONN_TX_H2: u8 = 4;
/// [`ConnState::http`]: the egress carried the name `traceparent` (the application or a proxy
/// sets it): never inject on this connection.
pub const CONN_TX_OWN_TP: u8 = 8;

/// A tracing decision, as `u32` in the filter maps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// No decision here: ask the next level (process, then cgroup, then the default).
    Unset = 0,
    Trace = 1,
    Ignore = 2,
}

impl TryFrom<u32> for Decision {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Self::Unset),
            1 => Ok(Self::Trace),
            2 => Ok(Self::Ignore),
            other => Err(other),
        }
    }
}

/// Value of [`maps::PROCS`] (key: tgid as `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcState {
    /// [`Decision`] for this process.
    pub decision: u32,
    /// Bumped by the kernel when fds may have been freed without `close` (`exec`,
    /// `close_range`): cached fd classifications from an older epoch are checked again.
    pub fd_epoch: u32,
    /// `PROC_FLAG_*` bits.
    pub flags: u32,
    /// The kernel's cache of the cgroup/default decision for a process without a process
    /// decision (`agent-ebpf/src/filter.rs`): valid while [`FilterConfig::generation`] equals
    /// `cg_gen` (0: nothing cached) and the calling task's cgroup is `cg_id`.
    pub cg_gen: u32,
    pub cg_id: u64,
    /// [`Decision`] cached for `cg_id`.
    pub cg_decision: u32,
    pub _pad: u32,
}

/// Children forked later get the same decision (set for `--pid`/`--exclude-pid`, not for the
/// agent's own process, whose test children must be traceable).
pub const PROC_FLAG_INHERIT: u32 = 1;
/// Outgoing requests of this process are never linked to the request its thread serves: its
/// runtime moves work between threads (Go's goroutines), so a thread says nothing about which
/// request a call belongs to.
pub const PROC_FLAG_NO_LINK: u32 = 2;
/// The process has called a hooked TLS function (OpenSSL or Go `crypto/tls`), set by the
/// kernel's TLS probes before anything of the call is stashed. Its socket syscalls look up the
/// TLS maps (`agent-ebpf/src/tls.rs`); those of every other process skip the three lookups,
/// which could only miss.
pub const PROC_FLAG_TLS: u32 = 4;

/// Value of [`maps::FILTER`] at index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// [`Decision`] for processes with neither a process nor a cgroup decision.
    pub default_decision: u32,
    /// Moved by the agent (never to 0) with every change of `CGROUPS` or the default, after
    /// the change: decisions the kernel cached in `PROCS` under another generation are
    /// looked up again.
    pub generation: u32,
}

/// Offsets into kernel structures, resolved by the agent from `/sys/kernel/btf/vmlinux` and
/// set as a global at load time: Rust eBPF has no CO-RE relocations, so this is how the programs
/// stay correct across kernel versions. Each field is a byte offset within the named struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_state: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_dport: u32,
    pub sock_num: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_net: u32,
    pub net_ns_inum: u32,
    pub sock_protocol: u32,
    /// Offset of `group_dead` in the `sched_process_exit` tracepoint record, 0 where the
    /// kernel's tracepoint has no such field (before 6.16): then a leader's exit counts.
    pub tp_exit_group_dead: u32,
    /// Offset of `old_pid` in `sched_process_exec`, and of the pids in `sched_process_fork`.
    pub tp_exec_old_pid: u32,
    pub tp_fork_parent_pid: u32,
    pub tp_fork_child_pid: u32,
}

/// Indices of the per-CPU counters in [`maps::COUNTERS`]. The agent sums them over CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Data events written to the ring buffer.
    DataEvents = 0,
    /// Payload bytes written to the ring buffer.
    CapturedBytes = 1,
    /// Bytes moved by the syscalls behind the data events (captured or not).
    TransferredBytes = 2,
    /// Data events whose payload is shorter than the transfer.
    TruncatedEvents = 3,
    /// Bytes of transfers that were not captured (capture size, iovec limit, copy failures).
    TruncatedBytes = 4,
    /// Records of any kind lost because the ring buffer was full.
    RingbufFull = 5,
    /// Transfer bytes carried by data events lost to a full ring buffer.
    RingbufFullBytes = 6,
    /// Syscalls not followed because the per-thread argument stash was full.
    ArgsFull = 7,
    /// Connections not tracked because the connection table was full.
    ConnTableFull = 8,
    /// Failed reads of the process's memory.
    UserReadFailed = 9,
    /// Failed reads of kernel structures while classifying an fd.
    KernelReadFailed = 10,
    /// Connections opened (connect/accept) and tracked.
    ConnOpened = 11,
    /// Connections found on first use (existing before sonde, inherited or passed).
    ConnDiscovered = 12,
    /// Connections whose tracking ended (close, dup2, reuse).
    ConnClosed = 13,
    /// Calls with more iovecs than were walked.
    IovLimit = 14,
    /// Fds classified as not being TCP sockets (files, pipes, unix and UDP sockets, ...).
    FdNotTcp = 15,
    /// Cached fd entries found naming another file after exec/close_range and dropped.
    FdStale = 16,
    /// Process events (exec, exit, fork) written.
    ProcEvents = 17,
    /// Data syscalls whose connection entry vanished before the syscall returned
    /// (closed by another thread): their bytes are lost.
    ConnGoneAtExit = 18,
    /// Incoming requests given a trace context in the kernel.
    CtxServer = 19,
    /// ...of which continued the caller's trace (valid `traceparent`).
    CtxFromHeader = 20,
    /// Outgoing requests linked as children of the server span of their thread.
    CtxLinked = 21,
    /// Outgoing requests not linked because several incoming requests were outstanding.
    CtxAmbiguous = 22,
    /// Outgoing requests given a `traceparent` on the wire.
    Injected = 23,
    /// Outgoing requests looked at but not injected (each reason is in the event).
    InjectSkipped = 24,
    /// Connections whose request boundaries were lost (no more injection or server contexts).
    HttpDesync = 25,
    /// Tail calls into the context programs that failed (their requests get no kernel context).
    TailCallFailed = 26,
    /// Outgoing requests of processes whose threads do not map to requests (Go): not linked.
    CtxNotLinkable = 27,
    /// TLS plaintext events written (OpenSSL and Go crypto/tls probes).
    TlsEvents = 28,
    /// Syscalls on sockets known to carry TLS whose ciphertext was not emitted.
    TlsCiphertextSkipped = 29,
    /// TLS library calls that moved bytes on an SSL object whose socket is not known yet:
    /// their plaintext is lost.
    TlsNoFd = 30,
    /// TLS library calls whose socket is not a tracked TCP connection (not traced, not TCP,
    /// or the Go connection is not a `*net.TCPConn`).
    TlsNoConn = 31,
    /// TLS library calls of a process that could not get a `PROCS` entry for its TLS flag
    /// (the table is full): its socket syscalls are not checked for TLS, so ciphertext may be
    /// emitted (and parsed as an unknown protocol) and plaintext may lack its socket.
    TlsProcsFull = 32,
}

/// Number of slots in [`maps::COUNTERS`]; room for counters added later.
pub const COUNTER_SLOTS: u32 = 64;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Self; 33] = [
        Self::DataEvents,
        Self::CapturedBytes,
        Self::TransferredBytes,
        Self::TruncatedEvents,
        Self::TruncatedBytes,
        Self::RingbufFull,
        Self::RingbufFullBytes,
        Self::ArgsFull,
        Self::ConnTableFull,
        Self::UserReadFailed,
        Self::KernelReadFailed,
        Self::ConnOpened,
        Self::ConnDiscovered,
        Self::ConnClosed,
        Self::IovLimit,
        Self::FdNotTcp,
        Self::FdStale,
        Self::ProcEvents,
        Self::ConnGoneAtExit,
        Self::CtxServer,
        Self::CtxFromHeader,
        Self::CtxLinked,
        Self::CtxAmbiguous,
        Self::Injected,
        Self::InjectSkipped,
        Self::HttpDesync,
        Self::TailCallFailed,
        Self::CtxNotLinkable,
        Self::TlsEvents,
        Self::TlsCiphertextSkipped,
        Self::TlsNoFd,
        Self::TlsNoConn,
        Self::TlsProcsFull,
    ];

    /// A stable snake_case name for metrics and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DataEvents => "data_events",
            Self::CapturedBytes => "captured_bytes",
            Self::TransferredBytes => "transferred_bytes",
            Self::TruncatedEvents => "truncated_events",
            Self::TruncatedBytes => "truncated_bytes",
            Self::RingbufFull => "ringbuf_full_events",
            Self::RingbufFullBytes => "ringbuf_full_bytes",
            Self::ArgsFull => "args_stash_full",
            Self::ConnTableFull => "conn_table_full",
            Self::UserReadFailed => "user_read_failed",
            Self::KernelReadFailed => "kernel_read_failed",
            Self::ConnOpened => "conns_opened",
            Self::ConnDiscovered => "conns_discovered",
            Self::ConnClosed => "conns_closed",
            Self::IovLimit => "iov_limit",
            Self::FdNotTcp => "fd_not_tcp",
            Self::FdStale => "fd_stale",
            Self::ProcEvents => "proc_events",
            Self::ConnGoneAtExit => "conn_gone_at_exit",
            Self::CtxServer => "ctx_server",
            Self::CtxFromHeader => "ctx_from_header",
            Self::CtxLinked => "ctx_linked",
            Self::CtxAmbiguous => "ctx_ambiguous",
            Self::Injected => "injected",
            Self::InjectSkipped => "inject_skipped",
            Self::HttpDesync => "http_desync",
            Self::TailCallFailed => "tail_call_failed",
            Self::CtxNotLinkable => "ctx_not_linkable",
            Self::TlsEvents => "tls_events",
            Self::TlsCiphertextSkipped => "tls_ciphertext_skipped",
            Self::TlsNoFd => "tls_no_fd",
            Self::TlsNoConn => "tls_no_conn",
            Self::TlsProcsFull => "tls_procs_full",
        }
    }
}

// Layout checks: a failure here means a record changed shape; update both sides together.
const _: () = {
    assert!(size_of::<EventHeader>() == 32);
    assert!(size_of::<DataEvent>() == 64);
    assert!(offset_of!(DataEvent, conn_id) == 32);
    assert!(offset_of!(DataEvent, seq) == 40);
    assert!(offset_of!(DataEvent, orig_len) == 48);
    assert!(offset_of!(DataEvent, flags) == 63);
    assert!(size_of::<ConnOpenEvent>() == 120);
    assert!(offset_of!(ConnOpenEvent, cgroup_id) == 112);
    assert!(offset_of!(ConnOpenEvent, local_addr) == 56);
    assert!(offset_of!(ConnOpenEvent, netns) == 88);
    assert!(size_of::<ConnCloseEvent>() == 64);
    assert!(size_of::<ProcEvent>() == 56);
    assert!(size_of::<ConnKey>() == 8);
    assert!(size_of::<ConnState>() == 72);
    assert!(size_of::<TraceCtxEvent>() == 88);
    assert!(offset_of!(TraceCtxEvent, trace_id) == 48);
    assert!(size_of::<ProcState>() == 32);
    assert!(size_of::<FilterConfig>() == 8);
    assert!(size_of::<KernelOffsets>() == 24 * 4);
    assert!(Counter::ALL.len() as u32 <= COUNTER_SLOTS);
    assert!(DEFAULT_CAPTURE as usize <= MAX_CAPTURE);
    assert!(MAX_CAPTURE.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: each type is #[repr(C)], made only of integers and byte arrays with explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ProcState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FilterConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{c:?}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            EventKind::Data,
            EventKind::ConnOpen,
            EventKind::ConnClose,
            EventKind::ProcExec,
            EventKind::ProcExit,
            EventKind::ProcFork,
            EventKind::TraceCtx,
        ] {
            assert_eq!(EventKind::try_from(k as u32), Ok(k));
        }
        assert_eq!(EventKind::try_from(0), Err(0));
        assert_eq!(EventKind::try_from(8), Err(8));
        for o in 0..=6u8 {
            assert_eq!(InjectOutcome::try_from(o).map(|x| x as u8), Ok(o));
        }
        assert!(InjectOutcome::try_from(8).is_err());
        for c in 1..=5u8 {
            assert_eq!(CtxSource::try_from(c).map(|x| x as u8), Ok(c));
        }
        assert!(CtxSource::try_from(0).is_err());
        for s in 1..=9u8 {
            let sc = Syscall::try_from(s).unwrap();
            assert_eq!(sc as u8, s);
        }
        assert!(Syscall::try_from(10).is_err());
        assert_eq!(Syscall::Recvmsg.direction(), Direction::Ingress);
        assert_eq!(Syscall::Sendfile.direction(), Direction::Egress);
    }
}
