//! HTTP/2 (and gRPC) behind the protocol seam: the HTTP/2 parser of one connection, the start
//! time and trace context of each stream as its HEADERS arrive, and a span per stream that
//! ends ([`attrs`] builds it).
//!
//! Trace context is decided in userspace ([`crate::span::links`]), except for client streams
//! whose HEADERS the kernel followed and injected into: their ids went on the wire.

pub mod attrs;

use std::collections::HashMap;

use sonde_proto::{CtxKind, Direction, InjectOutcome};
use sonde_protocol::{
    http1::EndReason,
    http2::{H2Conn, H2Event, H2Exchange, H2cUpgrade, Limits, RequestHead, Side},
};

use super::{
    links::{Ids, PeerKey},
    protocol::{Cx, Next, ProtocolConn, dir_idx, kernel_ids, other, side_of},
    stats::{Link, ParseError},
};
use crate::{
    conn::Chunk,
    context::{TraceParent, parse_traceparent, parse_tracestate},
};

/// Timing entries kept per direction between chunks: streams take their start time when their
/// HEADERS arrive, and their end from the chunk that ended them.
const TIMING_KEEP: usize = 64;

pub(crate) struct Http2 {
    parser: H2Conn,
    limits: Limits,
    /// Which direction carries requests (the client's HEADERS).
    request_dir: Direction,
    /// Streams whose request started: when, and (client side) the context decided then.
    streams: HashMap<u32, Stream>,
    events: Vec<H2Event>,
}

struct Stream {
    start_ns: u64,
    ids: Option<Ids>,
}

impl Http2 {
    /// A connection that starts with the client preface.
    pub fn new(request_dir: Direction) -> Self {
        Self::with_parser(H2Conn::new(Limits::default()), request_dir)
    }

    /// A connection found already open, in the middle of HTTP/2.
    pub fn attach(request_dir: Direction) -> Self {
        Self::with_parser(H2Conn::attach(Limits::default()), request_dir)
    }

    /// A connection that switched from HTTP/1.1 (h2c upgrade): stream 1 is the upgrade request,
    /// started at `start_ns` with the context the kernel chose for it (and, for a client, put
    /// on the wire).
    pub fn upgraded(
        cx: &mut Cx<'_>,
        request_dir: Direction,
        upgrade: &H2cUpgrade,
        start_ns: u64,
        ids: Ids,
    ) -> Self {
        let mut h = Self::with_parser(H2Conn::upgraded(Limits::default(), upgrade), request_dir);
        let _ = h.parser.take_started().count();
        if cx.conn.is_client() {
            h.streams.insert(
                1,
                Stream {
                    start_ns,
                    ids: Some(ids),
                },
            );
        } else {
            h.streams.insert(
                1,
                Stream {
                    start_ns,
                    ids: None,
                },
            );
            let (id, pid) = (cx.id(), cx.conn.info.pid);
            // The thread that read the upgrade request (its last chunk).
            let tid = cx.conn.timing[dir_idx(request_dir)]
                .last()
                .map_or(0, |t| t.tid);
            cx.links
                .open_server_decided((id, 1), (pid, tid), start_ns, ids);
        }
        h
    }

    fn with_parser(parser: H2Conn, request_dir: Direction) -> Self {
        Self {
            parser,
            limits: Limits::default(),
            request_dir,
            streams: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// After the parser took bytes: contexts of the requests that started, spans of the
    /// streams that ended.
    fn handle(&mut self, cx: &mut Cx<'_>, now_ns: u64) {
        let client = cx.conn.is_client();
        let id = cx.id();
        let started: Vec<(u32, u64)> = self.parser.take_started().collect();
        for (sid, first) in started {
            let at = cx.conn.timing[dir_idx(self.request_dir)].at(first);
            let start_ns = at.map_or(now_ns, |t| if client { t.enter_ns } else { t.exit_ns });
            // The thread that wrote (client) or read (server) the HEADERS.
            let task = (cx.conn.info.pid, at.map_or(0, |t| t.tid));
            let own = self.parser.request(sid).and_then(incoming_ctx);
            let info = &cx.conn.info;
            let peer = PeerKey::of(info.local, info.remote, client, sid);
            let ids = if client {
                // What the kernel did with the request's HEADERS, when it followed them.
                Some(match cx.conn.take_ctx(CtxKind::H2Client, u64::from(sid)) {
                    // The ids went on the wire: they are the span's.
                    Some(k) if k.inject == InjectOutcome::Injected => {
                        let ids = Ids {
                            link: Link::of(k.source),
                            inject: Some(k.inject),
                            ..kernel_ids(&k)
                        };
                        if let Some(p) = peer {
                            cx.links.publish_peer(p, &ids, now_ns);
                        }
                        ids
                    }
                    Some(k) => Ids {
                        inject: Some(k.inject),
                        ..cx.links.client_request(task, now_ns, own, peer)
                    },
                    None => cx.links.client_request(task, now_ns, own, peer),
                })
            } else {
                cx.links
                    .open_server((id, u64::from(sid)), task, start_ns, own, peer);
                None
            };
            self.streams.insert(sid, Stream { start_ns, ids });
        }
        // Streams the parser dropped at its bound never end: forget them with it.
        if self.streams.len() > self.limits.max_streams + 64 {
            let parser = &self.parser;
            self.streams.retain(|sid, _| parser.request(*sid).is_some());
        }
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match ev {
                H2Event::Exchange(x) => self.exchange(cx, &x, now_ns),
                H2Event::Error(e) => cx.parse_error(ParseError {
                    protocol: "http2",
                    kind: e.kind.as_str(),
                }),
            }
        }
        self.events = events;
        for t in &mut cx.conn.timing {
            t.keep_last(TIMING_KEEP);
        }
    }

    fn exchange(&mut self, cx: &mut Cx<'_>, x: &H2Exchange, now_ns: u64) {
        let _stage = crate::pipeline::stages::enter(crate::pipeline::stages::Stage::Span);
        if let Some(reason) = attrs::incomplete_label(x) {
            cx.stats.count_incomplete(reason);
        }
        cx.stats.h2_unrecovered_fields += u64::from(x.unrecovered());
        let resource = cx.resource();
        let client = cx.conn.is_client();
        let id = cx.id();
        let entry = self.streams.remove(&x.stream_id);
        let c = &mut *cx.conn;
        let req_timing = &c.timing[dir_idx(self.request_dir)];
        let resp_timing = &c.timing[dir_idx(other(self.request_dir))];
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
                    let tid = x
                        .request_extent
                        .and_then(|e| req_timing.at(e.first))
                        .map_or(0, |t| t.tid);
                    cx.links
                        .client_request((c.info.pid, tid), start_ns, own, peer)
                }
            }
        } else {
            match cx.links.close_server((id, u64::from(x.stream_id))) {
                Some(ids) => ids,
                None => match x.request.as_ref().and_then(incoming_ctx) {
                    Some((tp, state)) => Ids::from_header(&tp, state, Link::Header),
                    None => cx.links.decide_unopened(peer),
                },
            }
        };
        let (link, inject) = (ids.link, ids.inject);
        let span = attrs::stream_span(
            cx.config,
            cx.clock,
            &c.info,
            &c.strings,
            ids,
            x,
            (start_ns, end_ns),
            resource,
        );
        cx.emit(span, link, inject);
    }
}

impl ProtocolConn for Http2 {
    fn feed(&mut self, cx: &mut Cx<'_>, direction: Direction, chunk: &Chunk) -> Next {
        let side = side_of(direction, self.request_dir);
        let now_ns = match chunk {
            Chunk::Data {
                seq, bytes, meta, ..
            } => {
                self.parser.data(side, *seq, bytes, &mut self.events);
                meta.exit_ns
            }
            Chunk::Gap { seq, len, .. } => {
                self.parser.gap(side, *seq, *len, &mut self.events);
                cx.conn.timing[dir_idx(direction)]
                    .last()
                    .map_or(0, |t| t.exit_ns)
            }
        };
        self.handle(cx, now_ns);
        Next::Continue
    }

    fn close(&mut self, cx: &mut Cx<'_>, reason: EndReason, at_ns: u64) {
        self.parser.close(reason, &mut self.events);
        self.handle(cx, at_ns);
    }

    fn heap_bytes(&self) -> usize {
        self.parser.heap_bytes()
            + super::protocol::vec_heap(&self.events)
            + self.streams.capacity() * std::mem::size_of::<(u32, Stream)>()
    }
}

/// The request's own trace context, if it carries a valid `traceparent`.
fn incoming_ctx(head: &RequestHead) -> Option<(TraceParent, String)> {
    let tp = parse_traceparent(head.headers.get_str("traceparent")?)?;
    let state = parse_tracestate(
        head.headers
            .get_all("tracestate")
            .filter_map(|v| std::str::from_utf8(v).ok()),
    )
    .unwrap_or_default();
    Some((tp, state))
}
