//! Per-connection reassembly: kernel records in, ordered byte streams with explicit gaps out.
//!
//! Each data record carries its stream offset (`seq`) per direction, so records that arrive out
//! of order (two threads on one socket, several CPUs) are put back in order, and records that
//! never arrive (ring buffer full) show up as holes. Whatever was not captured is delivered as a
//! [`Chunk::Gap`] of known length: bytes are never glued across a gap, which is what lets a parser
//! skip a body by length and resynchronise.
//!
//! Everything here is bounded: bytes held for reordering per direction, connections tracked,
//! idle time. Each limit that drops or evicts something counts it in [`ConnStats`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
};

use bytes::Bytes;
use sonde_proto::{CloseReason, ConnSource, Direction, Role, Syscall};

use crate::events::{ConnCloseEv, ConnOpenEv, DataEv, Event, Meta, ProcEv, ProcKind, TraceCtxEv};

/// Limits of the tracker; see the field docs for defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections tracked at once (default 65,536); the least recently active is evicted.
    pub max_conns: usize,
    /// Bytes held per direction while waiting for a late record (default 1 MiB).
    pub max_pending_bytes: usize,
    /// How long (kernel time) a hole waits for its record before it becomes a gap (100 ms).
    pub reorder_window_ns: u64,
    /// A connection without events for this long is evicted (default 10 minutes).
    pub idle_timeout_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conns: 65_536,
            max_pending_bytes: 1 << 20,
            reorder_window_ns: 100_000_000,
            idle_timeout_ns: 600_000_000_000,
        }
    }
}

/// A tracked connection as consumers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: u64,
    pub pid: u32,
    pub fd: u32,
    /// The process's side; `Unknown` only when neither the kernel nor the listeners told.
    pub role: Role,
    pub source: ConnSource,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub netns: u32,
    /// Command name of the process when the connection was found (may be empty).
    pub comm: String,
    /// Monotonic ns when sonde learned of the connection.
    pub opened_ns: u64,
    /// The streams are TLS plaintext from the TLS probes (the socket's ciphertext is ignored).
    pub tls: bool,
    /// cgroup v2 id of the process when the connection was found (0 if unknown).
    pub cgroup_id: u64,
}

/// Why part of a stream is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// Beyond the capture size of its syscall (or a sendfile, never captured).
    NotCaptured,
    /// The kernel could not read the process's buffer.
    Unreadable,
    /// Records that never arrived (ring buffer full, or lost otherwise).
    Lost,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotCaptured => "not_captured",
            Self::Unreadable => "unreadable",
            Self::Lost => "lost",
        }
    }
}

/// A piece of one direction of a connection, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    Data {
        seq: u64,
        bytes: Bytes,
        /// Timing and thread of the syscall that moved these bytes.
        meta: Meta,
        syscall: Syscall,
    },
    Gap {
        seq: u64,
        len: u64,
        reason: GapReason,
    },
}

impl Chunk {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Data { seq, .. } | Self::Gap { seq, .. } => *seq,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Self::Data { bytes, .. } => bytes.len() as u64,
            Self::Gap { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How tracking of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEnd {
    Closed(CloseReason),
    ProcessExit,
    EvictedIdle,
    EvictedLimit,
    /// The agent is stopping.
    Shutdown,
}

impl ConnEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed(CloseReason::Close) => "close",
            Self::Closed(CloseReason::Replaced) => "fd_replaced",
            Self::Closed(CloseReason::Stale) => "fd_stale",
            Self::ProcessExit => "process_exit",
            Self::EvictedIdle => "idle",
            Self::EvictedLimit => "conn_limit",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Receives reassembled streams. Calls for one connection come in order: `opened`, chunks of
/// both directions (each direction in stream order), `closed`.
pub trait StreamSink {
    fn opened(&mut self, conn: &ConnInfo);
    fn chunk(&mut self, conn: &ConnInfo, direction: Direction, chunk: Chunk);
    fn closed(&mut self, conn: &ConnInfo, end: ConnEnd, at_ns: u64);
    /// A process exec'd, exited or forked (after its connections were ended, for an exit).
    fn process(&mut self, _ev: &ProcEv) {}
    /// The kernel chose the trace context of a request on `conn`.
    fn trace_ctx(&mut self, _conn: &ConnInfo, _ctx: TraceCtxEv) {}
}

/// Counts of what the tracker did, dropped or evicted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub opened: u64,
    pub discovered: u64,
    pub closed: u64,
    pub evicted_idle: u64,
    pub evicted_limit: u64,
    pub ended_by_exit: u64,
    /// Data for a connection whose open record was lost: tracked from then on.
    pub open_missing: u64,
    pub gap_not_captured_bytes: u64,
    pub gap_unreadable_bytes: u64,
    pub gap_lost_bytes: u64,
    pub gaps_lost: u64,
    /// Records that arrived after a later one and were put back in order.
    pub reordered: u64,
    /// Records whose offset overlapped delivered bytes (two threads writing one socket at the
    /// same instant): delivered in arrival order.
    pub resequenced: u64,
    /// Holes given up on because the reorder buffer was full.
    pub pending_overflows: u64,
    pub roles_inferred: u64,
    /// Connections whose streams switched to TLS plaintext (restarted from the first
    /// plaintext byte; what came before was the handshake).
    pub tls_switched: u64,
    /// Socket records of TLS connections (ciphertext that reached the agent) dropped.
    pub tls_ciphertext_dropped: u64,
}

struct Pending {
    ev: DataEv,
}

#[derive(Default)]
struct DirState {
    next_seq: u64,
    /// Held records by (seq, arrival): two records may carry the same offset (see
    /// `ConnStats::resequenced`), and neither may be lost.
    pending: BTreeMap<(u64, u64), Pending>,
    pending_bytes: usize,
    arrivals: u64,
}

struct Conn {
    info: ConnInfo,
    dirs: [DirState; 2],
    last_ns: u64,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

/// Decides the role of a connection the kernel did not see being opened.
pub type RoleResolver = Box<dyn FnMut(&ConnInfo) -> Role + Send>;

/// The connection table.
pub struct ConnTracker {
    limits: Limits,
    conns: HashMap<u64, Conn>,
    by_pid: HashMap<u32, HashSet<u64>>,
    resolve_role: RoleResolver,
    pub stats: ConnStats,
}

impl ConnTracker {
    pub fn new(limits: Limits, resolve_role: RoleResolver) -> Self {
        Self {
            limits,
            conns: HashMap::new(),
            by_pid: HashMap::new(),
            resolve_role,
            stats: ConnStats::default(),
        }
    }

    /// A tracker that leaves unknown roles unknown (tests, replays).
    pub fn without_role_resolver(limits: Limits) -> Self {
        Self::new(limits, Box::new(|_| Role::Unknown))
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&ConnInfo> {
        self.conns.get(&id).map(|c| &c.info)
    }

    /// Feeds one event. Returns the fds of a process that exited, whose kernel entries the
    /// caller should drop.
    pub fn handle(&mut self, ev: Event, sink: &mut impl StreamSink) -> Option<(u32, Vec<u32>)> {
        match ev {
            Event::ConnOpen(o) => self.open(o, sink),
            Event::Data(d) => self.data(d, sink),
            Event::ConnClose(c) => self.close(c, sink),
            Event::Proc(p) if p.kind == ProcKind::Exit => {
                let r = self.process_exit(p.meta.pid, p.meta.exit_ns, sink);
                sink.process(&p);
                return Some(r);
            }
            Event::Proc(p) => sink.process(&p),
            Event::TraceCtx(c) => {
                if let Some(conn) = self.conns.get(&c.conn_id) {
                    sink.trace_ctx(&conn.info, c);
                }
            }
        }
        None
    }

    fn insert(&mut self, info: ConnInfo, now: u64, sink: &mut impl StreamSink) {
        if self.conns.len() >= self.limits.max_conns
            && let Some(oldest) = self
                .conns
                .values()
                .min_by_key(|c| c.last_ns)
                .map(|c| c.info.id)
        {
            self.stats.evicted_limit += 1;
            self.end(oldest, ConnEnd::EvictedLimit, now, sink);
        }
        sink.opened(&info);
        self.by_pid.entry(info.pid).or_default().insert(info.id);
        self.conns.insert(
            info.id,
            Conn {
                info,
                dirs: Default::default(),
                last_ns: now,
            },
        );
    }

    fn open(&mut self, o: ConnOpenEv, sink: &mut impl StreamSink) {
        if self.conns.contains_key(&o.conn_id) {
            return;
        }
        match o.source {
            ConnSource::Discovered => self.stats.discovered += 1,
            _ => self.stats.opened += 1,
        }
        let mut info = ConnInfo {
            id: o.conn_id,
            pid: o.meta.pid,
            fd: o.fd,
            role: o.role,
            source: o.source,
            local: Some(o.local),
            remote: Some(o.remote),
            netns: o.netns,
            comm: o.comm,
            opened_ns: o.meta.exit_ns,
            tls: false,
            cgroup_id: o.cgroup_id,
        };
        if info.role == Role::Unknown {
            info.role = (self.resolve_role)(&info);
            if info.role != Role::Unknown {
                self.stats.roles_inferred += 1;
            }
        }
        self.insert(info, o.meta.exit_ns, sink);
    }

    fn data(&mut self, d: DataEv, sink: &mut impl StreamSink) {
        let now = d.meta.exit_ns;
        if !self.conns.contains_key(&d.conn_id) {
            self.stats.open_missing += 1;
            let info = ConnInfo {
                id: d.conn_id,
                pid: d.meta.pid,
                fd: d.fd,
                role: d.role,
                source: ConnSource::Discovered,
                local: None,
                remote: None,
                netns: 0,
                comm: String::new(),
                opened_ns: d.meta.enter_ns,
                tls: false,
                cgroup_id: 0,
            };
            self.insert(info, now, sink);
        }
        if let Some(conn) = self.conns.get_mut(&d.conn_id) {
            if d.tls && !conn.info.tls {
                // The first plaintext: the bytes seen so far were TLS records (the handshake,
                // before the kernel knew). Start the connection over on the plaintext streams.
                conn.info.tls = true;
                conn.dirs = Default::default();
                self.stats.tls_switched += 1;
                sink.opened(&conn.info);
            } else if !d.tls && conn.info.tls {
                self.stats.tls_ciphertext_dropped += 1;
                return;
            }
        }
        let limits = self.limits.clone();
        let Some(conn) = self.conns.get_mut(&d.conn_id) else {
            return;
        };
        conn.last_ns = conn.last_ns.max(now);
        let dir = d.direction;
        let state = &mut conn.dirs[dir_index(dir)];
        let stats = &mut self.stats;
        if d.seq > state.next_seq {
            // A hole before this record: hold it until the hole fills or times out.
            state.pending_bytes += d.payload.len();
            state.arrivals += 1;
            state
                .pending
                .insert((d.seq, state.arrivals), Pending { ev: d });
            if state.pending_bytes > limits.max_pending_bytes {
                stats.pending_overflows += 1;
                flush_pending(&conn.info, dir, state, stats, sink, true);
            }
            return;
        }
        deliver(&conn.info, dir, state, stats, d, sink);
        flush_pending(&conn.info, dir, state, stats, sink, false);
    }

    fn close(&mut self, c: ConnCloseEv, sink: &mut impl StreamSink) {
        let Some(conn) = self.conns.get_mut(&c.conn_id) else {
            return;
        };
        // Records lost at the very end of a stream show up only here, against the totals
        // (which count ciphertext on TLS connections: no use there).
        let totals = if conn.info.tls {
            [0, 0]
        } else {
            [c.tx_bytes, c.rx_bytes]
        };
        for (dir, total) in [
            (Direction::Egress, totals[0]),
            (Direction::Ingress, totals[1]),
        ] {
            let state = &mut conn.dirs[dir_index(dir)];
            flush_pending(&conn.info, dir, state, &mut self.stats, sink, true);
            if total > state.next_seq {
                let len = total - state.next_seq;
                lost_gap(&conn.info, dir, state, &mut self.stats, len, sink);
            }
        }
        self.stats.closed += 1;
        self.end(c.conn_id, ConnEnd::Closed(c.reason), c.meta.exit_ns, sink);
    }

    fn process_exit(&mut self, pid: u32, now: u64, sink: &mut impl StreamSink) -> (u32, Vec<u32>) {
        let ids: Vec<u64> = self
            .by_pid
            .get(&pid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut fds = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.conns.get(&id) {
                fds.push(c.info.fd);
            }
            self.stats.ended_by_exit += 1;
            self.end(id, ConnEnd::ProcessExit, now, sink);
        }
        self.by_pid.remove(&pid);
        (pid, fds)
    }

    fn end(&mut self, id: u64, end: ConnEnd, now: u64, sink: &mut impl StreamSink) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        for dir in DIRECTIONS {
            let state = &mut conn.dirs[dir_index(dir)];
            flush_pending(&conn.info, dir, state, &mut self.stats, sink, true);
        }
        if let Some(set) = self.by_pid.get_mut(&conn.info.pid) {
            set.remove(&id);
            if set.is_empty() {
                self.by_pid.remove(&conn.info.pid);
            }
        }
        sink.closed(&conn.info, end, now);
    }

    /// Time passes (monotonic ns): holes older than the reorder window become gaps, idle
    /// connections are evicted.
    pub fn tick(&mut self, now: u64, sink: &mut impl StreamSink) {
        let window = self.limits.reorder_window_ns;
        let mut idle = Vec::new();
        for conn in self.conns.values_mut() {
            for dir in DIRECTIONS {
                let state = &mut conn.dirs[dir_index(dir)];
                let stale = state
                    .pending
                    .values()
                    .next()
                    .is_some_and(|p| p.ev.meta.exit_ns.saturating_add(window) <= now);
                if stale {
                    flush_pending(&conn.info, dir, state, &mut self.stats, sink, true);
                }
            }
            if conn.last_ns.saturating_add(self.limits.idle_timeout_ns) <= now {
                idle.push(conn.info.id);
            }
        }
        for id in idle {
            self.stats.evicted_idle += 1;
            self.end(id, ConnEnd::EvictedIdle, now, sink);
        }
    }

    /// Ends every connection (the agent is stopping).
    pub fn shutdown(&mut self, now: u64, sink: &mut impl StreamSink) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.end(id, ConnEnd::Shutdown, now, sink);
        }
    }
}

/// Delivers one record at the current stream position, with its uncaptured tail as a gap.
fn deliver(
    info: &ConnInfo,
    dir: Direction,
    state: &mut DirState,
    stats: &mut ConnStats,
    d: DataEv,
    sink: &mut impl StreamSink,
) {
    let seq = if d.seq < state.next_seq {
        stats.resequenced += 1;
        state.next_seq
    } else {
        d.seq
    };
    let captured = d.payload.len() as u64;
    let orig = u64::from(d.orig_len).max(captured);
    if captured > 0 {
        sink.chunk(
            info,
            dir,
            Chunk::Data {
                seq,
                bytes: d.payload,
                meta: d.meta,
                syscall: d.syscall,
            },
        );
    }
    if orig > captured {
        let len = orig - captured;
        let reason = if d.read_failed {
            stats.gap_unreadable_bytes += len;
            GapReason::Unreadable
        } else {
            stats.gap_not_captured_bytes += len;
            GapReason::NotCaptured
        };
        sink.chunk(
            info,
            dir,
            Chunk::Gap {
                seq: seq + captured,
                len,
                reason,
            },
        );
    }
    state.next_seq = seq + orig;
}

fn lost_gap(
    info: &ConnInfo,
    dir: Direction,
    state: &mut DirState,
    stats: &mut ConnStats,
    len: u64,
    sink: &mut impl StreamSink,
) {
    stats.gaps_lost += 1;
    stats.gap_lost_bytes += len;
    sink.chunk(
        info,
        dir,
        Chunk::Gap {
            seq: state.next_seq,
            len,
            reason: GapReason::Lost,
        },
    );
    state.next_seq += len;
}

/// Delivers held records that are now in order. With `force`, holes before them are given up
/// on and delivered as lost gaps.
fn flush_pending(
    info: &ConnInfo,
    dir: Direction,
    state: &mut DirState,
    stats: &mut ConnStats,
    sink: &mut impl StreamSink,
    force: bool,
) {
    while let Some(entry) = state.pending.first_entry() {
        let seq = entry.key().0;
        if seq > state.next_seq {
            if !force {
                break;
            }
            let len = seq - state.next_seq;
            lost_gap(info, dir, state, stats, len, sink);
        }
        let p = state.pending.pop_first().map(|(_, p)| p);
        let Some(p) = p else { break };
        state.pending_bytes -= p.ev.payload.len();
        stats.reordered += 1;
        deliver(info, dir, state, stats, p.ev, sink);
    }
}

/// A sink that keeps everything: for tests and small tools.
#[derive(Debug, Default)]
pub struct CollectSink {
    pub conns: BTreeMap<u64, Collected>,
    /// Connection ids in the order they were opened.
    pub order: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct Collected {
    pub info: ConnInfo,
    pub egress: Vec<Chunk>,
    pub ingress: Vec<Chunk>,
    pub end: Option<(ConnEnd, u64)>,
}

impl Collected {
    /// Captured bytes of one direction, with each gap shown as `[gap N reason]`.
    pub fn stream(&self, dir: Direction) -> Vec<u8> {
        let chunks = match dir {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        };
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Data { bytes, .. } => out.extend_from_slice(bytes),
                Chunk::Gap { len, reason, .. } => {
                    out.extend_from_slice(format!("[gap {len} {}]", reason.as_str()).as_bytes())
                }
            }
        }
        out
    }
}

impl StreamSink for CollectSink {
    fn opened(&mut self, conn: &ConnInfo) {
        // Opened again when a connection switches to TLS plaintext: start it over in place.
        if !self.conns.contains_key(&conn.id) {
            self.order.push(conn.id);
        }
        self.conns.insert(
            conn.id,
            Collected {
                info: conn.clone(),
                egress: Vec::new(),
                ingress: Vec::new(),
                end: None,
            },
        );
    }

    fn chunk(&mut self, conn: &ConnInfo, direction: Direction, chunk: Chunk) {
        if let Some(c) = self.conns.get_mut(&conn.id) {
            match direction {
                Direction::Egress => c.egress.push(chunk),
                Direction::Ingress => c.ingress.push(chunk),
            }
        }
    }

    fn closed(&mut self, conn: &ConnInfo, end: ConnEnd, at_ns: u64) {
        if let Some(c) = self.conns.get_mut(&conn.id) {
            c.end = Some((end, at_ns));
        }
    }
}

#[cfg(test)]
mod tests;
