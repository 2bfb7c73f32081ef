//! Privileged end-to-end tests of trace context: `traceparent` read, linked inside processes and
//! injected on the wire, through chains of real, uninstrumented services.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sonde_model::{Span, SpanKind};
use sonde_proto::Counter;
use sonde_tests::{
    Lines, Reaper, TestCgroup, attr_int, attr_str, free_port, peers_dir, peers_python, python,
    sonde_bin, unhex,
};

/// Starts `program script PORT extra...` in the cgroup and waits for "ready PORT".
fn start(cg: &mut TestCgroup, program: &str, script: &str, extra: &[String]) -> u16 {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    cg.start_peer(program, script, &extra)
}

fn py_hop(cg: &mut TestCgroup, next: Option<u16>) -> u16 {
    let extra: Vec<String> = next.map(|n| format!("127.0.0.1:{n}")).into_iter().collect();
    start(cg, &python(), "chain_server.py", &extra)
}

/// The traceparent values each hop received, from the chain's JSON answer, outermost first.
fn received(doc: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = Some(doc);
    while let Some(d) = cur {
        out.push(
            d["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|kv| kv[0].as_str().unwrap().eq_ignore_ascii_case("traceparent"))
                .map(|kv| kv[1].as_str().unwrap().to_owned())
                .collect(),
        );
        cur = d.get("next");
    }
    out
}

fn curl_json(cg: &TestCgroup, url: &str) -> Value {
    let mut cmd = cg.command("curl");
    cmd.args(["-s", url]);
    serde_json::from_slice(&cg.run(cmd)).expect("json answer")
}

fn traceparent(s: &Span) -> String {
    format!("00-{}-{}-01", s.trace_id, s.span_id)
}

fn describe(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{:?} {} port={:?} trace={} span={} parent={:?} link={:?} inject={:?}",
                s.kind,
                s.resource.service_name().unwrap_or(""),
                s.attr("server.port"),
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.attr("sonde.trace.link"),
                s.attr("sonde.trace.inject"),
            )
        })
        .collect()
}

/// The one span of `kind` whose `server.port` is `port`.
fn hop(spans: &[Span], kind: SpanKind, port: u16) -> &Span {
    let v: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == kind && attr_int(s, "server.port") == i64::from(port))
        .collect();
    assert_eq!(v.len(), 1, "{kind:?} :{port} in {:#?}", describe(spans));
    v[0]
}

#[test]
fn a_chain_of_three_python_services_is_one_trace_with_the_exact_tree() {
    let mut cg = TestCgroup::new("ctx-chain");
    let c = py_hop(&mut cg, None);
    let b = py_hop(&mut cg, Some(c));
    let a = py_hop(&mut cg, Some(b));
    let rec = cg.capture_spans();
    let doc = curl_json(&cg, &format!("http://127.0.0.1:{a}/orders/42"));
    let (spans, stats, summary) = rec.finish();
    assert_eq!(spans.len(), 6, "{:#?}", describe(&spans));

    let curl = hop(&spans, SpanKind::Client, a);
    let a_srv = hop(&spans, SpanKind::Server, a);
    let a_cli = hop(&spans, SpanKind::Client, b);
    let b_srv = hop(&spans, SpanKind::Server, b);
    let b_cli = hop(&spans, SpanKind::Client, c);
    let c_srv = hop(&spans, SpanKind::Server, c);
    for s in [a_srv, a_cli, b_srv, b_cli, c_srv] {
        assert_eq!(s.trace_id, curl.trace_id, "{:#?}", describe(&spans));
    }
    // The exact tree.
    assert_eq!(curl.parent_span_id, None);
    assert_eq!(a_srv.parent_span_id, Some(curl.span_id));
    assert_eq!(a_cli.parent_span_id, Some(a_srv.span_id));
    assert_eq!(b_srv.parent_span_id, Some(a_cli.span_id));
    assert_eq!(b_cli.parent_span_id, Some(b_srv.span_id));
    assert_eq!(c_srv.parent_span_id, Some(b_cli.span_id));
    // What went on the wire is exactly the client spans' ids, one header per request.
    assert_eq!(
        received(&doc),
        vec![
            vec![traceparent(curl)],
            vec![traceparent(a_cli)],
            vec![traceparent(b_cli)]
        ]
    );
    for s in [curl, a_cli, b_cli] {
        assert_eq!(attr_str(s, "sonde.trace.inject"), "injected");
    }
    assert_eq!(attr_str(a_srv, "sonde.trace.link"), "header");
    assert_eq!(attr_str(a_cli, "sonde.trace.link"), "linked");
    assert_eq!(stats.trace_links.get("linked"), Some(&2));
    let k = &summary.kernel;
    assert_eq!(k.get(Counter::Injected), 3);
    assert_eq!(k.get(Counter::CtxServer), 3);
    assert_eq!(k.get(Counter::CtxFromHeader), 3);
    assert_eq!(k.get(Counter::CtxLinked), 2);
    assert_eq!(k.get(Counter::CtxAmbiguous), 0);
    assert_eq!(k.get(Counter::TailCallFailed), 0);
}

/// nginx answering with the traceparent it received, as JSON like the chain hops.
fn start_nginx_leaf(cg: &mut TestCgroup) -> (u16, std::path::PathBuf) {
    cg.start_nginx("", "", |_| {
        "default_type application/json;\n\
         location / { return 200 '{\"path\":\"$uri\",\"headers\":[[\"traceparent\",\"$http_traceparent\"]]}'; }"
            .to_owned()
    })
}

#[test]
fn python_node_and_nginx_form_one_trace() {
    let mut cg = TestCgroup::new("ctx-mixed");
    let (ngx, dir) = start_nginx_leaf(&mut cg);
    let node = start(
        &mut cg,
        "node",
        "chain_node.js",
        &[format!("127.0.0.1:{ngx}")],
    );
    let a = py_hop(&mut cg, Some(node));
    let rec = cg.capture_spans();
    let doc = curl_json(&cg, &format!("http://127.0.0.1:{a}/mixed"));
    let (spans, _, _) = rec.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let curl = hop(&spans, SpanKind::Client, a);
    let a_srv = hop(&spans, SpanKind::Server, a);
    let a_cli = hop(&spans, SpanKind::Client, node);
    let n_srv = hop(&spans, SpanKind::Server, node);
    let n_cli = hop(&spans, SpanKind::Client, ngx);
    let x_srv = hop(&spans, SpanKind::Server, ngx);
    assert!(n_srv.resource.service_name().unwrap().starts_with("node"));
    assert!(x_srv.resource.service_name().unwrap().starts_with("nginx"));
    for (child, parent) in [
        (a_srv, curl),
        (a_cli, a_srv),
        (n_srv, a_cli),
        (n_cli, n_srv),
        (x_srv, n_cli),
    ] {
        assert_eq!(
            child.trace_id,
            curl.trace_id,
            "{:#?} {doc}",
            describe(&spans)
        );
        assert_eq!(
            child.parent_span_id,
            Some(parent.span_id),
            "{:#?} {doc}",
            describe(&spans)
        );
    }
    assert_eq!(
        received(&doc),
        vec![
            vec![traceparent(curl)],
            vec![traceparent(a_cli)],
            vec![traceparent(n_cli)]
        ]
    );
}

/// The spans an OTLP sink of the export tests recorded (JSON records).
fn sink_spans(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .flat_map(|l| {
            let rec: Value = serde_json::from_str(l).unwrap();
            let rss = rec["request"]["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            rss.into_iter()
                .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
                .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn an_sdk_instrumented_service_joins_the_same_trace_without_a_second_header() {
    let mut cg = TestCgroup::new("ctx-sdk");
    let record = std::env::temp_dir().join(format!("sonde-ctx-sdk-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let sink_port = free_port();
    let mut sink = Command::new(peers_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../export/tests/peers/otlp_grpc_sink.py"))
        .args(["--port", &sink_port.to_string(), "--record"])
        .arg(&record)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink");
    let stdout = sink.stdout.take().unwrap();
    let mut sink = Reaper(sink);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.starts_with("LISTENING"), "{line}");
    let c = py_hop(&mut cg, None);
    let b = start(
        &mut cg,
        &peers_python(),
        "chain_sdk.py",
        &[
            format!("127.0.0.1:{c}"),
            format!("http://127.0.0.1:{sink_port}"),
        ],
    );
    let a = py_hop(&mut cg, Some(b));
    let rec = cg.capture_spans();
    let doc = curl_json(&cg, &format!("http://127.0.0.1:{a}/sdk"));
    std::thread::sleep(Duration::from_millis(500));
    let (spans, _, _) = rec.finish();
    let _ = sink.0.kill();
    let _ = sink.0.wait();
    let sdk = sink_spans(&record);
    let _ = std::fs::remove_file(&record);

    let curl = hop(&spans, SpanKind::Client, a);
    let a_cli = hop(&spans, SpanKind::Client, b);
    let trace = curl.trace_id.to_string();
    // The SDK's two spans are in sonde's trace, its server span a child of sonde's client span.
    assert_eq!(sdk.len(), 2, "{sdk:#?}");
    let sdk_server = sdk
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER")
        .unwrap();
    let sdk_client = sdk
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap();
    for s in [sdk_server, sdk_client] {
        assert_eq!(s["traceId"].as_str().unwrap(), trace);
    }
    assert_eq!(
        sdk_server["parentSpanId"].as_str().unwrap(),
        a_cli.span_id.to_string()
    );
    // Every hop got exactly one traceparent: the SDK's own on the last hop.
    let got = received(&doc);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|h| h.len() == 1), "{got:?}");
    assert_eq!(
        got[2][0],
        format!("00-{trace}-{}-01", sdk_client["spanId"].as_str().unwrap())
    );
    // sonde saw the SDK's outgoing request carry a traceparent and adopted it.
    let b_cli = hop(&spans, SpanKind::Client, c);
    assert_eq!(
        attr_str(b_cli, "sonde.trace.inject"),
        "existing_traceparent"
    );
    assert_eq!(b_cli.trace_id.to_string(), trace);
    let c_srv = hop(&spans, SpanKind::Server, c);
    assert_eq!(
        c_srv.parent_span_id.map(|p| p.to_string()).as_deref(),
        sdk_client["spanId"].as_str()
    );
}

#[test]
fn injection_only_where_it_is_sure_and_byte_exact_otherwise() {
    let mut cg = TestCgroup::new("ctx-safety");
    let port = start(&mut cg, &python(), "echo_server.py", &["127.0.0.1".into()]);
    let rec = cg.capture_spans();
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("inject_cases.py"))
        .args(["127.0.0.1", &port.to_string()]);
    let out: BTreeMap<String, String> = serde_json::from_slice(&cg.run(cmd)).unwrap();
    let (_, _, summary) = rec.finish();
    let got = |case: &str| unhex(&out[case]);
    let tp_count = |b: &[u8]| {
        b.windows(12)
            .filter(|w| w.eq_ignore_ascii_case(b"traceparent:"))
            .count()
    };

    // The plain request: one header, right after the request line, well formed.
    let text = String::from_utf8(got("plain")).unwrap();
    let (line, rest) = text.split_once("\r\n").unwrap();
    assert_eq!(line, "GET /plain HTTP/1.1");
    assert!(rest.starts_with("traceparent: 00-"), "{text}");
    let value = &rest[13..68];
    assert!(
        sonde::context::parse_traceparent(value).is_some(),
        "{value}"
    );
    assert_eq!(&rest[68..], "\r\nHost: x\r\n\r\n");

    // Everything else arrives exactly as sent (pipelined: only the first request changes).
    assert_eq!(
        got("split"),
        b"GET /split HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    );
    let long = got("long_line");
    assert_eq!(tp_count(&long), 0);
    assert!(long.starts_with(b"GET /aaaa") && long.ends_with(b" HTTP/1.1\r\nHost: x\r\n\r\n"));
    let existing = got("existing");
    assert_eq!(tp_count(&existing), 1);
    assert!(
        existing
            .windows(32)
            .any(|w| w == b"0af7651916cd43dd8448eb211c80319c")
    );
    let pipelined = String::from_utf8(got("pipelined")).unwrap();
    assert_eq!(tp_count(pipelined.as_bytes()), 1);
    assert!(
        pipelined.starts_with("GET /p1 HTTP/1.1\r\ntraceparent: ")
            && pipelined.ends_with("\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"),
        "{pipelined}"
    );
    let body = String::from_utf8(got("lookalike_body")).unwrap();
    assert_eq!(tp_count(body.as_bytes()), 1, "only the POST itself: {body}");
    assert!(
        body.ends_with("\r\n\r\nGET /not-a-request HTTP/1.1\r\nHost: y\r\n\r\n"),
        "{body}"
    );
    let binary = got("binary");
    let mut expected = b"GET \x00\x01\x02".to_vec();
    for _ in 0..4 {
        expected.extend(0u8..=255);
    }
    assert_eq!(binary, expected);

    let k = &summary.kernel;
    // plain, pipelined (its first request) and the POST.
    assert_eq!(k.get(Counter::Injected), 3, "{k:?}");
    // split, long line, existing and binary are skipped, each counted.
    assert!(k.get(Counter::InjectSkipped) >= 4, "{k:?}");
}

#[test]
fn traffic_flows_unmodified_after_sonde_is_killed() {
    let mut cg = TestCgroup::new("ctx-kill");
    let server = py_hop(&mut cg, None);
    let mut sonde = Command::new(sonde_bin())
        .args(["run", "--cgroup"])
        .arg(&cg.path)
        .args(["--output", "none", "--metrics-address", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(sonde.stderr.take().unwrap());
    let mut sonde = Reaper(sonde);
    let mut line = String::new();
    while !line.contains("tracing") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "sonde exited"
        );
    }
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("keepalive_client.py"))
        .args(["127.0.0.1", &server.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    let mut lines = Lines::of(child);
    let tps = |l: &str, tag: &str| -> Vec<String> {
        serde_json::from_str(l.strip_prefix(tag).unwrap().trim()).unwrap()
    };
    let one = lines.next_line();
    assert_eq!(
        tps(&one, "one").len(),
        1,
        "injected while sonde runs: {one}"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(sonde.0.id() as i32, libc::SIGKILL) };
    sonde.0.wait().unwrap();
    lines.send("go");
    let two = lines.next_line();
    let three = lines.next_line();
    assert_eq!(
        tps(&two, "two"),
        Vec::<String>::new(),
        "same connection: {two}"
    );
    assert_eq!(
        tps(&three, "three"),
        Vec::<String>::new(),
        "new connection: {three}"
    );
}

#[test]
fn fifty_concurrent_clients_through_a_thread_per_request_chain() {
    let mut cg = TestCgroup::new("ctx-load");
    let c = py_hop(&mut cg, None);
    let b = py_hop(&mut cg, Some(c));
    let a = py_hop(&mut cg, Some(b));
    // The load generator is not traced: A's server spans are the roots. Every request has a
    // path of its own (`/chain/ID`), which each hop forwards to the next: the spans of one
    // request carry its id, so a child under another request's span is caught by id.
    let load = TestCgroup::new("ctx-load-client");
    let rec = cg.capture_spans();
    let n = 1000;
    let mut cmd = load.command(&python());
    cmd.arg(peers_dir().join("load_ids.py")).args([
        "127.0.0.1",
        &a.to_string(),
        "/chain",
        &n.to_string(),
        "50",
    ]);
    let out = String::from_utf8(load.run(cmd)).unwrap();
    assert_eq!(out.trim(), format!("ok {n}"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let (spans, _, summary) = rec.finish();

    // The request a span belongs to: the id in its path (server spans) or URL (client spans).
    let request_id = |s: &Span| -> u32 {
        let url = match s.attr("url.path").or_else(|| s.attr("url.full")) {
            Some(sonde_model::Value::Str(u)) => u.as_str(),
            _ => "",
        };
        url.rsplit_once("/chain/")
            .and_then(|(_, id)| id.parse().ok())
            .unwrap_or_else(|| panic!("no request id in {s:#?}"))
    };
    let mut per_request: BTreeMap<u32, usize> = BTreeMap::new();
    for s in &spans {
        *per_request.entry(request_id(s)).or_default() += 1;
    }
    assert_eq!(
        per_request.len(),
        n,
        "every request id appears in the spans, and no other"
    );
    let by_id: BTreeMap<_, _> = spans.iter().map(|s| (s.span_id, s)).collect();
    let kind_port = |s: &Span| (s.kind, attr_int(s, "server.port") as u16);
    let expected_parent = |s: &Span| match kind_port(s) {
        (SpanKind::Client, p) if p == b => Some((SpanKind::Server, a)),
        (SpanKind::Server, p) if p == b => Some((SpanKind::Client, b)),
        (SpanKind::Client, p) if p == c => Some((SpanKind::Server, b)),
        (SpanKind::Server, p) if p == c => Some((SpanKind::Client, c)),
        _ => None,
    };
    // Every parent link is structurally right: never a wrong parent.
    let mut children: BTreeMap<_, usize> = BTreeMap::new();
    for s in &spans {
        if let Some(p) = s.parent_span_id {
            let parent = by_id
                .get(&p)
                .unwrap_or_else(|| panic!("dangling parent of {s:#?}"));
            assert_eq!(parent.trace_id, s.trace_id);
            assert_eq!(
                Some(kind_port(parent)),
                expected_parent(s),
                "mislinked: {s:#?} -> {parent:#?}"
            );
            assert_eq!(
                request_id(parent),
                request_id(s),
                "mislinked to another request: {s:#?} -> {parent:#?}"
            );
            *children.entry(p).or_default() += 1;
        }
    }
    assert!(
        children.values().all(|&n| n == 1),
        "one child per span in a chain"
    );
    // Complete traces: A server -> A client -> B server -> B client -> C server.
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| kind_port(s) == (SpanKind::Server, a))
        .collect();
    assert_eq!(roots.len(), n, "one server span per request");
    let traces: BTreeMap<_, Vec<&Span>> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.trace_id).or_default().push(s);
        m
    });
    let complete = roots
        .iter()
        .filter(|r| {
            let t = &traces[&r.trace_id];
            let kinds: BTreeSet<_> = t.iter().map(|s| kind_port(s)).collect();
            t.len() == 5 && kinds.len() == 5
        })
        .count();
    let k = &summary.kernel;
    let ambiguous = spans
        .iter()
        .filter(|s| attr_str(s, "sonde.trace.link") == "ambiguous")
        .count();
    eprintln!(
        "complete traces {complete}/{n}; spans left unlinked as ambiguous {ambiguous}; kernel \
         ambiguous {}, desync {}",
        k.get(Counter::CtxAmbiguous),
        k.get(Counter::HttpDesync)
    );
    assert!(
        complete as f64 >= 0.99 * n as f64,
        "only {complete} of {n} traces complete; {k:?}"
    );
}
