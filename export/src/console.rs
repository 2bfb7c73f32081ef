//! One line per span for people: the default output when no exporter is configured.
//!
//! ```text
//! 12:01:02.345 checkout SERVER GET /users/{id} 200 - 3.2ms 127.0.0.1:5555 4bf92f35/00f067aa
//! time (UTC)   service  kind   name            |   |  duration peer       trace/span ids
//!                                     status code   span status (OK, ERROR or - for unset)
//! ```
//!
//! The status code is `http.response.status_code`, else `grpc=N` from
//! `rpc.grpc.status_code`, else `-`. The peer is the other side of the connection: the client
//! for a server span, the server for a client span. An error message, if any, ends the line
//! as `error="…"`.

use std::io::{self, Write};

use crate::span::{Span, SpanKind, StatusCode, Value};

/// Display options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Print whole ids instead of their first 8 hex digits.
    pub full_ids: bool,
}

/// Writes one line for `span`.
pub fn write_span(w: &mut impl Write, span: &Span, opts: &Options) -> io::Result<()> {
    let secs = span.start_unix_nanos / 1_000_000_000;
    let millis = (span.start_unix_nanos / 1_000_000) % 1000;
    let day = secs % 86_400;
    write!(
        w,
        "{:02}:{:02}:{:02}.{millis:03} {} {} {} {} {} {} {} ",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        span.resource.service_name().unwrap_or("-"),
        kind_str(span.kind),
        span.name,
        code(span),
        match span.status.code {
            StatusCode::Unset => "-",
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
        },
        Duration(span.duration_nanos()),
        Peer(span),
    )?;
    let (trace, id) = (span.trace_id.to_string(), span.span_id.to_string());
    if opts.full_ids {
        write!(w, "{trace}/{id}")?;
    } else {
        write!(w, "{}/{}", &trace[..8], &id[..8])?;
    }
    if span.status.code == StatusCode::Error && !span.status.message.is_empty() {
        write!(w, " error={:?}", span.status.message)?;
    }
    writeln!(w)
}

/// The upper-case OTLP name without the prefix.
pub fn kind_str(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "INTERNAL",
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    }
}

fn code(span: &Span) -> String {
    match (
        span.attr("http.response.status_code"),
        span.attr("rpc.grpc.status_code"),
    ) {
        (Some(Value::Int(c)), _) => c.to_string(),
        (Some(Value::Str(c)), _) => c.clone(),
        (_, Some(Value::Int(c))) => format!("grpc={c}"),
        _ => "-".to_owned(),
    }
}

/// A duration in the largest unit that keeps it above 1.
struct Duration(u64);

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        match ns {
            0..1_000 => write!(f, "{ns}ns"),
            1_000..1_000_000 => write!(f, "{:.1}µs", ns as f64 / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.1}ms", ns as f64 / 1e6),
            _ => write!(f, "{:.2}s", ns as f64 / 1e9),
        }
    }
}

/// The other end: `address:port`, `[v6]:port`, `address` or `-`.
struct Peer<'a>(&'a Span);

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let span = self.0;
        let preferred = match span.kind {
            SpanKind::Server => Some(("client.address", "client.port")),
            SpanKind::Client => Some(("server.address", "server.port")),
            SpanKind::Internal => None,
        };
        let candidates = preferred
            .into_iter()
            .chain([("network.peer.address", "network.peer.port")]);
        for (addr_key, port_key) in candidates {
            if let Some(Value::Str(addr)) = span.attr(addr_key) {
                let port = match span.attr(port_key) {
                    Some(Value::Int(p)) => Some(*p),
                    _ => None,
                };
                return match (addr.contains(':'), port) {
                    (true, Some(p)) => write!(f, "[{addr}]:{p}"),
                    (false, Some(p)) => write!(f, "{addr}:{p}"),
                    (_, None) => write!(f, "{addr}"),
                };
            }
        }
        f.write_str("-")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::span::{KeyValue, Resource, SpanId, Status, TraceId};

    fn span() -> Span {
        Span {
            trace_id: TraceId([
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ]),
            span_id: SpanId([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET /users/{id}".into(),
            kind: SpanKind::Server,
            // 2024-01-01T12:01:02.345678Z
            start_unix_nanos: 1_704_110_462_345_678_000,
            end_unix_nanos: 1_704_110_462_345_678_000 + 3_200_000,
            attributes: vec![
                KeyValue::new("http.response.status_code", 200i64),
                KeyValue::new("client.address", "127.0.0.1"),
                KeyValue::new("client.port", 5555i64),
                KeyValue::new("network.peer.address", "10.0.0.9"),
            ],
            status: Status::default(),
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", "checkout")],
            }),
        }
    }

    fn line(span: &Span, opts: Options) -> String {
        let mut out = Vec::new();
        write_span(&mut out, span, &opts).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn server_span_line() {
        assert_eq!(
            line(&span(), Options::default()),
            "12:01:02.345 checkout SERVER GET /users/{id} 200 - 3.2ms 127.0.0.1:5555 4bf92f35/00f067aa\n"
        );
    }

    #[test]
    fn client_span_with_error_full_ids_and_v6_peer() {
        let mut s = span();
        s.kind = SpanKind::Client;
        s.status = Status {
            code: StatusCode::Error,
            message: "connection \"reset\"".into(),
        };
        s.attributes = vec![
            KeyValue::new("rpc.grpc.status_code", 14i64),
            KeyValue::new("server.address", "::1"),
            KeyValue::new("server.port", 50051i64),
        ];
        s.end_unix_nanos = s.start_unix_nanos + 1_500_000_000;
        s.resource = Arc::new(Resource::default());
        assert_eq!(
            line(&s, Options { full_ids: true }),
            "12:01:02.345 - CLIENT GET /users/{id} grpc=14 ERROR 1.50s [::1]:50051 \
             4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba902b7 error=\"connection \\\"reset\\\"\"\n"
        );
    }

    #[test]
    fn falls_back_to_network_peer_and_dashes() {
        let mut s = span();
        s.kind = SpanKind::Internal;
        s.status.code = StatusCode::Ok;
        s.attributes = vec![KeyValue::new("network.peer.address", "10.1.2.3")];
        s.end_unix_nanos = s.start_unix_nanos + 850;
        assert_eq!(
            line(&s, Options::default()),
            "12:01:02.345 checkout INTERNAL GET /users/{id} - OK 850ns 10.1.2.3 4bf92f35/00f067aa\n"
        );
        s.attributes.clear();
        s.end_unix_nanos = s.start_unix_nanos + 12_345;
        assert!(line(&s, Options::default()).contains(" - OK 12.3µs - 4bf92f35"));
    }
}
