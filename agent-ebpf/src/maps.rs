//! Every map of the kernel programs. Each says its key, who writes it, who reads it, and how its
//! entries go away.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf, SockHash},
};
use sonde_proto::{
    COUNTER_SLOTS, ConnKey, ConnState, DataEvent, FilterConfig, MAX_CAPTURE, ProcState,
};

/// Length of `traceparent: 00-<32>-<16>-<2>\r\n`, the line injection inserts.
pub const HEADER_LEN: usize = 70;

/// Every event record, to the agent. Written by all programs; read by the agent's `events`
/// module. Size set by the agent at load time (`--ring-buffer-bytes`); when full, records are
/// dropped and counted (`Counter::RingbufFull`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters indexed by `sonde_proto::Counter`. Written by all programs; summed by the
/// agent. Never cleared.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per-process decisions and fd epochs. Key: tgid. Written by the agent (decisions) and by
/// `process.rs` (fork inheritance, a random epoch for each new entry, epoch bumps on
/// exec/close_range); read by `filter.rs`.
/// Entries are removed when the process (or, for thread entries made at clone, the thread) exits.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// Per-cgroup decisions. Key: cgroup v2 id. Written and cleaned by the agent; read by
/// `filter.rs`.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// The default decision at index 0. Written by the agent; read by `filter.rs`.
#[map]
pub static FILTER: Array<FilterConfig> = Array::with_max_entries(1, 0);

/// Tracked TCP connections by (tgid, fd). Written by `sockets.rs` (connect, accept, discovery)
/// and `syscalls.rs` (stream offsets); removed on close/dup2/dup3 and when a revalidation finds
/// another socket; entries of exited processes are removed by the agent on the exit event.
#[map]
pub static CONNS: HashMap<ConnKey, ConnState> = HashMap::with_max_entries(65536, 0);

/// Fds known not to be TCP sockets, by (tgid, fd); value: the fd epoch of the check. Written by
/// `sockets.rs`; removed on close/dup2/dup3. LRU: an evicted entry only costs a new check.
#[map]
pub static FD_NOT_TCP: LruHashMap<ConnKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// Arguments of a syscall in flight, by pid_tgid (one per thread). Written in place at enter
/// (inserted at a thread's first stash); marked consumed at exit (`enter_ns = 0`), not
/// deleted, so a syscall costs lookups and no bucket lock; removed when the thread exits. So it
/// holds an entry per live traced thread that has made a hooked socket call; when full, the
/// stash of a new thread fails and is counted (`args_stash_full`).
#[map]
pub static ARGS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(32768, 0);

/// Scratch where a data record is assembled before it is copied to `EVENTS`, one slot per CPU
/// (indexed by CPU number; the agent sizes it to the possible CPUs at load time). A plain array,
/// not a per-CPU one: per-CPU values are limited to 32 KiB, and a slot is 32 KiB + 64 bytes.
#[map]
pub static SCRATCH: Array<DataBuf> = Array::with_max_entries(256, 0);

/// Per-CPU connection id counters (the CPU number goes in the top bits of each id).
#[map]
pub static CONN_IDS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What a syscall's enter half leaves for its exit half.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallArgs {
    pub enter_ns: u64,
    /// Data buffer, iovec array, or 0.
    pub buf: u64,
    /// Buffer length or iovec count.
    pub count: u64,
    /// The connection seen at enter (0 for connect/accept).
    pub conn_id: u64,
    pub fd: u32,
    /// `sonde_proto::Syscall` for data calls, or one of the `OP_*` below.
    pub op: u8,
    pub _pad: [u8; 3],
}

/// `SyscallArgs::op` for connect and accept (data calls use `sonde_proto::Syscall` numbers).
pub const OP_CONNECT: u8 = 100;
pub const OP_ACCEPT: u8 = 101;

/// A data record under construction. The payload is twice the largest capture so that the
/// verifier can prove every copy (offset < MAX_CAPTURE, length <= MAX_CAPTURE) stays inside.
/// The rest is scratch for request-head scanning and injection plans (`context.rs`).
#[repr(C)]
pub struct DataBuf {
    pub event: DataEvent,
    pub payload: [u8; 2 * MAX_CAPTURE],
    /// Offsets of line starts found in the head being scanned.
    pub lines: [u16; HEAD_LINES],
    pub nlines: u32,
    /// Head scan results: end of the head, `traceparent` value and `Content-Length` value
    /// offsets (0 when absent), a `Transfer-Encoding` header.
    pub head_end: u32,
    pub tp_off: u32,
    pub cl_off: u32,
    pub te: u32,
    /// Bytes being scanned (kept in memory for the verifier's sake).
    pub scan_len: u32,
    pub plan: Plan,
    /// A trace context record under construction.
    pub ctx: sonde_proto::TraceCtxEvent,
    /// A thread context under construction.
    pub thread: ThreadCtx,
    /// What a data program hands to the context program it tail-calls (`TAIL`).
    pub tc: TailArgs,
    /// The HTTP/2 frame walk's state (`h2ctx.rs`), in memory for the verifier's sake.
    pub h2: H2Walk,
}

/// See [`DataBuf::h2`]: offsets are relative to the send's start.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct H2Walk {
    /// Where the next frame header starts.
    pub pos: u32,
    /// The first new request's HEADERS frame: offset, payload length, flags, stream id.
    pub off: u32,
    pub len: u32,
    pub flags: u32,
    pub stream: u32,
    /// Highest request stream id so far.
    pub last_stream: u32,
    /// 1 when a request was found; any HEADERS frame was seen; the walk reached the send's end.
    pub found: u32,
    pub headers: u32,
    pub done: u32,
    /// 1 when the connection cannot be followed further.
    pub fail: u32,
}

/// Arguments of a tail call into a context program, in the scratch slot of the CPU (the
/// caller and the callee run back to back on it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TailArgs {
    pub key: sonde_proto::ConnKey,
    pub pid_tgid: u64,
    /// Stream offset where the request starts.
    pub seq: u64,
    /// Bytes of the request's start in the payload.
    pub len: u32,
    pub _pad: u32,
    /// Bytes the send is asked to send (client side).
    pub total: u64,
}

/// Index of the HTTP/2 client context program in [`TAIL`].
pub const TAIL_CTX_H2: u32 = 2;

/// Index of the server context program in [`TAIL`].
pub const TAIL_CTX_SERVER: u32 = 0;
/// Index of the client context program in [`TAIL`].
pub const TAIL_CTX_CLIENT: u32 = 1;

/// The context programs, filled by the agent. Head scanning runs in programs of its own so
/// that each is verified once, with a fresh state, instead of inside every data program.
#[map]
pub static TAIL: ProgramArray = ProgramArray::with_max_entries(3, 0);

/// Bytes of a request head the kernel scans (for `traceparent`, `Content-Length`, its end).
pub const HEAD_SCAN: u32 = 1024;
/// Lines of a request head the kernel looks at (a power of two).
pub const HEAD_LINES: usize = 32;

/// The request a thread is serving. Key: tid in [`THREAD_CTX`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadCtx {
    pub trace_id: [u8; 16],
    /// The server span's id: the parent of outgoing requests made meanwhile.
    pub span_id: [u8; 8],
    pub flags: u8,
    pub _pad: [u8; 7],
    /// Requests read and not yet answered by this thread.
    pub outstanding: u32,
    /// More than one request was outstanding at some point since the thread was last idle.
    pub ambiguous: u32,
    pub conn_id: u64,
    pub at_ns: u64,
}

/// An injection the sk_msg program should do for the send in flight on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Plan {
    /// Where the header goes: one past the request line's LF (HTTP/1), the end of the
    /// HEADERS frame's header block (HTTP/2).
    pub at: u32,
    /// Set by the sk_msg program on the first message of the send.
    pub done: u8,
    /// `InjectOutcome` as decided (enter) and then as done (sk_msg).
    pub outcome: u8,
    /// [`PLAN_HTTP1`] or [`PLAN_H2`].
    pub kind: u8,
    pub _pad: u8,
    pub conn_id: u64,
    pub seq: u64,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: [u8; 8],
    pub flags: u8,
    pub source: u8,
    pub _pad2: [u8; 6],
    /// `traceparent: 00-<trace>-<span>-<flags>\r\n` (HTTP/1), or the HPACK literal field
    /// of [`crate::h2ctx::FIELD_LEN`] bytes (HTTP/2).
    pub header: [u8; HEADER_LEN],
    pub _pad3: [u8; 2],
    /// HTTP/2: offset of the HEADERS frame in the send, and its payload length as sent.
    pub frame_off: u32,
    pub frame_len: u32,
}

/// [`Plan::kind`]: a header line after the HTTP/1 request line.
pub const PLAN_HTTP1: u8 = 0;
/// [`Plan::kind`]: a literal header field at the end of an HTTP/2 HEADERS frame.
pub const PLAN_H2: u8 = 1;

/// Processes that read from an accepted connection (servers), by tgid. Written at the first
/// read of each accepted connection; read when an HTTP/2 request goes out (such processes get
/// their HTTP/2 calls linked by the agent, not by the kernel). LRU: exited ones age out.
#[map]
pub static SERVER_PROCS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// Requests being served, by tid. Written by `context.rs` at request reads (server) and
/// response writes; read when the same thread sends a request. LRU: a thread that dies
/// mid-request leaves an entry that ages out (and is ignored when stale).
#[map]
pub static THREAD_CTX: LruHashMap<u32, ThreadCtx> = LruHashMap::with_max_entries(16384, 0);

/// Injection plans, by pid_tgid: written at a send's enter, executed by the sk_msg program,
/// reported and removed at the send's exit.
#[map]
pub static PLANS: HashMap<u64, Plan> = HashMap::with_max_entries(4096, 0);

/// Connected sockets of traced processes, by socket cookie: the sk_msg program runs on their
/// sends. Written by the sock_ops program when the connection is established; the kernel
/// removes a socket when it closes.
#[map]
pub static SOCKS: SockHash<u64> = SockHash::with_max_entries(65536, 0);

/// The `traceparent` found in the first part of a request head that continues in later
/// reads, by connection id. Written and removed by `context.rs` (LRU: a connection that dies
/// mid-head leaves an entry that ages out).
#[map]
pub static PENDING: LruHashMap<u64, sonde_proto::TraceCtxEvent> =
    LruHashMap::with_max_entries(4096, 0);

/// Sockets whose `connect` came from a traced process, by cookie, until they are established.
#[map]
pub static CONNECTING: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// A TLS library call in flight on a thread (OpenSSL) or goroutine (Go).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub enter_ns: u64,
    /// The `SSL *` (OpenSSL) or `*tls.Conn` (Go).
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *` out-parameter of `SSL_read_ex`/`SSL_write_ex`, else 0.
    pub out: u64,
    /// The socket fd when known (learned from a syscall inside the call, or Go's struct walk),
    /// else `u32::MAX`.
    pub fd: u32,
    /// `TLS_OP_*`.
    pub op: u8,
    pub _pad: [u8; 3],
}

pub const TLS_OP_WRITE: u8 = 1;
pub const TLS_OP_READ: u8 = 2;
pub const TLS_OP_HANDSHAKE: u8 = 3;

/// OpenSSL calls in flight, by pid_tgid. Written at the entry uprobes; read by the syscall
/// tracepoints that fire inside the call (to learn the fd); taken by the uretprobe. LRU: a
/// thread killed inside a call leaves an entry that ages out.
#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16384, 0);

/// Key of [`TLS_SSL_FD`] and [`GO_CALLS`]: an object address within a process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ObjKey {
    pub ptr: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Socket fd of each `SSL *`, by (tgid, ssl). Written by `tls.rs` when a syscall runs inside an
/// OpenSSL call (or right after one, for memory BIOs); read by the uretprobe. LRU: freed SSL
/// objects are never seen, so old entries age out; a reused address is remapped by its next
/// syscall.
#[map]
pub static TLS_SSL_FD: LruHashMap<ObjKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// An OpenSSL call on this thread returned without a known socket (memory BIOs, as in
/// Node.js): the thread's next TCP syscall names it. By pid_tgid; value: the `SSL *`.
#[map]
pub static TLS_UNMAPPED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Plaintext stream state of a socket that carries TLS.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsSock {
    /// The connection this entry was made for: an entry with another id is stale (fd reused).
    pub conn_id: u64,
    /// Next plaintext offsets (written, read).
    pub tx_seq: u64,
    pub rx_seq: u64,
}

/// Sockets known to carry TLS, by (tgid, fd). Written by `tls.rs`; read by every data syscall
/// on a tracked connection (their ciphertext is not emitted). LRU, checked against the
/// connection id, so entries of closed fds need no removal.
#[map]
pub static TLS_SOCKS: LruHashMap<ConnKey, TlsSock> = LruHashMap::with_max_entries(65536, 0);

/// Go `crypto/tls` calls in flight, by (tgid, goroutine `g` address from R14): goroutines
/// move between threads, so the thread id cannot key them. Written at the function's entry,
/// taken at its `RET`s. LRU: a goroutine that panics out of the call leaves an entry behind.
#[map]
pub static GO_CALLS: LruHashMap<ObjKey, TlsCall> = LruHashMap::with_max_entries(16384, 0);
