//! The seam between the span stage and each protocol it parses: one [`ProtocolConn`] per
//! connection, fed directional chunks with their syscall timestamps, emitting spans through a
//! [`Cx`] that holds everything a protocol may use (the connection's facts and timing, the
//! contexts the kernel chose, trace linking, configuration, the resource and the output).
//!
//! Adding a protocol: its parser in `sonde-protocol`, a module here implementing
//! [`ProtocolConn`], a [`Detector`](super::detect::Detector) for it in the registry
//! ([`super::detect::DETECTORS`]), and its attribute builder.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use sonde_model::{Resource, Span, SpanId, TraceId};
use sonde_proto::{Direction, Role};
use sonde_protocol::http1::{EndReason, Side};

use super::{
    ConnStrings, HttpConfig, ResourceSource, SpanSink, SpanStats,
    links::{Ids, Links},
    stats::{Link, ParseError},
    timing::TimingIndex,
};
use crate::{
    clock::WallClock,
    conn::{Chunk, ConnInfo},
    events::TraceCtxEv,
};

/// What the stage keeps of a connection whatever its protocol.
pub(crate) struct ConnShared {
    pub info: ConnInfo,
    pub strings: ConnStrings,
    /// Per direction (see [`dir_idx`]): which syscall moved which stream offsets, and when.
    pub timing: [TimingIndex; 2],
    /// Contexts the kernel chose for requests of this connection, oldest first.
    pub ctxs: VecDeque<TraceCtxEv>,
}

impl ConnShared {
    pub fn new(info: &ConnInfo) -> Self {
        Self {
            strings: ConnStrings::of(info),
            info: info.clone(),
            timing: Default::default(),
            ctxs: VecDeque::new(),
        }
    }

    /// Takes the kernel's context for the request at stream offset (or stream id) `seq`.
    pub fn take_ctx(&mut self, kind: sonde_proto::CtxKind, seq: u64) -> Option<TraceCtxEv> {
        let i = self
            .ctxs
            .iter()
            .position(|k| k.kind == kind && k.seq == seq)?;
        self.ctxs.remove(i)
    }

    pub fn is_client(&self) -> bool {
        self.info.role == Role::Client
    }

    /// Heap bytes of the timing indexes and held contexts.
    pub fn heap_bytes(&self) -> usize {
        self.timing
            .iter()
            .map(TimingIndex::heap_bytes)
            .sum::<usize>()
            + self.ctxs.capacity() * std::mem::size_of::<TraceCtxEv>()
    }
}

/// Everything a protocol module may use while it handles one chunk or the end of its
/// connection.
pub(crate) struct Cx<'a> {
    pub conn: &'a mut ConnShared,
    pub links: &'a mut Links,
    pub config: &'a HttpConfig,
    pub clock: &'a WallClock,
    pub stats: &'a mut SpanStats,
    pub resources: &'a mut dyn ResourceSource,
    pub out: &'a mut dyn SpanSink,
    /// The (local, remote) addresses of every connection the stage tracks.
    pub tracked: &'a Tracked,
}

/// The (local, remote) addresses of the connections being tracked, with how many have each
/// pair: both ends of a loopback connection between two traced processes are in it.
pub(crate) type Tracked = std::collections::HashMap<(SocketAddr, SocketAddr), u32>;

/// The address pair of a connection, as its own end sees it.
pub(crate) fn addr_pair(info: &ConnInfo) -> Option<(SocketAddr, SocketAddr)> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    Some((canon(info.local?), canon(info.remote?)))
}

impl Cx<'_> {
    pub fn id(&self) -> u64 {
        self.conn.info.id
    }

    /// The resource of the connection's process, asked per span: sources cache per process,
    /// and a Kubernetes source may learn the pod (or a new annotation) while a connection lives.
    pub fn resource(&mut self) -> Arc<Resource> {
        self.resources.resource(&self.conn.info)
    }

    /// Counts a span and hands it on.
    pub fn emit(&mut self, span: Span, link: Link, inject: Option<sonde_proto::InjectOutcome>) {
        self.stats.count_span(link, inject);
        let _stage = crate::pipeline::stages::enter(crate::pipeline::stages::Stage::Policy);
        self.out.span(span);
    }

    /// The other end of this connection is a process traced on this host.
    pub fn peer_traced(&self) -> bool {
        addr_pair(&self.conn.info).is_some_and(|(l, r)| self.tracked.contains_key(&(r, l)))
    }

    pub fn parse_error(&mut self, e: ParseError) {
        self.stats.count_parse_error(e);
    }
}

/// What the stage does with the connection after a chunk.
pub(crate) enum Next {
    /// Keep this parser.
    Continue,
    /// The connection now speaks another protocol (an h2c upgrade): the new parser takes over
    /// and is fed the same chunk again (it ignores the bytes before its start).
    Switch(Box<dyn ProtocolConn>),
    /// Parsing stopped (an upgrade to something sonde does not parse, a tunnel): the rest of the
    /// connection is ignored.
    Stop,
}

/// One connection's parser for one protocol.
pub(crate) trait ProtocolConn: Send {
    /// Takes one chunk of `direction` (timing is already recorded in `cx.conn.timing`).
    fn feed(&mut self, cx: &mut Cx<'_>, direction: Direction, chunk: &Chunk) -> Next;
    /// The connection ended at `at_ns`: what is in flight ends too, with `reason`.
    fn close(&mut self, cx: &mut Cx<'_>, reason: EndReason, at_ns: u64);
    /// Heap bytes the parser holds now (its buffers, tables, remembered statements), for the
    /// stage's memory budget.
    fn heap_bytes(&self) -> usize;
}

/// Heap bytes of a vector's buffer.
pub(crate) fn vec_heap<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

pub(crate) fn dir_idx(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

pub(crate) fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

pub(crate) fn side_of(direction: Direction, request_dir: Direction) -> Side {
    if direction == request_dir {
        Side::Request
    } else {
        Side::Response
    }
}

/// A connection whose role the kernel did not know takes it from the direction requests go.
pub(crate) fn set_role(info: &mut ConnInfo, request_dir: Direction) {
    if info.role == Role::Unknown {
        info.role = if request_dir == Direction::Egress {
            Role::Client
        } else {
            Role::Server
        };
    }
}

/// The userspace form of a context the kernel chose.
pub(crate) fn kernel_ids(ctx: &TraceCtxEv) -> Ids {
    Ids {
        trace_id: TraceId(ctx.trace_id),
        span_id: SpanId(ctx.span_id),
        parent: ctx.parent_span_id.map(SpanId),
        flags: ctx.flags,
        trace_state: String::new(),
        link: Link::Header,
        inject: None,
    }
}
