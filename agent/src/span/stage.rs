//! The span stage: per-connection state, protocol detection through the registry in
//! [`super::detect`], and dispatch of each chunk to the connection's [`ProtocolConn`]; the
//! protocols hand finished spans to a [`SpanSink`].
//!
//! Which side of a connection carries requests follows from the role the kernel saw
//! (`connect` = client, `accept` = server); when the role is unknown, from the direction the
//! detector says requests go. Chunks seen while detecting are kept (a few) and replayed into
//! the parser that wins.
//!
//! Memory: each connection's parser is bounded, but up to 65,536 connections are tracked,
//! each able to hold tens of KiB (HTTP/2 header tables and blocks, remembered statements,
//! timing). The parser state of all connections together is held to a budget
//! ([`DEFAULT_STATE_BUDGET`], `[capture] state_budget_bytes`): about once a second it is
//! measured, and when over, the state of the least recently active connections is dropped
//! until three quarters of the budget remain, each drop counted. Such a connection is
//! parsed again from its next bytes, as if sonde had joined it midway.

use std::collections::HashMap;

use sonde_proto::{CtxKind, Direction};
use sonde_protocol::http1::EndReason;

use super::{
    HttpConfig, ResourceSource, SpanSink, SpanStats,
    detect::{DETECT_MAX_CHUNKS, DETECT_PROBE, DETECTORS, Probe, Replay},
    links::Links,
    protocol::{
        ConnShared, Cx, Next, ProtocolConn, Tracked, addr_pair, dir_idx, kernel_ids, set_role,
    },
};
use crate::{
    clock::WallClock,
    conn::{Chunk, ConnEnd, ConnInfo, StreamSink},
    enrich::ProcessCache,
    events::{ProcEv, ProcKind, TraceCtxEv},
    pipeline::stages::{Stage, enter},
};

/// Trace contexts remembered per connection until their exchange completes.
const MAX_CTX_PER_CONN: usize = 256;

/// Parser state kept for all connections together, by default.
pub const DEFAULT_STATE_BUDGET: usize = 64 << 20;

/// How often (monotonic ns) the state is measured against its budget.
const BUDGET_CHECK_NS: u64 = 1_000_000_000;

enum Proto {
    /// Waiting for a chunk that says what this is; chunks seen meanwhile.
    Detecting {
        chunks: usize,
        held: Vec<(Direction, Chunk)>,
        /// Detecting again after the state was dropped for the budget (already counted
        /// by protocol).
        again: bool,
    },
    Parsing(Box<dyn ProtocolConn>),
    /// Not a protocol sonde parses (or parsing stopped): bytes are ignored.
    Ignored,
}

struct ConnState {
    shared: ConnShared,
    proto: Proto,
    /// The stage's activity count at this connection's last chunk (larger: more recent).
    active: u64,
}

impl ConnState {
    fn heap_bytes(&self) -> usize {
        let proto = match &self.proto {
            Proto::Detecting { held, .. } => held
                .iter()
                .map(|(_, c)| match c {
                    Chunk::Data { bytes, .. } => bytes.len(),
                    Chunk::Gap { .. } => 0,
                })
                .sum::<usize>(),
            Proto::Parsing(p) => p.heap_bytes(),
            Proto::Ignored => 0,
        };
        proto + self.shared.heap_bytes()
    }
}

/// The parts of the stage a protocol's [`Cx`] borrows, apart from the connection map.
struct Parts<O, R> {
    config: HttpConfig,
    clock: WallClock,
    resources: R,
    out: O,
    links: Links,
    stats: SpanStats,
    tracked: Tracked,
}

impl<O: SpanSink, R: ResourceSource> Parts<O, R> {
    fn cx<'a>(&'a mut self, conn: &'a mut ConnShared) -> Cx<'a> {
        Cx {
            conn,
            links: &mut self.links,
            config: &self.config,
            clock: &self.clock,
            stats: &mut self.stats,
            resources: &mut self.resources,
            out: &mut self.out,
            tracked: &self.tracked,
        }
    }
}

/// The span stage.
pub struct SpanStage<O: SpanSink, R: ResourceSource> {
    conns: HashMap<u64, ConnState>,
    parts: Parts<O, R>,
    clock_checked_ns: u64,
    /// Whether the clock is the host's (refreshed) or fixed (replays).
    live_clock: bool,
    /// Chunks seen, all connections together: the order of activity.
    activity: u64,
    budget_checked_ns: u64,
}

impl<O: SpanSink> SpanStage<O, ProcessCache> {
    /// The stage for live capture: resources from `/proc`, the host's wall clock.
    pub fn live(config: HttpConfig, out: O) -> Self {
        Self::live_with(config, ProcessCache::default(), out)
    }
}

impl<O: SpanSink, R: ResourceSource> SpanStage<O, R> {
    /// The stage for live capture with another resource source (Kubernetes, say).
    pub fn live_with(config: HttpConfig, resources: R, out: O) -> Self {
        let mut s = Self::new(config, WallClock::measure(), resources, out);
        s.live_clock = true;
        s
    }

    pub fn new(config: HttpConfig, clock: WallClock, resources: R, out: O) -> Self {
        Self {
            conns: HashMap::new(),
            parts: Parts {
                links: Links::new(config.root_sampler),
                config,
                clock,
                resources,
                out,
                stats: SpanStats::default(),
                tracked: Tracked::default(),
            },
            clock_checked_ns: 0,
            live_clock: false,
            activity: 0,
            budget_checked_ns: 0,
        }
    }

    pub fn stats(&self) -> &SpanStats {
        &self.parts.stats
    }

    pub fn out(&self) -> &O {
        &self.parts.out
    }

    pub fn out_mut(&mut self) -> &mut O {
        &mut self.parts.out
    }

    pub fn into_out(self) -> O {
        self.parts.out
    }

    /// Refreshes the monotonic-to-wall-clock offset.
    pub fn set_clock(&mut self, clock: WallClock) {
        self.parts.clock = clock;
    }

    /// Time passes: the wall-clock offset is measured again about once a minute, so that NTP
    /// adjustments are followed.
    pub fn tick(&mut self, now_ns: u64) {
        let p = &mut self.parts;
        p.out.tick(now_ns);
        p.stats.links_open = p.links.open_len() as u64;
        p.stats.links_peers = p.links.peers_len() as u64;
        p.stats.links_dropped = p.links.dropped_open + p.links.dropped_peers;
        if now_ns.saturating_sub(self.clock_checked_ns) >= 60_000_000_000 {
            self.clock_checked_ns = now_ns;
            if self.live_clock {
                p.clock.refresh();
            }
        }
        if now_ns.saturating_sub(self.budget_checked_ns) >= BUDGET_CHECK_NS {
            self.budget_checked_ns = now_ns;
            self.enforce_budget();
        }
    }

    /// Measures the connections' parser state; over the budget, drops the state of the least
    /// recently active ones until three quarters of it remain.
    pub fn enforce_budget(&mut self) {
        let budget = self
            .parts
            .config
            .state_budget_bytes
            .unwrap_or(DEFAULT_STATE_BUDGET);
        let mut sizes: Vec<(u64, u64, usize)> = self
            .conns
            .iter()
            .map(|(id, c)| (c.active, *id, c.heap_bytes()))
            .collect();
        let mut total: usize = sizes.iter().map(|s| s.2).sum();
        let stats = &mut self.parts.stats;
        if total > budget {
            sizes.sort_unstable();
            let target = budget / 4 * 3;
            for (_, id, bytes) in sizes {
                if total <= target {
                    break;
                }
                if bytes == 0 {
                    continue;
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.proto = Proto::Detecting {
                        chunks: 0,
                        held: Vec::new(),
                        again: true,
                    };
                    c.shared.timing = Default::default();
                    c.shared.ctxs = Default::default();
                    total -= bytes.min(total);
                    stats.state_evictions += 1;
                    stats.state_evicted_bytes += bytes as u64;
                }
            }
        }
        stats.state_bytes = total as u64;
    }

    /// Feeds a chunk to the connection's parser, following a switch of protocol.
    fn feed(&mut self, id: u64, direction: Direction, chunk: &Chunk) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Parsing(parser) = &mut c.proto else {
            return;
        };
        let mut cx = self.parts.cx(&mut c.shared);
        match parser.feed(&mut cx, direction, chunk) {
            Next::Continue => {}
            Next::Switch(mut next) => {
                // The new parser takes the same chunk (it ignores the bytes before its start).
                let again = next.feed(&mut cx, direction, chunk);
                c.proto = Proto::Parsing(next);
                if !matches!(again, Next::Continue) {
                    c.proto = Proto::Ignored;
                }
            }
            Next::Stop => c.proto = Proto::Ignored,
        }
    }

    /// Asks the detectors about a data chunk of a connection still being detected; on a match
    /// the winner takes the held chunks its detector asked for, then this one.
    fn detect(&mut self, id: u64, direction: Direction, chunk: Chunk) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Detecting {
            chunks,
            held,
            again,
        } = &mut c.proto
        else {
            return;
        };
        let again = *again;
        let Chunk::Data { bytes, .. } = &chunk else {
            if held.len() < DETECT_MAX_CHUNKS {
                held.push((direction, chunk));
            }
            return;
        };
        *chunks += 1;
        // A message start split over reads ("PRI * HTTP/2.0" then "\r\n\r\nSM..."): what the
        // direction held so far, then this chunk, up to the longest prefix detection needs.
        let mut start: Vec<u8> = Vec::new();
        for (d, h) in held.iter() {
            if let (true, Chunk::Data { bytes, .. }) = (*d == direction, h) {
                start.extend_from_slice(&bytes[..bytes.len().min(DETECT_PROBE - start.len())]);
            }
        }
        let probed = !start.is_empty();
        start.extend_from_slice(&bytes[..bytes.len().min(DETECT_PROBE - start.len())]);
        let probe = Probe {
            conn: &c.shared.info,
            direction,
            start: &start,
            current: bytes,
        };
        let Some(found) = DETECTORS.iter().find_map(|d| d.detect(&probe)) else {
            if *chunks >= DETECT_MAX_CHUNKS {
                c.proto = Proto::Ignored;
                if !again {
                    self.parts.stats.count_protocol("unknown");
                }
            } else if held.len() < DETECT_MAX_CHUNKS {
                held.push((direction, chunk));
            }
            return;
        };
        set_role(&mut c.shared.info, found.request_dir);
        if !again {
            self.parts.stats.count_protocol(found.name);
        }
        let Proto::Detecting { held, .. } =
            std::mem::replace(&mut c.proto, Proto::Parsing(found.conn))
        else {
            return;
        };
        for (d, h) in &held {
            if found.replay == Replay::All || (probed && *d == direction) {
                self.feed(id, *d, h);
            }
        }
        self.feed(id, direction, &chunk);
    }
}

impl<O: SpanSink, R: ResourceSource> StreamSink for SpanStage<O, R> {
    fn opened(&mut self, conn: &ConnInfo) {
        let _stage = enter(Stage::Parse);
        if let Some(pair) = addr_pair(conn)
            && !self.conns.contains_key(&conn.id)
        {
            *self.parts.tracked.entry(pair).or_default() += 1;
        }
        self.conns.insert(
            conn.id,
            ConnState {
                shared: ConnShared::new(conn),
                proto: Proto::Detecting {
                    chunks: 0,
                    held: Vec::new(),
                    again: false,
                },
                active: self.activity,
            },
        );
    }

    fn chunk(&mut self, conn: &ConnInfo, direction: Direction, chunk: Chunk) {
        let _stage = enter(Stage::Parse);
        let id = conn.id;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.activity += 1;
        c.active = self.activity;
        if let Chunk::Data {
            seq, bytes, meta, ..
        } = &chunk
            && !matches!(c.proto, Proto::Ignored)
        {
            c.shared.timing[dir_idx(direction)].record(*seq, bytes.len() as u64, meta);
        }
        match c.proto {
            Proto::Detecting { .. } => self.detect(id, direction, chunk),
            Proto::Parsing(_) => self.feed(id, direction, &chunk),
            Proto::Ignored => {}
        }
    }

    fn closed(&mut self, conn: &ConnInfo, end: ConnEnd, at_ns: u64) {
        let _stage = enter(Stage::Parse);
        let id = conn.id;
        if let Some(mut c) = self.conns.remove(&id) {
            if let Some(pair) = addr_pair(&c.shared.info)
                && let std::collections::hash_map::Entry::Occupied(mut e) =
                    self.parts.tracked.entry(pair)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            let reason = match end {
                ConnEnd::Closed(_) | ConnEnd::Shutdown => EndReason::Closed,
                ConnEnd::ProcessExit => EndReason::ProcessExited,
                ConnEnd::EvictedIdle | ConnEnd::EvictedLimit => EndReason::Evicted,
            };
            match &mut c.proto {
                Proto::Parsing(parser) => {
                    parser.close(&mut self.parts.cx(&mut c.shared), reason, at_ns);
                }
                Proto::Detecting { .. } => self.parts.stats.count_protocol("undetected"),
                Proto::Ignored => {}
            }
        }
        self.parts.links.forget_conn(id);
    }

    fn trace_ctx(&mut self, conn: &ConnInfo, ctx: TraceCtxEv) {
        let _stage = enter(Stage::Parse);
        if let Some(c) = self.conns.get_mut(&conn.id) {
            if ctx.kind == CtxKind::Server {
                // In progress until its exchange ends: HTTP/2 calls the process makes meanwhile
                // are its children.
                self.parts.links.open_server_decided(
                    (conn.id, ctx.seq),
                    (conn.pid, ctx.meta.tid),
                    ctx.meta.exit_ns,
                    kernel_ids(&ctx),
                );
            }
            let ctxs = &mut c.shared.ctxs;
            if ctxs.len() >= MAX_CTX_PER_CONN {
                ctxs.pop_front();
            }
            ctxs.push_back(ctx);
        }
    }

    fn process(&mut self, ev: &ProcEv) {
        match ev.kind {
            ProcKind::Exec => self.parts.resources.exec(ev.meta.pid, &ev.comm),
            ProcKind::Exit => self.parts.resources.forget(ev.meta.pid),
            _ => {}
        }
    }
}
