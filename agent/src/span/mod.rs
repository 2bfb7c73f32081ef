//! Reassembled streams in, spans out: protocol detection per connection, the HTTP/1 and
//! HTTP/2 parsers, request/response timing from syscall timestamps, trace context, and the
//! span attributes.
//!
//! [`SpanStage`] is a [`StreamSink`]: it sits right after `conn` and hands finished spans to a
//! [`SpanSink`]. Which side of a connection carries requests follows from the role the kernel
//! saw (`connect` = client, `accept` = server); when the role is unknown, from which direction
//! starts with a request line or the HTTP/2 preface.
//!
//! Detection: an HTTP/1 request or response line, the HTTP/2 client preface (prior knowledge),
//! an HTTP/1.1 `Upgrade: h2c` answered by `101` (the connection switches parsers; the 101
//! exchange is HTTP/2 stream 1, not a span of its own), and, on connections sonde found
//! already open, a chunk that starts with a plausible HTTP/2 frame on the side the role says.
//! Chunks seen while detecting are kept (a few) and replayed into the HTTP/2 parser, since an
//! HTTP/2 server often writes its SETTINGS before it reads the preface.

mod h2;
mod http;
pub mod ids;
mod links;
pub mod timing;

mod stage;

use std::{collections::BTreeMap, sync::Arc};

use sonde_export::span::{Resource, Span};

pub use self::{
    http::{ConnStrings, HttpConfig},
    stage::SpanStage,
};
use crate::{conn::ConnInfo, enrich::ProcessCache};

/// Receives finished spans.
pub trait SpanSink {
    fn span(&mut self, span: Span);
    /// Time passes (monotonic ns), for sinks that hold spans.
    fn tick(&mut self, _now_ns: u64) {}
    /// A span was made but will not be sent (sampled out, dropped by policy): sinks that
    /// account for every span count it.
    fn not_sent(&mut self, _reason: sonde_export::stats::DropReason) {}
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
    /// HTTP/2 header fields that could not be decoded (joined late, missed header blocks).
    pub h2_unrecovered_fields: u64,
    /// Connections that switched from HTTP/1.1 to HTTP/2 (h2c upgrade).
    pub h2c_upgrades: u64,
    /// Userspace trace-context entries dropped at their bounds (open requests, peer contexts).
    pub links_dropped: u64,
    /// Server requests in progress that HTTP/2 client calls may be linked to (a gauge).
    pub links_open: u64,
    /// Client stream contexts waiting for their peer's server span (a gauge).
    pub links_peers: u64,
}
