//! The span stage's counters, filled from typed values (never read back from span
//! attributes); their labels are those `/metrics` and the summary print.

use std::collections::BTreeMap;

use sonde_proto::{CtxSource, InjectOutcome};

/// How a span's trace context was decided: its `sonde.trace.link` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// The request's own `traceparent` (servers), or the kernel's context read from it.
    Header,
    /// A child of the one server request its process was serving.
    Linked,
    /// Several server requests in flight: a new trace rather than a guess.
    Ambiguous,
    /// A client request that carried its own `traceparent`.
    Adopted,
    /// The client span of the same stream, traced on this host.
    Peer,
    /// A new trace.
    New,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Linked => "linked",
            Self::Ambiguous => "ambiguous",
            Self::Adopted => "adopted",
            Self::Peer => "peer",
            Self::New => "new",
        }
    }

    /// The link of a context the kernel chose.
    pub fn of(source: CtxSource) -> Self {
        match source {
            CtxSource::Header => Self::Header,
            CtxSource::Linked => Self::Linked,
            CtxSource::Ambiguous => Self::Ambiguous,
            CtxSource::Adopted => Self::Adopted,
            CtxSource::NewTrace => Self::New,
        }
    }
}

/// A parse error of one protocol, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub protocol: &'static str,
    pub kind: &'static str,
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
    /// Database operations seen at a traced server whose client end is traced here too: the
    /// client's span reports them.
    pub db_reported_by_client: u64,
    /// Connections that switched from HTTP/1.1 to HTTP/2 (h2c upgrade).
    pub h2c_upgrades: u64,
    /// Userspace trace-context entries dropped at their bounds (open requests, peer contexts).
    pub links_dropped: u64,
    /// Server requests in progress that HTTP/2 client calls may be linked to (a gauge).
    pub links_open: u64,
    /// Client stream contexts waiting for their peer's server span (a gauge).
    pub links_peers: u64,
    /// Heap bytes of all connections' parser state at the last measure (a gauge).
    pub state_bytes: u64,
    /// Connections whose parser state was dropped to stay within the budget, and the bytes.
    pub state_evictions: u64,
    pub state_evicted_bytes: u64,
}

impl SpanStats {
    pub(crate) fn count_span(&mut self, link: Link, inject: Option<InjectOutcome>) {
        self.spans_created += 1;
        *self.trace_links.entry(link.as_str()).or_default() += 1;
        if let Some(i) = inject {
            *self.injections.entry(i.as_str()).or_default() += 1;
        }
    }

    pub(crate) fn count_parse_error(&mut self, e: ParseError) {
        *self.parse_errors.entry((e.protocol, e.kind)).or_default() += 1;
    }

    pub(crate) fn count_protocol(&mut self, name: &'static str) {
        *self.conns_by_protocol.entry(name).or_default() += 1;
    }

    pub(crate) fn count_incomplete(&mut self, reason: &'static str) {
        *self.incomplete.entry(reason).or_default() += 1;
    }
}
