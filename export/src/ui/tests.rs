use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::*;
use crate::{
    metrics::{Instrument, Point, SpanMetrics},
    span::{KeyValue, Resource, SpanId, Status},
};

fn span(id: u8, parent: Option<u8>, service: &str, start: u64, end: u64) -> Span {
    Span {
        trace_id: TraceId([0xab; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: String::new(),
        flags: 1,
        name: format!("GET /p{id}"),
        kind: if parent.is_none() {
            SpanKind::Client
        } else {
            SpanKind::Server
        },
        start_unix_nanos: start,
        end_unix_nanos: end,
        attributes: vec![
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("sonde.trace.link", "header"),
        ],
        status: Status::default(),
        resource: Arc::new(Resource {
            attributes: vec![
                KeyValue::new("service.name", service),
                KeyValue::new("process.pid", 42i64),
            ],
        }),
    }
}

fn state() -> UiState {
    let store = Arc::new(TraceStore::new(store::Limits::default()));
    store.add(span(2, Some(1), "api", 1_000_500_000, 1_002_500_000));
    store.add(span(1, None, "curl", 1_000_000_000, 1_003_000_000));
    let metrics = Arc::new(SpanMetrics::new(0));
    metrics.record(
        &Point {
            instrument: Instrument::ServiceGraph,
            attributes: vec![
                ("client", "curl".into()),
                ("server", "api".into()),
                ("failed", "false".into()),
            ],
            value: 0.003,
        },
        &Arc::new(Resource::default()),
        None,
    );
    UiState {
        store,
        map: Some(Arc::new(MapReader::new(metrics))),
        loopback: true,
    }
}

fn get(state: &UiState, target: &str, host: &str) -> (String, Response) {
    let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let r = route(
        &Request {
            method: "GET",
            target,
            head: &head,
            peer: "127.0.0.1:5000".parse().unwrap(),
        },
        state,
    );
    (String::from_utf8(r.body.clone()).unwrap(), r)
}

fn json_of(state: &UiState, target: &str) -> Json {
    let (body, r) = get(state, target, "127.0.0.1:9465");
    assert_eq!(r.status, "200 OK", "{target}: {body}");
    assert_eq!(r.content_type, "application/json");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_trace_list_and_one_trace_as_the_page_reads_them() {
    let s = state();
    let list = json_of(&s, "/api/traces");
    let row = &list["traces"][0];
    assert_eq!(row["trace_id"], "abababababababababababababababab");
    assert_eq!(row["root_service"], "curl");
    assert_eq!(row["root_kind"], "client");
    assert_eq!(row["spans"], 2);
    assert_eq!(row["duration_ms"], 3.0);
    assert_eq!(row["start_unix_ms"], 1000.0);
    assert_eq!(row["services"], json!(["curl", "api"]));
    assert_eq!(row["error"], false);
    assert_eq!(
        (&list["stored"], &list["capacity"], &list["evicted"]),
        (&json!(1), &json!(1000), &json!(0))
    );
    let t = json_of(&s, "/api/trace/abababababababababababababababab");
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["span_id"], "0101010101010101");
    assert_eq!(spans[0]["parent_span_id"], Json::Null);
    assert_eq!(spans[1]["parent_span_id"], "0101010101010101");
    assert_eq!(
        (
            &spans[1]["depth"],
            &spans[1]["offset_ms"],
            &spans[1]["duration_ms"]
        ),
        (&json!(1), &json!(0.5), &json!(2.0))
    );
    assert_eq!(spans[1]["service"], "api");
    assert_eq!(spans[1]["status"], "unset");
    assert!(
        spans[1]["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!(["http.response.status_code", "200"]))
    );
    assert!(
        spans[1]["resource"]
            .as_array()
            .unwrap()
            .contains(&json!(["process.pid", "42"]))
    );
    assert_eq!(
        spans[1]["links"],
        json!([{"trace_id": "abababababababababababababababab", "span_id": "0101010101010101",
                "relation": "parent", "how": "header"}])
    );
    assert_eq!(spans[0]["links"][0]["relation"], "child");
}

#[test]
fn filters_come_from_the_query_string() {
    let f = parse_filter(
        "service=my+svc&operation=GET%20%2Fusers&status=error&min_ms=2.5&q=%E2%9C%93&limit=9999",
    );
    assert_eq!(f.service, "my svc");
    assert_eq!(f.operation, "GET /users");
    assert_eq!(f.error, Some(true));
    assert_eq!(f.min_duration_ns, 2_500_000);
    assert_eq!(f.text, "✓");
    assert_eq!(f.limit, MAX_ROWS);
    let f = parse_filter("status=any&min_ms=-1&q=%zz%4");
    assert_eq!((f.error, f.min_duration_ns), (None, 0));
    assert_eq!(f.text, "%zz%4");
    let s = state();
    assert_eq!(
        json_of(&s, "/api/traces?service=nobody")["traces"],
        json!([])
    );
    assert_eq!(json_of(&s, "/api/traces?min_ms=2.9")["matched"], 1);
    assert_eq!(json_of(&s, "/api/traces?min_ms=3.1")["matched"], 0);
}

#[test]
fn the_service_map_from_span_metrics_and_without_them() {
    let s = state();
    let m = json_of(&s, "/api/services");
    assert_eq!(m["span_metrics"], true);
    assert_eq!(m["edges"][0]["client"], "curl");
    assert_eq!(m["edges"][0]["server"], "api");
    assert_eq!(m["edges"][0]["requests"], 1);
    let off = UiState {
        map: None,
        ..state()
    };
    assert_eq!(
        json_of(&off, "/api/services"),
        json!({"span_metrics": false, "window_s": 0.0, "edges": [], "services": []})
    );
}

#[test]
fn every_answer_forbids_outside_resources_and_only_loopback_hosts_are_answered() {
    let s = state();
    for target in [
        "/",
        "/ui.js",
        "/ui.css",
        "/api/traces",
        "/api/services",
        "/api/trace/00",
        "/nope",
    ] {
        let (_, r) = get(&s, target, "localhost:9465");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "Content-Security-Policy" && v.contains("default-src 'self'")),
            "{target}"
        );
    }
    assert_eq!(get(&s, "/", "127.0.0.1:9465").1.status, "200 OK");
    assert_eq!(get(&s, "/", "[::1]:9465").1.status, "200 OK");
    assert_eq!(get(&s, "/", "LOCALHOST").1.status, "200 OK");
    // A name that only resolves to loopback (DNS rebinding) is refused.
    let (body, r) = get(&s, "/api/traces", "evil.example:9465");
    assert_eq!(r.status, "403 Forbidden", "{body}");
    let public = UiState {
        loopback: false,
        ..state()
    };
    assert_eq!(get(&public, "/", "node-1.example:9465").1.status, "200 OK");
    let (body, r) = get(&s, "/api/trace/0123", "localhost");
    assert_eq!(r.status, "400 Bad Request", "{body}");
    let (body, r) = get(
        &s,
        "/api/trace/0123456789abcdef0123456789abcdef",
        "localhost",
    );
    assert_eq!(r.status, "404 Not Found");
    assert!(body.contains("evicted"), "{body}");
    let post = route(
        &Request {
            method: "POST",
            target: "/api/traces",
            head: "POST /api/traces HTTP/1.1\r\nHost: localhost\r\n\r\n",
            peer: "127.0.0.1:5000".parse().unwrap(),
        },
        &s,
    );
    assert_eq!(post.status, "405 Method Not Allowed");
}

#[tokio::test]
async fn serves_the_page_over_tcp() {
    let server = UiServer::bind("127.0.0.1:0".parse().unwrap(), state())
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(out.contains("ui.js"), "the page loads its script");
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn the_page_refers_to_nothing_outside_the_agent() {
    for (name, text) in [
        ("index.html", INDEX_HTML),
        ("ui.js", UI_JS),
        ("ui.css", UI_CSS),
    ] {
        // The SVG namespace is a name, not a request.
        let text = text.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "//cdn", "@import", "url(http"] {
            assert!(
                !text.contains(needle),
                "{name} refers to {needle}: the page must work air-gapped"
            );
        }
    }
}
