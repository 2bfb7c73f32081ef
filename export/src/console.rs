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
        (Some(Value::Str(c)), _) => c.to_string(),
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

/// Spans held until their trace is finished, then printed as a tree: the console view of
/// traces. A trace is finished when none of its spans arrived for `idle_nanos`; the buffer is
/// bounded (`max_spans`), and when it is full the oldest traces are printed as they are.
///
/// ```text
/// 12:01:02.341 curl CLIENT GET /a/{id} 200 - 8.7ms 127.0.0.1:9101 9455d6ee/8accac81
///   └─ 12:01:02.345 python3.11 SERVER GET /a/{id} 200 - 4.9ms 127.0.0.1:43240 9455d6ee/1ac02110
///      └─ 12:01:02.346 python3.11 CLIENT GET /a/{id} 200 - 3.3ms 127.0.0.1:9102 9455d6ee/c4eb377c
/// ```
pub struct TraceTrees {
    traces: std::collections::HashMap<crate::span::TraceId, (u64, Vec<Span>)>,
    held: usize,
    /// Most spans held at once.
    pub max_spans: usize,
    /// A trace with no new span for this long (ns) is finished.
    pub idle_nanos: u64,
    opts: Options,
}

impl TraceTrees {
    pub fn new(opts: Options) -> Self {
        Self {
            traces: std::collections::HashMap::new(),
            held: 0,
            max_spans: 10_000,
            idle_nanos: 1_000_000_000,
            opts,
        }
    }

    /// Adds a span seen at `now` (any clock, as long as `flush` uses the same).
    pub fn add(&mut self, span: Span, now: u64, w: &mut impl Write) -> io::Result<()> {
        if self.held >= self.max_spans {
            // Full: print the trace that has waited longest.
            let oldest = self
                .traces
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| *k);
            if let Some((_, spans)) = oldest.and_then(|k| self.traces.remove(&k)) {
                self.held -= spans.len();
                self.print(spans, w)?;
            }
        }
        let entry = self
            .traces
            .entry(span.trace_id)
            .or_insert((now, Vec::new()));
        entry.0 = now;
        entry.1.push(span);
        self.held += 1;
        Ok(())
    }

    /// Prints every trace idle since `idle_nanos` before `now` (all of them with `force`).
    pub fn flush(&mut self, now: u64, force: bool, w: &mut impl Write) -> io::Result<()> {
        let mut done: Vec<_> = self
            .traces
            .iter()
            .filter(|(_, (t, _))| force || now.saturating_sub(*t) >= self.idle_nanos)
            .map(|(k, (t, _))| (*t, *k))
            .collect();
        done.sort();
        for (_, k) in done {
            if let Some((_, spans)) = self.traces.remove(&k) {
                self.held -= spans.len();
                self.print(spans, w)?;
            }
        }
        Ok(())
    }

    pub fn held(&self) -> usize {
        self.held
    }

    fn print(&self, mut spans: Vec<Span>, w: &mut impl Write) -> io::Result<()> {
        spans.sort_by_key(|s| s.start_unix_nanos);
        let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id).collect();
        // Roots: no parent, or a parent not among these spans (another node, an SDK).
        let roots: Vec<usize> = (0..spans.len())
            .filter(|&i| spans[i].parent_span_id.is_none_or(|p| !ids.contains(&p)))
            .collect();
        let mut printed = vec![false; spans.len()];
        for r in roots {
            self.print_tree(&spans, r, 0, &mut printed, w)?;
        }
        // Anything left is in a cycle of parents (never from sonde): print it flat.
        for (i, s) in spans.iter().enumerate() {
            if !printed[i] {
                write_span(w, s, &self.opts)?;
            }
        }
        Ok(())
    }

    fn print_tree(
        &self,
        spans: &[Span],
        i: usize,
        depth: usize,
        printed: &mut [bool],
        w: &mut impl Write,
    ) -> io::Result<()> {
        if printed[i] || depth > 64 {
            return Ok(());
        }
        printed[i] = true;
        if depth > 0 {
            write!(w, "{:width$}└─ ", "", width = 3 * depth - 1)?;
        }
        write_span(w, &spans[i], &self.opts)?;
        let id = spans[i].span_id;
        for c in 0..spans.len() {
            if spans[c].parent_span_id == Some(id) {
                self.print_tree(spans, c, depth + 1, printed, w)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tree_tests {
    use std::sync::Arc;

    use super::*;
    use crate::span::{KeyValue, Resource, SpanId, Status, TraceId};

    fn span(id: u8, parent: Option<u8>, trace: u8, start: u64) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 1,
            name: format!("GET /{id}"),
            kind: SpanKind::Server,
            start_unix_nanos: start,
            end_unix_nanos: start + 1000,
            attributes: vec![KeyValue::new("http.response.status_code", 200i64)],
            status: Status::default(),
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", "svc")],
            }),
        }
    }

    #[test]
    fn finished_traces_print_as_trees() {
        let mut t = TraceTrees::new(Options::default());
        let mut out = Vec::new();
        // Children arrive before their parents: the tree does not care.
        t.add(span(3, Some(2), 1, 30), 0, &mut out).unwrap();
        t.add(span(2, Some(1), 1, 20), 0, &mut out).unwrap();
        t.add(span(1, None, 1, 10), 0, &mut out).unwrap();
        t.add(span(9, None, 2, 5), 900_000_000, &mut out).unwrap();
        t.flush(999_999_999, false, &mut out).unwrap();
        assert!(out.is_empty(), "nothing idle yet");
        t.flush(1_000_000_000, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("GET /1") && !lines[0].starts_with(' '));
        assert!(lines[1].starts_with("  └─ ") && lines[1].contains("GET /2"));
        assert!(lines[2].starts_with("     └─ ") && lines[2].contains("GET /3"));
        assert_eq!(t.held(), 1);
        let mut out = Vec::new();
        t.flush(0, true, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("GET /9"));
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn a_full_buffer_prints_the_oldest_trace() {
        let mut t = TraceTrees::new(Options::default());
        t.max_spans = 2;
        let mut out = Vec::new();
        t.add(span(1, None, 1, 1), 1, &mut out).unwrap();
        t.add(span(2, None, 2, 2), 2, &mut out).unwrap();
        t.add(span(3, None, 3, 3), 3, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("GET /1") && !text.contains("GET /2"),
            "{text}"
        );
        assert_eq!(t.held(), 2);
    }
}
