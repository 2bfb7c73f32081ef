//! HTTP/1.x behind the protocol seam: the HTTP/1 parser of one connection, the kernel's trace
//! context per request (matched by the request's stream offset), a span per exchange
//! ([`super::http`] builds it), and the switch to HTTP/2 when an `Upgrade: h2c` is answered by
//! `101` (the 101 exchange is HTTP/2 stream 1, not a span of its own).

use sonde_model::SpanKind;
use sonde_proto::{CtxKind, Direction};
use sonde_protocol::http1::{EndReason, Exchange, Http1Conn, Http1Event, Limits, StopReason};
use sonde_protocol::http2::H2cUpgrade;

use super::{
    http,
    http2::Http2,
    links::Ids,
    protocol::{Cx, Next, ProtocolConn, dir_idx, other, side_of},
    stats::ParseError,
};
use crate::conn::Chunk;

pub(crate) struct Http1 {
    parser: Box<Http1Conn>,
    /// Which direction carries requests.
    request_dir: Direction,
    events: Vec<Http1Event>,
    /// The `101` of an h2c upgrade, waiting for the parser's `Stopped` that follows it.
    upgrade: Option<Box<PendingUpgrade>>,
}

struct PendingUpgrade {
    exchange: Exchange,
    ids: Ids,
    start_ns: u64,
}

impl Http1 {
    pub fn new(request_dir: Direction) -> Self {
        Self {
            parser: Box::new(Http1Conn::new(Limits::default())),
            request_dir,
            events: Vec::new(),
            upgrade: None,
        }
    }

    /// Turns the parser's events into spans; `Some` when the connection switches or stops.
    fn handle(&mut self, cx: &mut Cx<'_>) -> Next {
        if self.events.is_empty() {
            return Next::Continue;
        }
        let mut next = Next::Continue;
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match ev {
                Http1Event::Exchange(x) => self.exchange(cx, &x),
                Http1Event::Error(e) => cx.parse_error(ParseError {
                    protocol: "http1",
                    kind: e.kind.as_str(),
                }),
                Http1Event::Stopped {
                    reason,
                    request_offset,
                    response_offset,
                } => {
                    let h2c = matches!(&reason, StopReason::Upgrade { protocol: Some(p) } if p.eq_ignore_ascii_case("h2c"));
                    next = match (h2c, self.upgrade.take()) {
                        (true, Some(up)) => {
                            let upgrade = H2cUpgrade::from_http1(
                                &up.exchange,
                                request_offset,
                                response_offset,
                            );
                            let h2 = Http2::upgraded(
                                cx,
                                self.request_dir,
                                &upgrade,
                                up.start_ns,
                                up.ids,
                            );
                            cx.stats.h2c_upgrades += 1;
                            cx.stats.count_protocol("http2");
                            Next::Switch(Box::new(h2))
                        }
                        _ => {
                            cx.stats.stopped += 1;
                            Next::Stop
                        }
                    };
                }
            }
        }
        self.events = events;
        next
    }

    fn exchange(&mut self, cx: &mut Cx<'_>, x: &Exchange) {
        let _stage = crate::pipeline::stages::enter(crate::pipeline::stages::Stage::Span);
        if let Some(reason) = x.incomplete {
            cx.stats.count_incomplete(reason.as_str());
        }
        let resource = cx.resource();
        let id = cx.id();
        let (kind, want) = if cx.conn.is_client() {
            (SpanKind::Client, CtxKind::Client)
        } else {
            (SpanKind::Server, CtxKind::Server)
        };
        let ctx = cx.conn.take_ctx(want, x.request_extent.first);
        if want == CtxKind::Server {
            cx.links.close_server((id, x.request_extent.first));
        }
        let c = &mut *cx.conn;
        let (req, resp) = (dir_idx(self.request_dir), dir_idx(other(self.request_dir)));
        let ids = http::ids(kind, x, ctx.as_ref(), cx.config.root_sampler);
        if is_h2c_switch(x) {
            // Not a call of its own: HTTP/2 stream 1 continues it.
            let start_ns = c.timing[req]
                .at(x.request_extent.first)
                .map_or(c.info.opened_ns, |t| {
                    if kind == SpanKind::Client {
                        t.enter_ns
                    } else {
                        t.exit_ns
                    }
                });
            self.upgrade = Some(Box::new(PendingUpgrade {
                exchange: x.clone(),
                ids,
                start_ns,
            }));
            return;
        }
        let (link, inject) = (ids.link, ids.inject);
        let span = http::exchange_span(
            cx.config,
            cx.clock,
            &c.info,
            &c.strings,
            ids,
            x,
            &c.timing[req],
            &c.timing[resp],
            resource,
        );
        c.timing[req].forget_before(x.request_extent.first);
        if let Some(r) = x.response_extent {
            c.timing[resp].forget_before(r.first);
        }
        cx.emit(span, link, inject);
    }
}

impl ProtocolConn for Http1 {
    fn feed(&mut self, cx: &mut Cx<'_>, direction: Direction, chunk: &Chunk) -> Next {
        let side = side_of(direction, self.request_dir);
        match chunk {
            Chunk::Data { seq, bytes, .. } => self.parser.data(side, *seq, bytes, &mut self.events),
            Chunk::Gap { seq, len, .. } => self.parser.gap(side, *seq, *len, &mut self.events),
        }
        self.handle(cx)
    }

    fn close(&mut self, cx: &mut Cx<'_>, reason: EndReason, _at_ns: u64) {
        self.parser.close(reason, &mut self.events);
        self.handle(cx);
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Http1Conn>()
            + self.parser.heap_bytes()
            + super::protocol::vec_heap(&self.events)
            + self
                .upgrade
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<PendingUpgrade>())
    }
}

/// The `101` that switches a connection to h2c.
fn is_h2c_switch(x: &Exchange) -> bool {
    x.status() == Some(101)
        && x.response
            .as_ref()
            .and_then(|r| r.headers.get_str("upgrade"))
            .is_some_and(|u| u.trim().eq_ignore_ascii_case("h2c"))
}
