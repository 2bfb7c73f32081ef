//! Every map of the kernel programs. Each says its key, who writes it, who reads it, and how its
//! entries go away.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sonde_proto::{
    COUNTER_SLOTS, ConnKey, ConnState, DataEvent, FilterConfig, MAX_CAPTURE, ProcState,
};

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
/// `process.rs` (fork inheritance, epoch bumps on exec/close_range); read by `filter.rs`.
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

/// Arguments of a syscall in flight, by pid_tgid (one per thread). Written at enter; taken at
/// exit; removed when the thread exits (a thread killed inside a syscall never reaches exit).
#[map]
pub static ARGS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16384, 0);

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
#[repr(C)]
pub struct DataBuf {
    pub event: DataEvent,
    pub payload: [u8; 2 * MAX_CAPTURE],
}
