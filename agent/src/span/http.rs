//! An HTTP/1 exchange as an OpenTelemetry span: name, kind, timing, attributes, status.
//!
//! Attribute names follow the current HTTP semantic conventions. Timing: a server span runs
//! from the return of the read that brought the first request byte to the return of the write
//! that sent the last response byte; a client span from the entry of the write that sent the
//! first request byte to the return of the read that brought the last response byte.

use std::{net::SocketAddr, sync::Arc};

use sonde_model::{KeyValue, Resource, Span, SpanKind, Status, StatusCode, Value};
use sonde_proto::Role;
use sonde_protocol::{
    http1::{Exchange, Incomplete},
    route::{RoutePattern, route, split_target},
};

use super::{ids, links::Ids, stats::Link, timing::TimingIndex};
use crate::{
    clock::WallClock,
    conn::ConnInfo,
    context::{parse_traceparent, parse_tracestate},
    events::TraceCtxEv,
    sampling::RootSampler,
};
use sonde_model::{SpanId, TraceId};
use sonde_proto::CtxSource;

/// The trace context of an HTTP/1 span: from the kernel (the ids that went on the wire), else
/// from the request's own `traceparent`, else new.
pub(super) fn ids(
    kind: SpanKind,
    x: &Exchange,
    ctx: Option<&TraceCtxEv>,
    sampler: RootSampler,
) -> Ids {
    let headers = &x.request.headers;
    let incoming = headers.get_str("traceparent").and_then(parse_traceparent);
    let state = || {
        incoming
            .and_then(|_| {
                parse_tracestate(
                    headers
                        .get_all("tracestate")
                        .filter_map(|v| std::str::from_utf8(v).ok()),
                )
            })
            .unwrap_or_default()
    };
    match (ctx, incoming) {
        // The request carried traceparent and the kernel (client side) adopted it, or no kernel
        // context: the header's trace, the header's span as parent.
        (Some(c), Some(tp)) if c.source == CtxSource::Adopted => Ids {
            trace_id: tp.trace_id,
            span_id: ids::span_id(),
            parent: Some(tp.parent_id),
            flags: tp.flags,
            trace_state: state(),
            link: Link::Adopted,
            inject: Some(c.inject),
        },
        (Some(c), _) => Ids {
            trace_id: TraceId(c.trace_id),
            span_id: SpanId(c.span_id),
            parent: c.parent_span_id.map(SpanId),
            flags: c.flags,
            trace_state: if c.source == CtxSource::Header {
                state()
            } else {
                String::new()
            },
            link: Link::of(c.source),
            inject: (kind == SpanKind::Client).then_some(c.inject),
        },
        (None, Some(tp)) => Ids {
            trace_id: tp.trace_id,
            span_id: ids::span_id(),
            parent: Some(tp.parent_id),
            flags: tp.flags,
            trace_state: state(),
            link: if kind == SpanKind::Client {
                Link::Adopted
            } else {
                Link::Header
            },
            inject: None,
        },
        (None, None) => {
            let trace_id = ids::trace_id();
            Ids {
                trace_id,
                span_id: ids::span_id(),
                parent: None,
                flags: sampler.flags(&trace_id),
                trace_state: String::new(),
                link: Link::New,
                inject: None,
            }
        }
    }
}

/// What the HTTP span builder needs to know from configuration.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// User route patterns; they win over the heuristic.
    pub route_patterns: Vec<RoutePattern>,
    /// Query parameter names whose values are kept; all others are replaced by `REDACTED`.
    pub query_allowlist: Vec<String>,
    /// Request headers (lower case) captured as `http.request.header.<name>`; never a
    /// sensitive one (`crate::privacy` refuses them).
    pub capture_request_headers: Vec<String>,
    /// Response headers (lower case) captured as `http.response.header.<name>`.
    pub capture_response_headers: Vec<String>,
    /// The head-sampling decision of new roots made in userspace.
    pub root_sampler: RootSampler,
    /// Services whose database spans keep literals in `db.query.text` (privacy policy).
    pub raw_query_services: Vec<String>,
    /// Bytes of parser state kept for all connections together (default
    /// [`super::stage::DEFAULT_STATE_BUDGET`]); past it the least recently active
    /// connections' state is dropped (see [`super::stage`]).
    pub state_budget_bytes: Option<usize>,
}

/// Header values as text.
pub(super) fn lossy<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `http.request.header.<name>` / `http.response.header.<name>` attributes: every value of
/// each allow-listed header, as a string array (the semantic conventions' form).
pub(super) fn capture_headers(
    attrs: &mut Vec<KeyValue>,
    prefix: &str,
    names: &[String],
    get_all: impl Fn(&str) -> Vec<String>,
) {
    for name in names {
        if crate::privacy::ALWAYS_SENSITIVE.contains(&name.as_str()) {
            continue;
        }
        let values = get_all(name);
        if !values.is_empty() {
            attrs.push(KeyValue::new(
                format!("{prefix}{name}"),
                Value::StrArray(values),
            ));
        }
    }
}

/// Methods the semantic conventions know; others are reported as `_OTHER`.
pub(super) const KNOWN_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY",
];

/// `url.query` with every value not on the allowlist replaced by `REDACTED`.
pub fn redact_query(query: &str, allow: &[String]) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if allow.iter().any(|a| a == k) => pair.to_owned(),
            Some((k, _)) => format!("{k}=REDACTED"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Splits a `Host` header into host and port.
pub(super) fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// `server.*` and `client.*` of a server span: the server named by the request (`Host`,
/// `:authority`; the local port when it names none), else the local socket; the client is the
/// peer socket.
pub(super) fn server_addresses(
    attrs: &mut Vec<KeyValue>,
    host: Option<(&str, Option<u16>)>,
    conn: &ConnInfo,
    strings: &ConnStrings,
) {
    match host {
        Some((h, p)) if !h.is_empty() => {
            push(attrs, "server.address", h);
            if let Some(p) = p.or(conn.local.map(|a| a.port())) {
                push(attrs, "server.port", i64::from(p));
            }
        }
        _ => {
            if let (Some(l), Some(lip)) = (conn.local, &strings.local_ip) {
                push(attrs, "server.address", lip);
                push(attrs, "server.port", i64::from(l.port()));
            }
        }
    }
    if let (Some(r), Some(rip)) = (conn.remote, &strings.remote_ip) {
        push(attrs, "client.address", rip);
        push(attrs, "client.port", i64::from(r.port()));
    }
}

/// The server a client span called: named by the request (its port, else the peer's), else the
/// peer socket.
pub(super) fn called_server(
    host: Option<(&str, Option<u16>)>,
    conn: &ConnInfo,
    strings: &ConnStrings,
) -> (String, Option<u16>) {
    match (host, conn.remote) {
        (Some((h, p)), r) if !h.is_empty() => (h.to_owned(), p.or(r.map(|r| r.port()))),
        (_, Some(r)) => (
            strings.remote_ip.clone().unwrap_or_default(),
            Some(r.port()),
        ),
        (_, None) => (String::new(), None),
    }
}

pub(super) fn push(attrs: &mut Vec<KeyValue>, key: &'static str, value: impl Into<Value>) {
    attrs.push(KeyValue::new(key, value));
}

fn ip(a: &SocketAddr) -> String {
    match a.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

/// Strings of a connection computed once, not per span.
#[derive(Clone, Debug, Default)]
pub struct ConnStrings {
    pub local_ip: Option<String>,
    pub remote_ip: Option<String>,
}

impl ConnStrings {
    pub fn of(conn: &ConnInfo) -> Self {
        Self {
            local_ip: conn.local.as_ref().map(ip),
            remote_ip: conn.remote.as_ref().map(ip),
        }
    }
}

/// Builds the span of one exchange seen on `conn`.
#[allow(clippy::too_many_arguments)]
pub fn exchange_span(
    config: &HttpConfig,
    clock: &WallClock,
    conn: &ConnInfo,
    strings: &ConnStrings,
    ids: Ids,
    x: &Exchange,
    req_timing: &TimingIndex,
    resp_timing: &TimingIndex,
    resource: Arc<Resource>,
) -> Span {
    let kind = if conn.role == Role::Client {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let req = &x.request;
    let (path, query) = split_target(&req.target);
    let route = route(path, &config.route_patterns);
    let method: &str = if KNOWN_METHODS.contains(&req.method.as_str()) {
        &req.method
    } else {
        "_OTHER"
    };

    // Timing.
    let first_req = req_timing.at(x.request_extent.first);
    let last_resp = x
        .response_extent
        .filter(|e| e.complete)
        .and_then(|e| resp_timing.at(e.last));
    let start_mono = match (kind, first_req) {
        (SpanKind::Client, Some(t)) => t.enter_ns,
        (_, Some(t)) => t.exit_ns,
        (_, None) => conn.opened_ns,
    };
    let end_mono = match last_resp {
        Some(t) => t.exit_ns,
        // No complete response: the last thing seen on the connection.
        None => [resp_timing.last(), req_timing.at(x.request_extent.last)]
            .into_iter()
            .flatten()
            .map(|t| t.exit_ns)
            .max()
            .unwrap_or(start_mono),
    }
    .max(start_mono);

    let scheme = if conn.tls { "https" } else { "http" };
    let mut attrs = Vec::with_capacity(24);
    push(&mut attrs, "http.request.method", method);
    if method == "_OTHER" {
        push(
            &mut attrs,
            "http.request.method_original",
            req.method.as_str(),
        );
    }
    let host_header = req.headers.get_str("host");
    let query = query.map(|q| redact_query(q, &config.query_allowlist));
    match kind {
        SpanKind::Server => {
            push(&mut attrs, "url.path", path);
            if let Some(q) = &query {
                push(&mut attrs, "url.query", q);
            }
            push(&mut attrs, "url.scheme", scheme);
            push(&mut attrs, "http.route", &route);
            server_addresses(&mut attrs, host_header.map(split_host), conn, strings);
        }
        _ => {
            let (host, port) = called_server(host_header.map(split_host), conn, strings);
            let default_port = if conn.tls { 443 } else { 80 };
            let authority = match port {
                Some(p) if p != default_port => format!("{host}:{p}"),
                _ => host.clone(),
            };
            let full = match &query {
                Some(q) => format!("{scheme}://{authority}{path}?{q}"),
                None => format!("{scheme}://{authority}{path}"),
            };
            push(&mut attrs, "url.full", full);
            if !host.is_empty() {
                push(&mut attrs, "server.address", host);
            }
            if let Some(p) = port {
                push(&mut attrs, "server.port", i64::from(p));
            }
            push(&mut attrs, "http.route", &route);
        }
    }
    if let (Some(r), Some(rip)) = (conn.remote, &strings.remote_ip) {
        push(&mut attrs, "network.peer.address", rip);
        push(&mut attrs, "network.peer.port", i64::from(r.port()));
    }
    push(&mut attrs, "network.transport", "tcp");
    push(&mut attrs, "network.protocol.name", "http");
    push(
        &mut attrs,
        "network.protocol.version",
        if req.minor_version == 0 { "1.0" } else { "1.1" },
    );
    if let Some(ua) = req.headers.get_str("user-agent") {
        push(&mut attrs, "user_agent.original", ua);
    }
    capture_headers(
        &mut attrs,
        "http.request.header.",
        &config.capture_request_headers,
        |n| lossy(req.headers.get_all(n)),
    );
    if let Some(resp) = &x.response {
        capture_headers(
            &mut attrs,
            "http.response.header.",
            &config.capture_response_headers,
            |n| lossy(resp.headers.get_all(n)),
        );
    }
    if x.request_extent.body_len > 0 {
        push(
            &mut attrs,
            "http.request.body.size",
            x.request_extent.body_len as i64,
        );
    }
    let status = x.status();
    if let Some(code) = status {
        push(&mut attrs, "http.response.status_code", i64::from(code));
    }
    if let Some(e) = x.response_extent
        && e.body_len > 0
    {
        push(&mut attrs, "http.response.body.size", e.body_len as i64);
    }
    if !x.interim.is_empty() {
        attrs.push(KeyValue::new(
            "sonde.http.interim_status_codes",
            Value::StrArray(x.interim.iter().map(|i| i.status.to_string()).collect()),
        ));
    }

    // Status per DESIGN.md: server 5xx, client 4xx/5xx, no (complete) response: error.
    if let Some(reason) = x.incomplete {
        push(&mut attrs, "sonde.http.incomplete", reason.as_str());
    }
    let span_status = match (status, x.incomplete) {
        (Some(code), _) if code >= 500 || (kind == SpanKind::Client && code >= 400) => {
            push(&mut attrs, "error.type", code.to_string());
            Status {
                code: StatusCode::Error,
                message: String::new(),
            }
        }
        (Some(_), None) => Status::default(),
        (Some(_), Some(reason)) => {
            push(&mut attrs, "error.type", reason.as_str());
            Status {
                code: StatusCode::Error,
                message: format!("response cut short: {}", reason.as_str()),
            }
        }
        (None, reason) => {
            let why = reason.map_or("no_response", Incomplete::as_str);
            push(&mut attrs, "error.type", why);
            Status {
                code: StatusCode::Error,
                message: format!("no response: {why}"),
            }
        }
    };

    ids.into_span(
        format!("{} {route}", method_for_name(&req.method)),
        kind,
        (clock.unix_ns(start_mono), clock.unix_ns(end_mono)),
        attrs,
        span_status,
        resource,
    )
}

/// The method in a span name: known methods as they are, others as `HTTP` (bounded, safe).
pub(super) fn method_for_name(m: &str) -> &str {
    if KNOWN_METHODS.contains(&m) {
        m
    } else {
        "HTTP"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_unless_allowed() {
        assert_eq!(
            redact_query("user=bob&token=abc&page=2&flag", &["page".into()]),
            "user=REDACTED&token=REDACTED&page=2&flag"
        );
        assert_eq!(redact_query("", &[]), "");
    }

    #[test]
    fn host_headers_split() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("[::1]"), ("::1", None));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
