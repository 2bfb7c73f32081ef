//! Reassembled streams in, spans out: protocol detection per connection, the HTTP/1 and
//! HTTP/2 parsers, request/response timing from syscall timestamps, trace context, and the
//! span attributes.
//!
//! [`SpanStage`] is a [`StreamSink`]: it sits right after `conn` and hands finished spans to a
//! [`SpanSink`]. Which side of a connection carries requests follows from the role the kernel
//! saw (`connect` = client, `accept` = server); when the role is unknown, from which direction
//! starts with a request line or the HTTP/2 preface.
//!
//! Layout: [`stage`] keeps per-connection state and dispatches chunks; [`detect`] holds the
//! registry of protocols; each protocol is a module behind the [`protocol::ProtocolConn`] trait
//! ([`http1`], [`http2`] with gRPC, [`db`] for PostgreSQL, MySQL/MariaDB and Redis); [`links`] decides trace context in userspace; [`http`] and
//! [`http2::attrs`] build span attributes; [`stats`] counts.

mod db;
mod detect;
mod http;
mod http1;
mod http2;
pub mod ids;
mod links;
mod protocol;
mod stage;
pub mod stats;
pub mod timing;

use std::sync::Arc;

use sonde_model::{Resource, Span};

pub use self::{
    http::{ConnStrings, HttpConfig},
    stage::SpanStage,
    stats::SpanStats,
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
    /// The process exited.
    fn forget(&mut self, _pid: u32) {}
    /// The process exec'd (`comm`: its new name): what was known of it is stale. A source
    /// that reads `/proc` reads it now, while the process surely exists: a client that runs
    /// for milliseconds is often gone by the time its first span is built.
    fn exec(&mut self, pid: u32, _comm: &str) {
        self.forget(pid);
    }
}

impl ResourceSource for ProcessCache {
    fn resource(&mut self, conn: &ConnInfo) -> Arc<Resource> {
        ProcessCache::resource(self, conn.pid, &conn.comm)
    }

    fn forget(&mut self, pid: u32) {
        ProcessCache::forget(self, pid);
    }

    fn exec(&mut self, pid: u32, comm: &str) {
        ProcessCache::forget(self, pid);
        ProcessCache::resource(self, pid, comm);
    }
}

/// One resource for everything (replays, tests).
pub struct FixedResource(pub Arc<Resource>);

impl ResourceSource for FixedResource {
    fn resource(&mut self, _conn: &ConnInfo) -> Arc<Resource> {
        self.0.clone()
    }
}
