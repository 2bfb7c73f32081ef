//! The span stage: per-connection protocol state, detection, and dispatch to the HTTP/1 and
//! HTTP/2 parsers; finished exchanges become spans handed to a [`SpanSink`].

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use sonde_export::span::{Resource, Span, SpanId, TraceId};
use sonde_proto::{ConnSource, CtxKind, Direction, InjectOutcome, Role};
use sonde_protocol::{
    detect::{Detected, detect},
    http1::{EndReason, Exchange, Http1Conn, Http1Event, Limits as Http1Limits, Side, StopReason},
    http2::{
        H2Conn, H2Event, H2cUpgrade, Limits as H2Limits, RequestHead as H2RequestHead,
        plausible_frame_start,
    },
};

use super::{
    ConnStrings, HttpConfig, ResourceSource, SpanSink, SpanStats, h2, http,
    links::{Ids, Links, PeerKey},
    timing::TimingIndex,
};
use crate::{
    clock::WallClock,
    conn::{Chunk, ConnEnd, ConnInfo, StreamSink},
    context::{TraceParent, parse_traceparent, parse_tracestate},
    enrich::ProcessCache,
    events::{ProcEv, ProcKind, TraceCtxEv},
};

/// Trace contexts remembered per connection until their exchange completes.
const MAX_CTX_PER_CONN: usize = 256;

/// Chunks looked at per connection while its protocol is being detected (and at most this
/// many held for replay).
const DETECT_MAX_CHUNKS: usize = 8;
/// Bytes of one direction's start looked at together when reads split a message start.
const DETECT_PROBE: usize = 64;
/// Timing entries kept per direction of an HTTP/2 connection between chunks: streams take their
/// start time when their HEADERS arrive, and their end from the chunk that ended them.
const H2_TIMING_KEEP: usize = 64;

enum Proto {
    /// Waiting for a chunk that says what this is.
    Detecting,
    Http1 {
        parser: Box<Http1Conn>,
        /// Which direction carries requests.
        request_dir: Direction,
    },
    Http2(Box<H2State>),
    /// Not a protocol sonde parses (or parsing stopped): bytes are ignored.
    Ignored,
}

struct H2State {
    parser: H2Conn,
    /// Which direction carries requests (the client's HEADERS).
    request_dir: Direction,
    /// Streams whose request started: when, and (client side) the context decided then.
    streams: HashMap<u32, H2Stream>,
}

struct H2Stream {
    start_ns: u64,
    ids: Option<Ids>,
}

/// The `101` of an h2c upgrade, waiting for the parser's `Stopped` that follows it.
struct PendingUpgrade {
    exchange: Exchange,
    ids: Ids,
    start_ns: u64,
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
    /// Chunks seen while detecting, replayed if the connection turns out to be HTTP/2.
    held: Vec<(Direction, Chunk)>,
    upgrade: Option<Box<PendingUpgrade>>,
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
    h2_limits: H2Limits,
    conns: HashMap<u64, ConnState>,
    resources: R,
    out: O,
    events: Vec<Http1Event>,
    h2_events: Vec<H2Event>,
    links: Links,
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
    /// The stage for live capture with another resource source (Kubernetes, say).
    pub fn live_with(config: HttpConfig, resources: R, out: O) -> Self {
        let mut s = Self::new(config, WallClock::measure(), resources, out);
        s.live_clock = true;
        s
    }

    pub fn new(config: HttpConfig, clock: WallClock, resources: R, out: O) -> Self {
        Self {
            config,
            http1_limits: Http1Limits::default(),
            h2_limits: H2Limits::default(),
            clock,
            conns: HashMap::new(),
            resources,
            out,
            events: Vec::new(),
            h2_events: Vec::new(),
            links: Links::default(),
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
        self.stats.links_open = self.links.open_len() as u64;
        self.stats.links_peers = self.links.peers_len() as u64;
        self.stats.links_dropped = self.links.dropped_open + self.links.dropped_peers;
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

    /// Decides the protocol from a data chunk (`current`; `probe` is the direction's bytes so
    /// far when earlier chunks were too short to tell); returns whether parsing should start.
    fn detect(&mut self, id: u64, dir: Direction, probe: &[u8], current: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        c.detect_chunks += 1;
        let detected = detect(probe);
        let request_dir = match detected {
            Detected::Http1Request => Some(dir),
            Detected::Http1Response => Some(other(dir)),
            Detected::Http2Preface => {
                c.proto = Proto::Http2(Box::new(H2State {
                    parser: H2Conn::new(self.h2_limits.clone()),
                    request_dir: dir,
                    streams: HashMap::new(),
                }));
                set_role(&mut c.info, dir);
                self.count_proto("http2");
                return true;
            }
            _ => None,
        };
        // A connection found already open may be HTTP/2 in the middle: a plausible frame on
        // the side its role says (requests go out of clients, into servers).
        if request_dir.is_none()
            && detected == Detected::Unknown
            && c.info.source == ConnSource::Discovered
            && c.info.role != Role::Unknown
        {
            let request_dir = if c.info.role == Role::Client {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let side = if dir == request_dir {
                Side::Request
            } else {
                Side::Response
            };
            if plausible_frame_start(side, current) {
                c.proto = Proto::Http2(Box::new(H2State {
                    parser: H2Conn::attach(self.h2_limits.clone()),
                    request_dir,
                    streams: HashMap::new(),
                }));
                self.count_proto("http2");
                return true;
            }
        }
        match request_dir {
            Some(request_dir) => {
                // The kernel's role wins when it knows one; a connection whose bytes contradict
                // it (a server that sends requests) is parsed as its bytes say.
                c.proto = Proto::Http1 {
                    parser: Box::new(Http1Conn::new(self.http1_limits.clone())),
                    request_dir,
                };
                set_role(&mut c.info, request_dir);
                self.count_proto("http1");
                true
            }
            None if c.detect_chunks >= DETECT_MAX_CHUNKS => {
                c.proto = Proto::Ignored;
                c.held.clear();
                self.count_proto("unknown");
                false
            }
            None => false,
        }
    }

    fn resource_of(&mut self, id: u64) -> Option<Arc<Resource>> {
        let c = self.conns.get_mut(&id)?;
        // Asked per span, not once per connection: sources cache per process, and a
        // Kubernetes source may learn the pod (or a new annotation) while a connection lives.
        let r = self.resources.resource(&c.info);
        c.resource = Some(r.clone());
        Some(r)
    }

    fn count_span(&mut self, span: &Span) {
        self.stats.spans_created += 1;
        if let Some(sonde_export::span::Value::Str(link)) = span.attr("sonde.trace.link") {
            *self
                .stats
                .trace_links
                .entry(http::link_label(link))
                .or_default() += 1;
        }
        if let Some(sonde_export::span::Value::Str(inj)) = span.attr("sonde.trace.inject") {
            *self
                .stats
                .injections
                .entry(http::inject_label(inj))
                .or_default() += 1;
        }
    }

    fn handle_events(&mut self, id: u64) {
        if self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            match ev {
                Http1Event::Exchange(x) => self.http1_exchange(id, x),
                Http1Event::Error(e) => {
                    *self
                        .stats
                        .parse_errors
                        .entry(("http1", e.kind.as_str()))
                        .or_default() += 1;
                }
                Http1Event::Stopped {
                    reason,
                    request_offset,
                    response_offset,
                } => {
                    let Some(c) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    let h2c = matches!(reason, StopReason::Upgrade { protocol: Some(p) } if p.eq_ignore_ascii_case("h2c"));
                    let pending = c.upgrade.take();
                    match (h2c, pending, &c.proto) {
                        (true, Some(up), Proto::Http1 { request_dir, .. }) => {
                            let upgrade = H2cUpgrade::from_http1(
                                &up.exchange,
                                *request_offset,
                                *response_offset,
                            );
                            let mut st = H2State {
                                parser: H2Conn::upgraded(self.h2_limits.clone(), &upgrade),
                                request_dir: *request_dir,
                                streams: HashMap::new(),
                            };
                            // Stream 1 is the upgrade request: the context the kernel chose
                            // for it (and, for a client, put on the wire).
                            let _ = st.parser.take_started().count();
                            let key = (id, 1);
                            if c.info.role == Role::Client {
                                st.streams.insert(
                                    1,
                                    H2Stream {
                                        start_ns: up.start_ns,
                                        ids: Some(up.ids),
                                    },
                                );
                            } else {
                                st.streams.insert(
                                    1,
                                    H2Stream {
                                        start_ns: up.start_ns,
                                        ids: None,
                                    },
                                );
                                self.links.open_server_decided(
                                    key,
                                    c.info.pid,
                                    up.start_ns,
                                    up.ids,
                                );
                            }
                            c.proto = Proto::Http2(Box::new(st));
                            self.stats.h2c_upgrades += 1;
                            self.count_proto("http2");
                        }
                        _ => {
                            self.stats.stopped += 1;
                            c.proto = Proto::Ignored;
                        }
                    }
                }
            }
        }
        self.events = events;
        self.events.clear();
    }

    fn http1_exchange(&mut self, id: u64, x: &Exchange) {
        if let Some(reason) = x.incomplete {
            *self.stats.incomplete.entry(reason.as_str()).or_default() += 1;
        }
        let Some(resource) = self.resource_of(id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Http1 { request_dir, .. } = &c.proto else {
            return;
        };
        let request_dir = *request_dir;
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
        if want == CtxKind::Server {
            self.links.close_server((id, x.request_extent.first));
        }
        let req_timing = &c.timing[dir_idx(request_dir)];
        if is_h2c_switch(x) {
            // Not a call of its own: HTTP/2 stream 1 continues it.
            let kind = if want == CtxKind::Client {
                sonde_export::span::SpanKind::Client
            } else {
                sonde_export::span::SpanKind::Server
            };
            let start_ns = req_timing
                .at(x.request_extent.first)
                .map_or(c.info.opened_ns, |t| {
                    if want == CtxKind::Client {
                        t.enter_ns
                    } else {
                        t.exit_ns
                    }
                });
            c.upgrade = Some(Box::new(PendingUpgrade {
                exchange: x.clone(),
                ids: http::ids(kind, x, ctx.as_ref()),
                start_ns,
            }));
            return;
        }
        let span = http::exchange_span(
            &self.config,
            &self.clock,
            &c.info,
            &c.strings,
            ctx.as_ref(),
            x,
            req_timing,
            &c.timing[dir_idx(other(request_dir))],
            resource,
        );
        c.timing[dir_idx(request_dir)].forget_before(x.request_extent.first);
        if let Some(r) = x.response_extent {
            c.timing[dir_idx(other(request_dir))].forget_before(r.first);
        }
        self.count_span(&span);
        self.out.span(span);
    }

    /// After the HTTP/2 parser took bytes: contexts of the requests that started, spans of the
    /// streams that ended.
    fn handle_h2(&mut self, id: u64, now_ns: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Http2(st) = &mut c.proto else {
            return;
        };
        let client = c.info.role == Role::Client;
        let started: Vec<(u32, u64)> = st.parser.take_started().collect();
        for (sid, first) in started {
            let start_ns = c.timing[dir_idx(st.request_dir)]
                .at(first)
                .map_or(now_ns, |t| if client { t.enter_ns } else { t.exit_ns });
            let own = st.parser.request(sid).and_then(incoming_ctx);
            let peer = PeerKey::of(c.info.local, c.info.remote, client, sid);
            let ids = if client {
                // What the kernel did with the request's HEADERS, when it followed them.
                let kernel = c
                    .ctxs
                    .iter()
                    .position(|k| k.kind == CtxKind::H2Client && k.seq == u64::from(sid))
                    .and_then(|i| c.ctxs.remove(i));
                Some(match kernel {
                    // The ids went on the wire: they are the span's.
                    Some(k) if k.inject == InjectOutcome::Injected => {
                        let ids = Ids {
                            link: http::link_of(k.source),
                            inject: Some(k.inject),
                            ..kernel_ids(&k)
                        };
                        if let Some(p) = peer {
                            self.links.publish_peer(p, &ids, now_ns);
                        }
                        ids
                    }
                    Some(k) => Ids {
                        inject: Some(k.inject),
                        ..self.links.client_request(c.info.pid, now_ns, own, peer)
                    },
                    None => self.links.client_request(c.info.pid, now_ns, own, peer),
                })
            } else {
                self.links
                    .open_server((id, u64::from(sid)), c.info.pid, start_ns, own, peer);
                None
            };
            st.streams.insert(sid, H2Stream { start_ns, ids });
        }
        // Streams the parser dropped at its bound never end: forget them with it.
        if st.streams.len() > self.h2_limits.max_streams + 64 {
            let parser = &st.parser;
            st.streams.retain(|sid, _| parser.request(*sid).is_some());
        }
        if self.h2_events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.h2_events);
        for ev in &events {
            match ev {
                H2Event::Exchange(x) => self.h2_exchange(id, x, now_ns),
                H2Event::Error(e) => {
                    *self
                        .stats
                        .parse_errors
                        .entry(("http2", e.kind.as_str()))
                        .or_default() += 1;
                }
            }
        }
        self.h2_events = events;
        self.h2_events.clear();
        if let Some(c) = self.conns.get_mut(&id) {
            for t in &mut c.timing {
                t.keep_last(H2_TIMING_KEEP);
            }
        }
    }

    fn h2_exchange(&mut self, id: u64, x: &sonde_protocol::http2::H2Exchange, now_ns: u64) {
        if let Some(reason) = h2::incomplete_label(x) {
            *self.stats.incomplete.entry(reason).or_default() += 1;
        }
        self.stats.h2_unrecovered_fields += u64::from(x.unrecovered());
        let Some(resource) = self.resource_of(id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Http2(st) = &mut c.proto else {
            return;
        };
        let client = c.info.role == Role::Client;
        let entry = st.streams.remove(&x.stream_id);
        let req_timing = &c.timing[dir_idx(st.request_dir)];
        let resp_timing = &c.timing[dir_idx(other(st.request_dir))];
        let start_ns = entry.as_ref().map(|e| e.start_ns).unwrap_or_else(|| {
            x.request_extent
                .and_then(|e| req_timing.at(e.first))
                .map_or(c.info.opened_ns, |t| {
                    if client { t.enter_ns } else { t.exit_ns }
                })
        });
        let end_ns = match (x.response_extent.filter(|e| e.complete), x.reset) {
            (Some(e), _) => resp_timing.at(e.last).map(|t| t.exit_ns),
            // Reset: when the RST_STREAM crossed.
            (None, Some(r)) => {
                let timing = if r.by == Side::Request {
                    req_timing
                } else {
                    resp_timing
                };
                timing.at(r.offset).map(|t| t.exit_ns)
            }
            (None, None) => [
                x.response_extent.and_then(|e| resp_timing.at(e.last)),
                x.request_extent.and_then(|e| req_timing.at(e.last)),
            ]
            .into_iter()
            .flatten()
            .map(|t| t.exit_ns)
            .max(),
        }
        .unwrap_or(now_ns);
        let peer = PeerKey::of(c.info.local, c.info.remote, client, x.stream_id);
        let ids = if client {
            match entry.and_then(|e| e.ids) {
                Some(ids) => ids,
                // Its HEADERS were not seen: decided now, from what is known.
                None => {
                    let own = x.request.as_ref().and_then(incoming_ctx);
                    self.links.client_request(c.info.pid, start_ns, own, peer)
                }
            }
        } else {
            match self.links.close_server((id, u64::from(x.stream_id))) {
                Some(ids) => ids,
                None => match x.request.as_ref().and_then(incoming_ctx) {
                    Some((tp, state)) => Ids::from_header(&tp, state, "header"),
                    None => self.links.decide_unopened(peer),
                },
            }
        };
        let span = h2::stream_span(
            &self.config,
            &self.clock,
            &c.info,
            &c.strings,
            ids,
            x,
            (start_ns, end_ns),
            resource,
        );
        self.count_span(&span);
        self.out.span(span);
    }

    /// Feeds a chunk to the connection's parser.
    fn feed(&mut self, id: u64, direction: Direction, chunk: &Chunk) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match &mut c.proto {
            Proto::Http1 {
                parser,
                request_dir,
            } => {
                let side = side_of(direction, *request_dir);
                match chunk {
                    Chunk::Data { seq, bytes, .. } => {
                        parser.data(side, *seq, bytes, &mut self.events)
                    }
                    Chunk::Gap { seq, len, .. } => parser.gap(side, *seq, *len, &mut self.events),
                }
                self.handle_events(id);
                // An h2c upgrade switched parsers inside this chunk: HTTP/2 takes it again
                // (it ignores the bytes before its start).
                if self
                    .conns
                    .get(&id)
                    .is_some_and(|c| matches!(c.proto, Proto::Http2(_)))
                {
                    self.feed(id, direction, chunk);
                }
            }
            Proto::Http2(st) => {
                let side = side_of(direction, st.request_dir);
                let now_ns = match chunk {
                    Chunk::Data {
                        seq, bytes, meta, ..
                    } => {
                        st.parser.data(side, *seq, bytes, &mut self.h2_events);
                        meta.exit_ns
                    }
                    Chunk::Gap { seq, len, .. } => {
                        st.parser.gap(side, *seq, *len, &mut self.h2_events);
                        c.timing[dir_idx(direction)].last().map_or(0, |t| t.exit_ns)
                    }
                };
                self.handle_h2(id, now_ns);
            }
            Proto::Detecting | Proto::Ignored => {}
        }
    }
}

/// The request's own trace context, if it carries a valid `traceparent`.
fn incoming_ctx(head: &H2RequestHead) -> Option<(TraceParent, String)> {
    let tp = parse_traceparent(head.headers.get_str("traceparent")?)?;
    let state = parse_tracestate(
        head.headers
            .get_all("tracestate")
            .filter_map(|v| std::str::from_utf8(v).ok()),
    )
    .unwrap_or_default();
    Some((tp, state))
}

/// The `101` that switches a connection to h2c.
fn is_h2c_switch(x: &Exchange) -> bool {
    x.status() == Some(101)
        && x.response
            .as_ref()
            .and_then(|r| r.headers.get_str("upgrade"))
            .is_some_and(|u| u.trim().eq_ignore_ascii_case("h2c"))
}

fn side_of(direction: Direction, request_dir: Direction) -> Side {
    if direction == request_dir {
        Side::Request
    } else {
        Side::Response
    }
}

/// A connection whose role the kernel did not know takes it from the direction requests go.
fn set_role(info: &mut ConnInfo, request_dir: Direction) {
    if info.role == Role::Unknown {
        info.role = if request_dir == Direction::Egress {
            Role::Client
        } else {
            Role::Server
        };
    }
}

/// The userspace form of a context the kernel chose.
fn kernel_ids(ctx: &TraceCtxEv) -> Ids {
    Ids {
        trace_id: TraceId(ctx.trace_id),
        span_id: SpanId(ctx.span_id),
        parent: ctx.parent_span_id.map(SpanId),
        flags: ctx.flags,
        trace_state: String::new(),
        link: "header",
        inject: None,
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
                held: Vec::new(),
                upgrade: None,
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
            let Chunk::Data { bytes, .. } = &chunk else {
                if c.held.len() < DETECT_MAX_CHUNKS {
                    c.held.push((direction, chunk));
                }
                return;
            };
            // A message start split over reads ("PRI * HTTP/2.0" then "\r\n\r\nSM..."): what
            // the direction held so far, then this chunk, up to the longest prefix detection
            // needs.
            let mut probe: Vec<u8> = Vec::new();
            for (d, held) in &c.held {
                if let (true, Chunk::Data { bytes, .. }) = (*d == direction, held) {
                    probe.extend_from_slice(&bytes[..bytes.len().min(DETECT_PROBE - probe.len())]);
                }
            }
            let probed = !probe.is_empty();
            let current = bytes.clone();
            let probe = if probed {
                probe.extend_from_slice(&bytes[..bytes.len().min(DETECT_PROBE - probe.len())]);
                bytes::Bytes::from(probe)
            } else {
                current.clone()
            };
            if !self.detect(id, direction, &probe, &current) {
                if let Some(c) = self.conns.get_mut(&id)
                    && matches!(c.proto, Proto::Detecting)
                    && c.held.len() < DETECT_MAX_CHUNKS
                {
                    c.held.push((direction, chunk));
                }
                return;
            }
            // HTTP/2 first takes what came before (a server's SETTINGS often precede the
            // client's preface); HTTP/1 the start of its message, if a read split it.
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let h2 = matches!(c.proto, Proto::Http2(_));
            let held = std::mem::take(&mut c.held);
            for (d, ch) in &held {
                if h2 || (probed && *d == direction) {
                    self.feed(id, *d, ch);
                }
            }
        }
        self.feed(id, direction, &chunk);
    }

    fn closed(&mut self, conn: &ConnInfo, end: ConnEnd, at_ns: u64) {
        let id = conn.id;
        if let Some(c) = self.conns.get_mut(&id) {
            let reason = match end {
                ConnEnd::Closed(_) | ConnEnd::Shutdown => EndReason::Closed,
                ConnEnd::ProcessExit => EndReason::ProcessExited,
                ConnEnd::EvictedIdle | ConnEnd::EvictedLimit => EndReason::Evicted,
            };
            match &mut c.proto {
                Proto::Http1 { parser, .. } => {
                    parser.close(reason, &mut self.events);
                    self.handle_events(id);
                }
                Proto::Http2(st) => {
                    st.parser.close(reason, &mut self.h2_events);
                    self.handle_h2(id, at_ns);
                }
                Proto::Detecting => self.count_proto("undetected"),
                Proto::Ignored => {}
            }
        }
        self.links.forget_conn(id);
        self.conns.remove(&id);
    }

    fn trace_ctx(&mut self, conn: &ConnInfo, ctx: TraceCtxEv) {
        if let Some(c) = self.conns.get_mut(&conn.id) {
            if ctx.kind == CtxKind::Server {
                // In progress until its exchange ends: HTTP/2 calls the process makes meanwhile
                // are its children.
                self.links.open_server_decided(
                    (conn.id, ctx.seq),
                    conn.pid,
                    ctx.meta.exit_ns,
                    kernel_ids(&ctx),
                );
            }
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
