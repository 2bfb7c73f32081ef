//! Spans → span-metric points, and the service graph's peer names.
//!
//! Attributes are the low-cardinality ones of the semantic conventions: method, route template,
//! status code, `service.name`, and for clients the peer service. The peer service of a client
//! span is the `service.name` of the server span it caused when that server runs on this node
//! (matched by the server span's parent id, remembered for a while), else the server address
//! it called.

use std::collections::{HashMap, VecDeque};

use sonde_export::{
    metrics::{Instrument, Point},
    span::{Span, SpanId, SpanKind, Value},
};

use super::{is_client, is_rpc};

/// Server spans remembered for pairing with the client span that caused them.
const MAX_SERVERS: usize = 8192;

fn attr_string(span: &Span, key: &str) -> Option<String> {
    match span.attr(key)? {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Double(d) => Some(d.to_string()),
        Value::StrArray(_) => None,
    }
}

/// Remembers which service answered which client span (by the client span's id).
#[derive(Debug, Default)]
pub struct Peers {
    by_parent: HashMap<SpanId, String>,
    order: VecDeque<SpanId>,
}

impl Peers {
    /// A server span was seen: its parent (a client span, maybe on this node) called this
    /// service.
    pub fn server_seen(&mut self, span: &Span) {
        let (Some(parent), SpanKind::Server) = (span.parent_span_id, span.kind) else {
            return;
        };
        let service = span.resource.service_name().unwrap_or("unknown").to_owned();
        if self.by_parent.insert(parent, service).is_none() {
            self.order.push_back(parent);
            if self.order.len() > MAX_SERVERS
                && let Some(old) = self.order.pop_front()
            {
                self.by_parent.remove(&old);
            }
        }
    }

    /// The peer service of a client span.
    pub fn peer_of(&self, span: &Span) -> String {
        if let Some(s) = self.by_parent.get(&span.span_id) {
            return s.clone();
        }
        match (
            attr_string(span, "server.address"),
            span.attr("server.port"),
        ) {
            (Some(h), Some(Value::Int(p))) => format!("{h}:{p}"),
            (Some(h), _) => h,
            _ => "unknown".to_owned(),
        }
    }
}

/// The points one span makes (one, plus a service-graph edge for client spans).
pub fn points_of(span: &Span, peers: &Peers) -> Vec<Point> {
    let service = span.resource.service_name().unwrap_or("unknown").to_owned();
    let rpc = is_rpc(span);
    let client = is_client(span);
    if !matches!(span.kind, SpanKind::Server | SpanKind::Client) {
        return Vec::new();
    }
    let db = span.attr("db.system.name").is_some();
    let instrument = match (rpc, client) {
        _ if db => Instrument::DbClient,
        (false, false) => Instrument::HttpServer,
        (false, true) => Instrument::HttpClient,
        (true, false) => Instrument::RpcServer,
        (true, true) => Instrument::RpcClient,
    };
    let keys: &[&'static str] = if db {
        &[
            "db.system.name",
            "db.namespace",
            "db.operation.name",
            "db.collection.name",
            "db.response.status_code",
            "server.address",
            "server.port",
        ]
    } else if rpc {
        &[
            "rpc.system",
            "rpc.service",
            "rpc.method",
            "rpc.grpc.status_code",
        ]
    } else {
        &[
            "http.request.method",
            "http.route",
            "http.response.status_code",
        ]
    };
    let mut attributes: Vec<(&'static str, String)> = keys
        .iter()
        .filter_map(|k| attr_string(span, k).map(|v| (*k, v)))
        .collect();
    // A database is an edge of the service graph too, named by its system and address.
    let peer = client.then(|| peers.peer_of(span));
    if let Some(p) = &peer {
        attributes.push(("peer.service", p.clone()));
    }
    attributes.push(("service.name", service.clone()));
    let nanos = span.duration_nanos();
    let mut out = vec![Point {
        instrument,
        attributes,
        value: instrument.value_of(nanos),
    }];
    if let Some(server) = peer {
        let failed = span.status.code == sonde_model::StatusCode::Error;
        out.push(Point {
            instrument: Instrument::ServiceGraph,
            attributes: vec![
                ("client", service),
                ("server", server),
                ("failed", failed.to_string()),
            ],
            value: Instrument::ServiceGraph.value_of(nanos),
        });
    }
    out
}
