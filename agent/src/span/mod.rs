//! Reassembled streams in, spans out: protocol detection per connection, the HTTP/1 parser,
//! request/response timing from syscall timestamps, and the span attributes.
//!
//! [`SpanStage`] is a [`StreamSink`]: it sits right after `conn` and hands finished spans to a
//! [`SpanSink`]. Which side of a connection carries requests follows from the role the kernel
//! saw (`connect` = client, `accept` = server); when the role is unknown, from which direction
//! starts with a request line.

mod http;
pub mod ids;
pub mod timing;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use sonde_export::span::{Resource, Span};
use sonde_proto::{CtxKind, Direction, Role};
use sonde_protocol::{
    detect::{Detected, detect},
    http1::{EndReason, Http1Conn, Http1Event, Limits as Http1Limits, Side},
};

pub use self::http::{ConnStrings, HttpConfig};
use self::timing::TimingIndex;
use crate::{
    clock::WallClock,
    conn::{Chunk, ConnEnd, ConnInfo, StreamSink},
    enrich::ProcessCache,
    events::{ProcEv, ProcKind, TraceCtxEv},
};

/// Trace contexts remembered per connection until their exchange completes.
const MAX_CTX_PER_CONN: usize = 256;

/// Receives finished spans.
pub trait SpanSink {
    fn span(&mut self, span: Span);
    /// Time passes (monotonic ns), for sinks that hold spans.
    fn tick(&mut self, _now_ns: u64) {}
}

impl SpanSink for Vec<Span> {
    fn span(&mut self, span: Span) {
        self.push(span);
    }
}

/// Where spans get their resource (the traced process, or something standing in for it).
pub trait ResourceSource {
    fn resource(&mut self, conn: &ConnInfo) -> Arc<Resource>;
    /// The process exec'd or exited.
    fn forget(&mut self, _pid: u32) {}
}

impl ResourceSource for ProcessCache {
    fn resource(&mut self, conn: &ConnInfo) -> Arc<Resource> {
        ProcessCache::resource(self, conn.pid, &conn.comm)
    }

    fn forget(&mut self, pid: u32) {
        ProcessCache::forget(self, pid);
    }
}

/// One resource for everything (replays, tests).
pub struct FixedResource(pub Arc<Resource>);

impl ResourceSource for FixedResource {
    fn resource(&mut self, _conn: &ConnInfo) -> Arc<Resource> {
        self.0.clone()
    }
}

/// Counts of the span stage, by protocol and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    pub spans_created: u64,
    /// Connections by detected protocol: `http1`, `http2`, `unknown`, `undetected`.
    pub conns_by_protocol: BTreeMap<&'static str, u64>,
    /// Parse errors by protocol and kind.
    pub parse_errors: BTreeMap<(&'static str, &'static str), u64>,
    /// Exchanges without a complete response, by reason.
    pub incomplete: BTreeMap<&'static str, u64>,
    /// Connections whose parsing stopped (upgrade, CONNECT tunnel).
    pub stopped: u64,
    /// Spans by how their trace context was decided (`header`, `linked`, `new`, ...).
    pub trace_links: BTreeMap<&'static str, u64>,
    /// Client spans by injection outcome.
    pub injections: BTreeMap<&'static str, u64>,
}

/// Chunks held per connection while its protocol is being detected.
const DETECT_MAX_CHUNKS: usize = 8;

enum Proto {
    /// Waiting for a chunk that says what this is.
    Detecting,
    Http1 {
        parser: Box<Http1Conn>,
        /// Which direction carries requests.
        request_dir: Direction,
    },
    /// Not a protocol sonde parses (or parsing stopped): bytes are ignored.
    Ignored,
}

struct ConnState {
    info: ConnInfo,
    strings: ConnStrings,
    proto: Proto,
    /// Data chunks seen while detecting.
    detect_chunks: usize,
    timing: [TimingIndex; 2],
    resource: Option<Arc<Resource>>,
    /// Contexts the kernel chose for requests of this connection, oldest first.
    ctxs: VecDeque<TraceCtxEv>,
}

fn dir_idx(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

/// The span stage.
pub struct SpanStage<O: SpanSink, R: ResourceSource> {
    config: HttpConfig,
    http1_limits: Http1Limits,
    clock: WallClock,
    conns: HashMap<u64, ConnState>,
    resources: R,
    out: O,
    events: Vec<Http1Event>,
    clock_checked_ns: u64,
    /// Whether the clock is the host's (refreshed) or fixed (replays).
    live_clock: bool,
    pub stats: SpanStats,
}

impl<O: SpanSink> SpanStage<O, ProcessCache> {
    /// The stage for live capture: resources from `/proc`, the host's wall clock.
    pub fn live(config: HttpConfig, out: O) -> Self {
        let mut s = Self::new(config, WallClock::measure(), ProcessCache::default(), out);
        s.live_clock = true;
        s
    }
}

impl<O: SpanSink, R: ResourceSource> SpanStage<O, R> {
    pub fn new(config: HttpConfig, clock: WallClock, resources: R, out: O) -> Self {
        Self {
            config,
            http1_limits: Http1Limits::default(),
            clock,
            conns: HashMap::new(),
            resources,
            out,
            events: Vec::new(),
            clock_checked_ns: 0,
            live_clock: false,
            stats: SpanStats::default(),
        }
    }

    pub fn out(&self) -> &O {
        &self.out
    }

    pub fn out_mut(&mut self) -> &mut O {
        &mut self.out
    }

    pub fn into_out(self) -> O {
        self.out
    }

    /// Refreshes the monotonic-to-wall-clock offset.
    pub fn set_clock(&mut self, clock: WallClock) {
        self.clock = clock;
    }

    /// Time passes: the wall-clock offset is measured again about once a minute, so that NTP
    /// adjustments are followed.
    pub fn tick(&mut self, now_ns: u64) {
        self.out.tick(now_ns);
        if now_ns.saturating_sub(self.clock_checked_ns) >= 60_000_000_000 {
            self.clock_checked_ns = now_ns;
            if self.live_clock {
                self.clock.refresh();
            }
        }
    }

    fn count_proto(&mut self, name: &'static str) {
        *self.stats.conns_by_protocol.entry(name).or_default() += 1;
    }

    /// Decides the protocol from a data chunk; returns whether parsing should start with it.
    fn detect(&mut self, id: u64, dir: Direction, bytes: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        c.detect_chunks += 1;
        let request_dir = match detect(bytes) {
            Detected::Http1Request => Some(dir),
            Detected::Http1Response => Some(other(dir)),
            Detected::Http2Preface => {
                c.proto = Proto::Ignored;
                self.count_proto("http2");
                return false;
            }
            _ => None,
        };
        match request_dir {
            Some(request_dir) => {
                // The kernel's role wins when it knows one; a connection whose bytes contradict
                // it (a server that sends requests) is parsed as its bytes say.
                c.proto = Proto::Http1 {
                    parser: Box::new(Http1Conn::new(self.http1_limits.clone())),
                    request_dir,
                };
                if c.info.role == Role::Unknown {
                    c.info.role = if request_dir == Direction::Egress {
                        Role::Client
                    } else {
                        Role::Server
                    };
                }
                self.count_proto("http1");
                true
            }
            None if c.detect_chunks >= DETECT_MAX_CHUNKS => {
                c.proto = Proto::Ignored;
                self.count_proto("unknown");
                false
            }
            None => false,
        }
    }

    fn handle_events(&mut self, id: u64) {
        if self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            match ev {
                Http1Event::Exchange(x) => {
                    if let Some(reason) = x.incomplete {
                        *self.stats.incomplete.entry(reason.as_str()).or_default() += 1;
                    }
                    let Some(c) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    let Proto::Http1 { request_dir, .. } = &c.proto else {
                        continue;
                    };
                    let request_dir = *request_dir;
                    let resource = match &c.resource {
                        Some(r) => r.clone(),
                        None => {
                            let r = self.resources.resource(&c.info);
                            c.resource = Some(r.clone());
                            r
                        }
                    };
                    let want = if c.info.role == Role::Client {
                        CtxKind::Client
                    } else {
                        CtxKind::Server
                    };
                    let ctx = c
                        .ctxs
                        .iter()
                        .position(|k| k.kind == want && k.seq == x.request_extent.first)
                        .and_then(|i| c.ctxs.remove(i));
                    let span = http::exchange_span(
                        &self.config,
                        &self.clock,
                        &c.info,
                        &c.strings,
                        ctx.as_ref(),
                        x,
                        &c.timing[dir_idx(request_dir)],
                        &c.timing[dir_idx(other(request_dir))],
                        resource,
                    );
                    c.timing[dir_idx(request_dir)].forget_before(x.request_extent.first);
                    if let Some(r) = x.response_extent {
                        c.timing[dir_idx(other(request_dir))].forget_before(r.first);
                    }
                    self.stats.spans_created += 1;
                    if let Some(sonde_export::span::Value::Str(link)) =
                        span.attr("sonde.trace.link")
                    {
                        *self
                            .stats
                            .trace_links
                            .entry(http::link_label(link))
                            .or_default() += 1;
                    }
                    if let Some(sonde_export::span::Value::Str(inj)) =
                        span.attr("sonde.trace.inject")
                    {
                        *self
                            .stats
                            .injections
                            .entry(http::inject_label(inj))
                            .or_default() += 1;
                    }
                    self.out.span(span);
                }
                Http1Event::Error(e) => {
                    *self
                        .stats
                        .parse_errors
                        .entry(("http1", e.kind.as_str()))
                        .or_default() += 1;
                }
                Http1Event::Stopped { .. } => {
                    self.stats.stopped += 1;
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.proto = Proto::Ignored;
                    }
                }
            }
        }
        self.events = events;
        self.events.clear();
    }
}

impl<O: SpanSink, R: ResourceSource> StreamSink for SpanStage<O, R> {
    fn opened(&mut self, conn: &ConnInfo) {
        self.conns.insert(
            conn.id,
            ConnState {
                strings: ConnStrings::of(conn),
                info: conn.clone(),
                proto: Proto::Detecting,
                detect_chunks: 0,
                timing: Default::default(),
                resource: None,
                ctxs: VecDeque::new(),
            },
        );
    }

    fn chunk(&mut self, conn: &ConnInfo, direction: Direction, chunk: Chunk) {
        let id = conn.id;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Chunk::Data {
            seq, bytes, meta, ..
        } = &chunk
        {
            c.timing[dir_idx(direction)].record(*seq, bytes.len() as u64, meta);
        }
        if matches!(c.proto, Proto::Detecting) {
            match &chunk {
                Chunk::Data { bytes, .. } => {
                    let bytes = bytes.clone();
                    if !self.detect(id, direction, &bytes) {
                        return;
                    }
                }
                Chunk::Gap { .. } => return,
            }
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Http1 {
            parser,
            request_dir,
        } = &mut c.proto
        else {
            return;
        };
        let side = if direction == *request_dir {
            Side::Request
        } else {
            Side::Response
        };
        match &chunk {
            Chunk::Data { seq, bytes, .. } => parser.data(side, *seq, bytes, &mut self.events),
            Chunk::Gap { seq, len, .. } => parser.gap(side, *seq, *len, &mut self.events),
        }
        self.handle_events(id);
    }

    fn closed(&mut self, conn: &ConnInfo, end: ConnEnd, _at_ns: u64) {
        let id = conn.id;
        if let Some(c) = self.conns.get_mut(&id) {
            if let Proto::Http1 { parser, .. } = &mut c.proto {
                let reason = match end {
                    ConnEnd::Closed(_) | ConnEnd::Shutdown => EndReason::Closed,
                    ConnEnd::ProcessExit => EndReason::ProcessExited,
                    ConnEnd::EvictedIdle | ConnEnd::EvictedLimit => EndReason::Evicted,
                };
                parser.close(reason, &mut self.events);
            } else if matches!(c.proto, Proto::Detecting) {
                self.count_proto("undetected");
            }
            self.handle_events(id);
        }
        self.conns.remove(&id);
    }

    fn trace_ctx(&mut self, conn: &ConnInfo, ctx: TraceCtxEv) {
        if let Some(c) = self.conns.get_mut(&conn.id) {
            if c.ctxs.len() >= MAX_CTX_PER_CONN {
                c.ctxs.pop_front();
            }
            c.ctxs.push_back(ctx);
        }
    }

    fn process(&mut self, ev: &ProcEv) {
        if matches!(ev.kind, ProcKind::Exec | ProcKind::Exit) {
            self.resources.forget(ev.meta.pid);
        }
    }
}
