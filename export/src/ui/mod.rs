//! The trace view (`sonde run --ui`): one page, embedded in the binary, that lists recent
//! traces, draws a trace as a waterfall and the services as a map, live.
//!
//! The page (`assets/`) is static and asks the agent for JSON: `/api/traces` (the list, with
//! filters), `/api/trace/{id}` (one trace's spans in display order) and `/api/services` (the
//! service map from the span metrics). Spans come from the [`store::TraceStore`], which the
//! agent fills with the spans it exports (after sampling and the privacy policy), so the page
//! shows what leaves the node and nothing more. Read-only: there is no route that changes
//! anything. Every answer forbids the page to load or contact anything but the agent
//! (`Content-Security-Policy`), so it works on an air-gapped node and leaks nothing.

pub mod map;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use serde_json::{Value as Json, json};

use crate::{
    http_serve::{Request, Response, Server},
    span::{Span, SpanKind, StatusCode, TraceId, Value},
};
use map::{MapReader, Red};
use store::{Filter, TraceStore};

const INDEX_HTML: &str = include_str!("assets/index.html");
const UI_JS: &str = include_str!("assets/ui.js");
const UI_CSS: &str = include_str!("assets/ui.css");

/// Nothing but the agent itself: no CDN, font, image or collector.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Trace list rows sent at most.
const MAX_ROWS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "cannot listen on {addr} for the trace view: {source}; choose another address with --ui ADDR \
         ([ui] address) or free the port"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the page's requests are answered from.
#[derive(Clone)]
pub struct UiState {
    pub store: Arc<TraceStore>,
    /// The service map's source; `None` when span metrics are off.
    pub map: Option<Arc<MapReader>>,
    /// Bound to a loopback address: answer only requests whose `Host` names loopback (an IP
    /// literal or `localhost`), so a web page elsewhere cannot read the traces through a DNS
    /// name rebound to 127.0.0.1.
    pub loopback: bool,
}

/// A running trace view; stops when dropped.
pub struct UiServer(Server);

impl UiServer {
    pub async fn bind(addr: SocketAddr, state: UiState) -> Result<Self, UiError> {
        Server::bind(addr, Arc::new(move |r: &Request<'_>| route(r, &state)))
            .await
            .map(Self)
            .map_err(|source| UiError::Bind { addr, source })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn shutdown(self) {
        self.0.shutdown().await
    }
}

fn secure(r: Response) -> Response {
    r.with_header("Content-Security-Policy", CSP)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Cache-Control", "no-store")
        .with_header("Referrer-Policy", "no-referrer")
}

fn json_response(status: &'static str, body: &Json) -> Response {
    Response::new(status, "application/json", body.to_string())
}

/// Whether a `Host` header names a loopback address or `localhost` (with any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn route(r: &Request<'_>, state: &UiState) -> Response {
    if state.loopback && !r.header("host").is_some_and(loopback_host) {
        return secure(Response::text(
            "403 Forbidden",
            "the trace view answers requests for localhost or a loopback address only\n",
        ));
    }
    if r.method != "GET" && r.method != "HEAD" {
        return secure(
            Response::text(
                "405 Method Not Allowed",
                "the trace view is read-only: use GET\n",
            )
            .with_header("Allow", "GET, HEAD"),
        );
    }
    let path = r.path();
    let query = r.target.split_once('?').map_or("", |(_, q)| q);
    secure(match path {
        "/" | "/index.html" => Response::new("200 OK", "text/html; charset=utf-8", INDEX_HTML),
        "/ui.js" => Response::new("200 OK", "text/javascript; charset=utf-8", UI_JS),
        "/ui.css" => Response::new("200 OK", "text/css; charset=utf-8", UI_CSS),
        "/api/traces" => json_response("200 OK", &traces_json(&state.store, &parse_filter(query))),
        "/api/services" => json_response("200 OK", &services_json(state.map.as_deref())),
        _ => match path.strip_prefix("/api/trace/").map(parse_trace_id) {
            Some(Some(id)) => match trace_json(&state.store, &id) {
                Some(body) => json_response("200 OK", &body),
                None => json_response(
                    "404 Not Found",
                    &json!({"error": format!("trace {id} is not in the view (never seen, or evicted)")}),
                ),
            },
            Some(None) => json_response(
                "400 Bad Request",
                &json!({"error": "a trace id is 32 hexadecimal digits"}),
            ),
            None => Response::text("404 Not Found", "not found\n"),
        },
    })
}

fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TraceId(id))
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a byte).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_filter(query: &str) -> Filter {
    let mut f = Filter {
        limit: 200,
        ..Filter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "service" => f.service = v,
            "operation" => f.operation = v,
            "status" => {
                f.error = match v.as_str() {
                    "error" => Some(true),
                    "ok" => Some(false),
                    _ => None,
                }
            }
            "min_ms" => {
                f.min_duration_ns = v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|ms| ms.is_finite() && *ms > 0.0)
                    .map_or(0, |ms| (ms * 1e6) as u64)
            }
            "q" => f.text = v,
            "limit" => f.limit = v.trim().parse().unwrap_or(200),
            _ => {}
        }
    }
    f.limit = f.limit.clamp(1, MAX_ROWS);
    f
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Internal => "internal",
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Double(d) => d.to_string(),
        Value::StrArray(a) => a.join(", "),
    }
}

fn traces_json(store: &TraceStore, filter: &Filter) -> Json {
    let listing = store.list(filter);
    let stats = store.stats();
    let rows: Vec<Json> = listing
        .traces
        .iter()
        .map(|t| {
            json!({
                "trace_id": t.trace_id.to_string(),
                "root_service": t.root_service,
                "root_name": t.root_name,
                "root_kind": kind_name(t.root_kind),
                "start_unix_ms": ms(t.start_unix_nanos),
                "duration_ms": ms(t.duration_ns),
                "spans": t.spans,
                "services": t.services,
                "error": t.error,
            })
        })
        .collect();
    json!({
        "traces": rows,
        "matched": listing.matched,
        "stored": stats.traces,
        "capacity": store.limits().traces,
        "evicted": stats.evicted,
        "services": listing.services,
        "operations": listing.operations,
    })
}

fn span_json(
    span: &Span,
    trace_start: u64,
    depth: usize,
    orphan: bool,
    children: &[&Span],
) -> Json {
    let pairs = |kvs: &[crate::span::KeyValue]| -> Vec<Json> {
        kvs.iter()
            .map(|kv| json!([kv.key, value_text(&kv.value)]))
            .collect()
    };
    let how = span
        .attr("sonde.trace.link")
        .map(value_text)
        .unwrap_or_default();
    // How this span joined its trace (the parent it was given, and by what rule), and the
    // spans it caused.
    let mut links: Vec<Json> = span
        .parent_span_id
        .iter()
        .map(|p| {
            json!({"trace_id": span.trace_id.to_string(), "span_id": p.to_string(),
                   "relation": "parent", "how": how})
        })
        .collect();
    links.extend(children.iter().map(|c| {
        json!({"trace_id": c.trace_id.to_string(), "span_id": c.span_id.to_string(),
               "relation": "child", "how": ""})
    }));
    json!({
        "span_id": span.span_id.to_string(),
        "parent_span_id": span.parent_span_id.map(|p| p.to_string()),
        "depth": depth,
        "orphan": orphan,
        "name": span.name,
        "kind": kind_name(span.kind),
        "service": store::service_of(span),
        "offset_ms": ms(span.start_unix_nanos.saturating_sub(trace_start)),
        "duration_ms": ms(span.duration_nanos()),
        "status": match span.status.code {
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
            StatusCode::Unset => "unset",
        },
        "status_message": span.status.message,
        "attributes": pairs(&span.attributes),
        "resource": pairs(&span.resource.attributes),
        "links": links,
    })
}

fn trace_json(store: &TraceStore, id: &TraceId) -> Option<Json> {
    let placed = store.trace(id)?;
    let start = placed
        .iter()
        .map(|p| p.span.start_unix_nanos)
        .min()
        .unwrap_or(0);
    let end = placed
        .iter()
        .map(|p| p.span.end_unix_nanos)
        .max()
        .unwrap_or(start);
    let mut children: std::collections::HashMap<_, Vec<&Span>> = Default::default();
    for p in &placed {
        if let Some(parent) = p.span.parent_span_id {
            children.entry(parent).or_default().push(&p.span);
        }
    }
    let spans: Vec<Json> = placed
        .iter()
        .map(|p| {
            let c = children
                .get(&p.span.span_id)
                .map_or(&[][..], |v| v.as_slice());
            span_json(&p.span, start, p.depth, p.orphan, c)
        })
        .collect();
    Some(json!({
        "trace_id": id.to_string(),
        "start_unix_ms": ms(start),
        "duration_ms": ms(end.saturating_sub(start)),
        "spans": spans,
    }))
}

fn red_json(r: &Red) -> serde_json::Map<String, Json> {
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(r.requests));
    m.insert("errors".into(), json!(r.errors));
    m.insert("rate_per_s".into(), json!(r.rate_per_s));
    m.insert("error_rate".into(), json!(r.error_rate));
    m.insert("p50_ms".into(), json!(r.p50_ms));
    m.insert("p99_ms".into(), json!(r.p99_ms));
    m
}

fn services_json(map: Option<&MapReader>) -> Json {
    let Some(reader) = map else {
        return json!({"span_metrics": false, "window_s": 0.0, "edges": [], "services": []});
    };
    let m = reader.read();
    let edges: Vec<Json> = m
        .edges
        .iter()
        .map(|e| {
            let mut o = red_json(&e.red);
            o.insert("client".into(), json!(e.client));
            o.insert("server".into(), json!(e.server));
            Json::Object(o)
        })
        .collect();
    let services: Vec<Json> = m
        .services
        .iter()
        .map(|s| {
            let routes: Vec<Json> = s
                .routes
                .iter()
                .map(|op| {
                    let mut o = red_json(&op.red);
                    o.insert("route".into(), json!(op.route));
                    o.insert("kind".into(), json!(op.kind));
                    Json::Object(o)
                })
                .collect();
            json!({"name": s.name, "routes": routes})
        })
        .collect();
    json!({"span_metrics": true, "window_s": m.window_s, "edges": edges, "services": services})
}

#[cfg(test)]
mod tests;
