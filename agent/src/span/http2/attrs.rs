//! An HTTP/2 stream as an OpenTelemetry span; gRPC calls get the RPC conventions.
//!
//! Timing is HTTP/1's, per stream: a server span from the return of the read that brought the
//! first byte of the request's HEADERS to the return of the write that sent the response's last
//! frame (END_STREAM); a client span from the entry of the write that sent the HEADERS to the
//! return of the read that brought END_STREAM.
//!
//! gRPC (`content-type: application/grpc...`): named `package.Service/Method`, with
//! `rpc.system=grpc`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` from the trailers or
//! a Trailers-Only response, `grpc-message` as the status message. Status: a client span is an
//! error unless the status is OK; a server span is an error for UNKNOWN, DEADLINE_EXCEEDED,
//! UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS. A call without a status (reset, cut
//! short, not captured) is an error that says why. Streaming calls are one span per call, with
//! the message counts of each direction.
//!
//! Header fields sonde could not decode (it joined the connection late, or missed a header
//! block) are never guessed: the span carries `sonde.h2.unrecovered_fields`, and a status or
//! path that may be among them is reported as unknown.

use std::sync::Arc;

use sonde_model::{KeyValue, Resource, Span, SpanKind, Status, StatusCode};
use sonde_proto::Role;
use sonde_protocol::{
    grpc::{self, GrpcCall},
    http2::{H2Exchange, Incomplete},
    route::{route, split_target},
};

use crate::span::{
    http::{
        ConnStrings, HttpConfig, KNOWN_METHODS, called_server, method_for_name, push, redact_query,
        server_addresses, split_host,
    },
    links::Ids,
};
use crate::{clock::WallClock, conn::ConnInfo};

/// Span name and attributes of a stream whose request head was not seen.
const UNKNOWN_NAME: &str = "HTTP";

/// Builds the span of one stream seen on `conn`, between the monotonic times given.
#[allow(clippy::too_many_arguments)]
pub fn stream_span(
    config: &HttpConfig,
    clock: &WallClock,
    conn: &ConnInfo,
    strings: &ConnStrings,
    ids: Ids,
    x: &H2Exchange,
    (start_mono, end_mono): (u64, u64),
    resource: Arc<Resource>,
) -> Span {
    let kind = if conn.role == Role::Client {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let mut attrs = Vec::with_capacity(24);
    let call = GrpcCall::from_exchange(x);
    let req = x.request.as_ref();
    let authority = req.and_then(|r| r.authority.as_deref()).map(split_host);
    let duration_ns = end_mono.saturating_sub(start_mono);
    let (name, status) = match &call {
        Some(call) => grpc_attrs(&mut attrs, kind, x, call, duration_ns),
        None => http_attrs(&mut attrs, config, kind, x),
    };

    // Addresses: the server from :authority (client side) or the local socket (server side).
    match kind {
        SpanKind::Server => {
            server_addresses(&mut attrs, authority, conn, strings);
        }
        _ => {
            let (host, port) = called_server(authority, conn, strings);
            if call.is_none()
                && let Some(path) = req.and_then(|r| r.path.as_deref())
            {
                let (path, query) = split_target(path);
                let scheme = req.and_then(|r| r.scheme.as_deref()).unwrap_or("http");
                let authority = match port {
                    Some(p) if !(p == 80 && scheme == "http" || p == 443 && scheme == "https") => {
                        format!("{host}:{p}")
                    }
                    _ => host.clone(),
                };
                let full = match query.map(|q| redact_query(q, &config.query_allowlist)) {
                    Some(q) => format!("{scheme}://{authority}{path}?{q}"),
                    None => format!("{scheme}://{authority}{path}"),
                };
                push(&mut attrs, "url.full", full);
            }
            if !host.is_empty() {
                push(&mut attrs, "server.address", host);
            }
            if let Some(p) = port {
                push(&mut attrs, "server.port", i64::from(p));
            }
        }
    }
    if let (Some(r), Some(rip)) = (conn.remote, &strings.remote_ip) {
        push(&mut attrs, "network.peer.address", rip);
        push(&mut attrs, "network.peer.port", i64::from(r.port()));
    }
    push(&mut attrs, "network.transport", "tcp");
    push(&mut attrs, "network.protocol.name", "http");
    push(&mut attrs, "network.protocol.version", "2");
    if let Some(r) = req {
        crate::span::http::capture_headers(
            &mut attrs,
            "http.request.header.",
            &config.capture_request_headers,
            |n| crate::span::http::lossy(r.headers.get_all(n)),
        );
    }
    if let Some(r) = &x.response {
        crate::span::http::capture_headers(
            &mut attrs,
            "http.response.header.",
            &config.capture_response_headers,
            |n| crate::span::http::lossy(r.headers.get_all(n)),
        );
    }
    if let Some(ua) = req.and_then(|r| r.headers.get_str("user-agent")) {
        push(&mut attrs, "user_agent.original", ua);
    }
    push(&mut attrs, "sonde.h2.stream_id", i64::from(x.stream_id));
    let unrecovered = x.unrecovered();
    if unrecovered > 0 {
        push(
            &mut attrs,
            "sonde.h2.unrecovered_fields",
            i64::from(unrecovered),
        );
    }
    if let Some(r) = x.reset {
        push(&mut attrs, "sonde.h2.reset_code", r.code.to_string());
        push(
            &mut attrs,
            "sonde.h2.reset_by",
            match (r.by, kind) {
                (sonde_protocol::http2::Side::Request, SpanKind::Client)
                | (sonde_protocol::http2::Side::Response, SpanKind::Server) => "self",
                _ => "peer",
            },
        );
    }
    if let Some(reason) = x.incomplete {
        push(&mut attrs, "sonde.http.incomplete", reason.as_str());
    }
    // `sonde.trace.inject`: what the kernel did with the request's HEADERS (or, for stream 1 of
    // an h2c upgrade, with the HTTP/1.1 request that opened it).
    ids.into_span(
        name,
        kind,
        (
            clock.unix_ns(start_mono),
            clock.unix_ns(end_mono.max(start_mono)),
        ),
        attrs,
        status,
        resource,
    )
}

/// Why a stream has no status, for `error.type` and the status message.
fn missing(x: &H2Exchange) -> &'static str {
    match x.incomplete {
        Some(reason) => reason.as_str(),
        None if x.response.as_ref().is_some_and(|r| r.pseudo_unknown()) => "status_unrecovered",
        None => "no_response",
    }
}

fn error(attrs: &mut Vec<KeyValue>, error_type: String, message: String) -> Status {
    push(attrs, "error.type", error_type);
    Status {
        code: StatusCode::Error,
        message,
    }
}

/// `grpc-timeout` (RFC: 1–8 digits and a unit H M S m u n) in nanoseconds.
fn grpc_timeout_ns(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let per = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        _ => return None,
    };
    Some(n.saturating_mul(per))
}

/// A call the client cancelled once its `grpc-timeout` ran out: what its caller saw was
/// DEADLINE_EXCEEDED, although no status crossed the wire.
fn deadline_passed(x: &H2Exchange, duration_ns: u64) -> bool {
    let cancelled_by_client = x.reset.is_some_and(|r| {
        r.by == sonde_protocol::http2::Side::Request
            && r.code == sonde_protocol::http2::ErrorCode::CANCEL
    });
    let timeout = x
        .request
        .as_ref()
        .and_then(|r| r.headers.get_str("grpc-timeout"))
        .and_then(grpc_timeout_ns);
    // Clocks differ a little between the client's timer and the syscalls sonde timed.
    cancelled_by_client && timeout.is_some_and(|t| duration_ns >= t - t / 10)
}

fn grpc_attrs(
    attrs: &mut Vec<KeyValue>,
    kind: SpanKind,
    x: &H2Exchange,
    call: &GrpcCall,
    duration_ns: u64,
) -> (String, Status) {
    push(attrs, "rpc.system", "grpc");
    if let Some(s) = &call.service {
        push(attrs, "rpc.service", s);
    }
    if let Some(m) = &call.method {
        push(attrs, "rpc.method", m);
    }
    if let Some(s) = call.status {
        push(attrs, "rpc.grpc.status_code", i64::from(s));
    }
    if call.web {
        push(attrs, "sonde.grpc.web", true);
    }
    for (key, m) in [
        ("sonde.grpc.request_messages", call.request_messages),
        ("sonde.grpc.response_messages", call.response_messages),
    ] {
        if let Some(m) = m {
            push(attrs, key, i64::from(m.count));
        }
    }
    let name = match (&call.service, &call.method) {
        (Some(s), Some(m)) => format!("{s}/{m}"),
        // Not a gRPC path, or not recovered: bounded, never the raw path.
        _ => "grpc".to_owned(),
    };
    let role = if kind == SpanKind::Client {
        grpc::Role::Client
    } else {
        grpc::Role::Server
    };
    let status = match call.status {
        Some(s) if grpc::is_error(s, role) => {
            let code = call.code().map_or("UNKNOWN", |c| c.as_str());
            let message = call
                .message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| code.to_owned());
            error(attrs, code.to_owned(), message)
        }
        Some(_) => Status::default(),
        None if kind == SpanKind::Client && deadline_passed(x, duration_ns) => {
            push(attrs, "sonde.grpc.deadline_exceeded", true);
            error(
                attrs,
                "DEADLINE_EXCEEDED".to_owned(),
                "deadline exceeded: the client cancelled the call when its grpc-timeout ran out"
                    .to_owned(),
            )
        }
        None => {
            if call.status_unknown {
                push(attrs, "sonde.grpc.status_unrecovered", true);
            }
            let why = if call.status_unknown {
                "status_unrecovered"
            } else {
                missing(x)
            };
            error(attrs, why.to_owned(), format!("no grpc-status: {why}"))
        }
    };
    (name, status)
}

fn http_attrs(
    attrs: &mut Vec<KeyValue>,
    config: &HttpConfig,
    kind: SpanKind,
    x: &H2Exchange,
) -> (String, Status) {
    let Some(req) = x.request.as_ref() else {
        push(attrs, "sonde.h2.request_unseen", true);
        let status = x.status();
        if let Some(code) = status {
            push(attrs, "http.response.status_code", i64::from(code));
        }
        return (UNKNOWN_NAME.to_owned(), http_status(attrs, kind, x, status));
    };
    let method_raw = req.method.as_deref().unwrap_or("");
    let method = if KNOWN_METHODS.contains(&method_raw) {
        method_raw.to_owned()
    } else {
        "_OTHER".to_owned()
    };
    push(attrs, "http.request.method", &method);
    if method == "_OTHER" && !method_raw.is_empty() {
        push(attrs, "http.request.method_original", method_raw);
    }
    let name = match req.path.as_deref() {
        Some(target) => {
            let (path, query) = split_target(target);
            let route = route(path, &config.route_patterns);
            if kind == SpanKind::Server {
                push(attrs, "url.path", path);
                if let Some(q) = query {
                    push(attrs, "url.query", redact_query(q, &config.query_allowlist));
                }
                push(
                    attrs,
                    "url.scheme",
                    req.scheme.clone().unwrap_or_else(|| "http".to_owned()),
                );
            }
            push(attrs, "http.route", &route);
            format!("{} {route}", method_for_name(method_raw))
        }
        None => method_for_name(method_raw).to_owned(),
    };
    if let Some(e) = x.request_extent
        && e.body_len > 0
    {
        push(attrs, "http.request.body.size", e.body_len as i64);
    }
    let status = x.status();
    if let Some(code) = status {
        push(attrs, "http.response.status_code", i64::from(code));
    }
    if let Some(e) = x.response_extent
        && e.body_len > 0
    {
        push(attrs, "http.response.body.size", e.body_len as i64);
    }
    (name, http_status(attrs, kind, x, status))
}

/// HTTP status rules (DESIGN.md): server 5xx, client 4xx and 5xx, no complete response.
fn http_status(
    attrs: &mut Vec<KeyValue>,
    kind: SpanKind,
    x: &H2Exchange,
    status: Option<u16>,
) -> Status {
    match (status, x.incomplete) {
        (Some(code), _) if code >= 500 || (kind == SpanKind::Client && code >= 400) => {
            error(attrs, code.to_string(), String::new())
        }
        (Some(_), None) => Status::default(),
        (Some(_), Some(reason)) => error(
            attrs,
            reason.as_str().to_owned(),
            format!("response cut short: {}", reason.as_str()),
        ),
        (None, _) => {
            let why = missing(x);
            error(attrs, why.to_owned(), format!("no response: {why}"))
        }
    }
}

/// Label of an incomplete stream (for counters).
pub fn incomplete_label(x: &H2Exchange) -> Option<&'static str> {
    x.incomplete.map(Incomplete::as_str)
}

#[cfg(test)]
mod tests {
    use sonde_model::{SpanId, TraceId, Value};
    use sonde_protocol::http2::{H2Conn, H2Event, Limits, Side};

    use super::*;
    use crate::conn::ConnInfo;

    /// The kernel looks for the name `traceparent` Huffman-coded as these bytes
    /// (`sonde_proto::H2_TRACEPARENT_HUFFMAN`), and adds the header as a literal field without
    /// indexing, not Huffman-coded (`agent-ebpf/src/h2ctx.rs`): both decode as meant.
    #[test]
    fn the_kernels_hpack_bytes_decode_as_traceparent() {
        use sonde_protocol::http2::{
            Headers,
            hpack::{Decoder, DecoderLimits},
        };
        let mut block = vec![0x00, 0x80 | 8];
        block.extend(sonde_proto::H2_TRACEPARENT_HUFFMAN);
        block.extend([3, b'a', b'b', b'c']);
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        block.extend([0x00, 11]);
        block.extend(b"traceparent");
        block.push(55);
        block.extend(value.as_bytes());
        assert_eq!(block.len(), 2 + 8 + 4 + 69);
        let mut d = Decoder::new(DecoderLimits::default());
        let mut h = Headers::default();
        d.decode(&block, &mut h).unwrap();
        let got: Vec<&[u8]> = h.get_all("traceparent").collect();
        assert_eq!(got, [b"abc".as_slice(), value.as_bytes()]);
        // Literals without indexing leave the dynamic table as it was.
        assert_eq!(d.table().len(), 0);
    }

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(id.to_be_bytes());
        f.extend(payload);
        f
    }

    /// Literal field without indexing, new name.
    fn lit(name: &str, value: &str) -> Vec<u8> {
        let mut b = vec![0x00, name.len() as u8];
        b.extend(name.as_bytes());
        b.push(value.len() as u8);
        b.extend(value.as_bytes());
        b
    }

    /// One gRPC call: POST /pkg.Echo/Say, one message each way, then `grpc-status`.
    fn grpc_exchange(status: &str, message: &str) -> H2Exchange {
        let mut conn = H2Conn::new(Limits::default());
        let mut out = Vec::new();
        let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let head = [
            vec![0x83, 0x86], // :method POST, :scheme http
            lit(":path", "/pkg.Echo/Say"),
            lit(":authority", "echo:50051"),
            lit("content-type", "application/grpc"),
        ]
        .concat();
        req.extend(frame(1, 4, 1, &head));
        req.extend(frame(0, 1, 1, &[0, 0, 0, 0, 2, 8, 1]));
        conn.data(Side::Request, 0, &req, &mut out);
        let mut resp = frame(
            1,
            4,
            1,
            &[vec![0x88], lit("content-type", "application/grpc")].concat(),
        );
        resp.extend(frame(0, 0, 1, &[0, 0, 0, 0, 1, 9]));
        let mut trailers = lit("grpc-status", status);
        if !message.is_empty() {
            trailers.extend(lit("grpc-message", message));
        }
        resp.extend(frame(1, 5, 1, &trailers));
        conn.data(Side::Response, 0, &resp, &mut out);
        match out.pop() {
            Some(H2Event::Exchange(x)) => *x,
            other => panic!("{other:?}"),
        }
    }

    fn span_of(x: &H2Exchange, role: Role) -> Span {
        let conn = ConnInfo {
            id: 1,
            pid: 2,
            fd: 3,
            role,
            source: sonde_proto::ConnSource::Accept,
            local: Some("127.0.0.1:50051".parse().unwrap()),
            remote: Some("127.0.0.1:40000".parse().unwrap()),
            netns: 0,
            comm: String::new(),
            opened_ns: 0,
            tls: false,
            cgroup_id: 0,
        };
        let ids = Ids {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            parent: None,
            flags: 1,
            trace_state: String::new(),
            link: crate::span::stats::Link::New,
            inject: None,
        };
        stream_span(
            &HttpConfig::default(),
            &WallClock::with_offset(0),
            &conn,
            &ConnStrings::of(&conn),
            ids,
            x,
            (10, 20),
            Arc::new(Resource::default()),
        )
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
        s.attr(key)
    }

    #[test]
    fn a_grpc_call_has_the_rpc_attributes_and_its_status() {
        let x = grpc_exchange("0", "");
        let s = span_of(&x, Role::Server);
        assert_eq!(s.name, "pkg.Echo/Say");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(attr(&s, "rpc.system"), Some(&Value::Str("grpc".into())));
        assert_eq!(
            attr(&s, "rpc.service"),
            Some(&Value::Str("pkg.Echo".into()))
        );
        assert_eq!(attr(&s, "rpc.method"), Some(&Value::Str("Say".into())));
        assert_eq!(attr(&s, "rpc.grpc.status_code"), Some(&Value::Int(0)));
        assert_eq!(
            attr(&s, "sonde.grpc.request_messages"),
            Some(&Value::Int(1))
        );
        assert_eq!(
            attr(&s, "sonde.grpc.response_messages"),
            Some(&Value::Int(1))
        );
        assert_eq!(attr(&s, "server.address"), Some(&Value::Str("echo".into())));
        assert_eq!(attr(&s, "server.port"), Some(&Value::Int(50051)));
        assert_eq!(s.status.code, StatusCode::Unset);
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout_ns("200m"), Some(200_000_000));
        assert_eq!(grpc_timeout_ns("1S"), Some(1_000_000_000));
        assert_eq!(grpc_timeout_ns("99999999H"), Some(u64::MAX), "saturates");
        assert_eq!(grpc_timeout_ns("123456789m"), None, "9 digits");
        assert_eq!(grpc_timeout_ns("m"), None);
        assert_eq!(grpc_timeout_ns("5x"), None);
        assert_eq!(grpc_timeout_ns(""), None);
    }

    #[test]
    fn grpc_status_maps_to_span_status_per_side() {
        // NOT_FOUND: the client's error, not the server's.
        let x = grpc_exchange("5", "no%20such%20key");
        let server = span_of(&x, Role::Server);
        assert_eq!(server.status.code, StatusCode::Unset);
        let client = span_of(&x, Role::Client);
        assert_eq!(client.status.code, StatusCode::Error);
        assert_eq!(client.status.message, "no such key");
        assert_eq!(
            attr(&client, "error.type"),
            Some(&Value::Str("NOT_FOUND".into()))
        );
        // INTERNAL: an error on both sides.
        let x = grpc_exchange("13", "");
        assert_eq!(span_of(&x, Role::Server).status.code, StatusCode::Error);
        assert_eq!(span_of(&x, Role::Server).status.message, "INTERNAL");
    }
}
