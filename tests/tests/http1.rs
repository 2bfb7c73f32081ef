//! Privileged end-to-end tests of HTTP/1 spans: real kernel programs, real servers (Python,
//! nginx) and clients (curl, Python, hey), spans asserted field by field.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use sonde_model::{Span, SpanKind, StatusCode, Value};
use sonde_proto::Counter;
use sonde_tests::{TestCgroup, attr_int, attr_str, free_port, python, wait_for_port};

fn start_python(cg: &mut TestCgroup, extra: &[&str]) -> u16 {
    let args: Vec<&str> = std::iter::once("127.0.0.1")
        .chain(extra.iter().copied())
        .collect();
    cg.start_peer(&python(), "http_server.py", &args)
}

/// nginx on 127.0.0.1 with a temporary configuration: `/hello` from a `return`, `/file.txt`
/// from disk through sendfile, `/missing` a 404.
fn start_nginx(cg: &mut TestCgroup) -> (u16, PathBuf) {
    cg.start_nginx("", "sendfile on;", |dir| {
        std::fs::create_dir_all(dir.join("html")).unwrap();
        std::fs::write(dir.join("html/file.txt"), "x".repeat(20_000)).unwrap();
        format!(
            "root {}/html;\nlocation = /hello {{ return 200 \"hello from nginx\\n\"; }}",
            dir.display()
        )
    })
}

fn server_spans(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect()
}

fn client_spans(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect()
}

fn describe(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{:?} {} {:?} status={:?}",
                s.kind,
                s.name,
                s.attr("http.response.status_code"),
                s.status.code
            )
        })
        .collect()
}

#[test]
fn curl_and_python_server_give_a_server_and_a_client_span() {
    let mut cg = TestCgroup::new("h1-basic");
    let port = start_python(&mut cg, &[]);
    let rec = cg.capture_spans();
    let mut cmd = cg.command("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{time_total} %{local_port}",
        "-A",
        "sonde-test/1.0",
        &format!("http://127.0.0.1:{port}/hello?user=bob&page=2"),
    ]);
    let out = String::from_utf8(cg.run(cmd)).unwrap();
    let (total, local_port) = out.split_once(' ').unwrap();
    let curl_seconds: f64 = total.parse().unwrap();
    let client_port: i64 = local_port.parse().unwrap();
    let (spans, stats, summary) = rec.finish();

    let servers = server_spans(&spans);
    let clients = client_spans(&spans);
    assert_eq!(
        (servers.len(), clients.len()),
        (1, 1),
        "{:#?}",
        describe(&spans)
    );
    let (s, c) = (servers[0], clients[0]);

    assert_eq!(s.name, "GET /hello");
    assert_eq!(attr_str(s, "http.request.method"), "GET");
    assert_eq!(attr_str(s, "url.path"), "/hello");
    assert_eq!(attr_str(s, "url.query"), "user=REDACTED&page=REDACTED");
    assert_eq!(attr_str(s, "url.scheme"), "http");
    assert_eq!(attr_str(s, "http.route"), "/hello");
    assert_eq!(attr_int(s, "http.response.status_code"), 200);
    assert_eq!(attr_str(s, "server.address"), "127.0.0.1");
    assert_eq!(attr_int(s, "server.port"), i64::from(port));
    assert_eq!(attr_str(s, "client.address"), "127.0.0.1");
    assert_eq!(attr_int(s, "client.port"), client_port);
    assert_eq!(attr_int(s, "network.peer.port"), client_port);
    assert_eq!(attr_str(s, "network.protocol.version"), "1.1");
    assert_eq!(attr_str(s, "user_agent.original"), "sonde-test/1.0");
    assert_eq!(attr_int(s, "http.response.body.size"), 12);
    assert_eq!(s.status.code, StatusCode::Unset);
    assert!(s.resource.service_name().unwrap().starts_with("python"));
    match s.resource.get("process.command_line") {
        Some(Value::Str(cmdline)) => assert!(cmdline.contains("http_server.py"), "{cmdline}"),
        other => panic!("process.command_line: {other:?}"),
    }

    assert_eq!(c.name, "GET /hello");
    assert_eq!(
        attr_str(c, "url.full"),
        format!("http://127.0.0.1:{port}/hello?user=REDACTED&page=REDACTED")
    );
    assert_eq!(attr_int(c, "server.port"), i64::from(port));
    assert_eq!(attr_int(c, "network.peer.port"), i64::from(port));
    assert_eq!(attr_int(c, "http.response.status_code"), 200);
    assert_eq!(c.resource.service_name(), Some("curl"));

    // Timing: positive, the server's starts after the client's and is no longer, the client's
    // no longer than curl measured. (The server's end may follow the client's by a few µs:
    // on loopback the response is delivered, and read, before the server's write returns.)
    assert!(s.duration_nanos() > 0 && c.duration_nanos() > 0);
    assert!(c.start_unix_nanos <= s.start_unix_nanos, "{c:#?} {s:#?}");
    assert!(s.duration_nanos() <= c.duration_nanos(), "{s:#?} {c:#?}");
    assert!(
        c.duration_nanos() as f64 <= curl_seconds * 1e9 + 1e6,
        "{} {curl_seconds}",
        c.duration_nanos()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        now - s.start_unix_nanos < 60_000_000_000,
        "wall-clock mapping"
    );
    assert_eq!(stats.spans_created, 2);
    assert_eq!(summary.kernel.get(Counter::RingbufFull), 0);
}

#[test]
fn hundred_keep_alive_requests_give_hundred_spans() {
    let mut cg = TestCgroup::new("h1-keepalive");
    let port = start_python(&mut cg, &[]);
    let rec = cg.capture_spans();
    let urls: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "http://127.0.0.1:{port}/status/{}",
                if i % 10 == 0 { 404 } else { 200 }
            )
        })
        .collect();
    let mut cmd = cg.command("curl");
    cmd.arg("-s").arg("-o").arg("/dev/null").args(&urls);
    cg.run(cmd);
    let (spans, stats, _) = rec.finish();
    let servers = server_spans(&spans);
    assert_eq!(servers.len(), 100, "{:?}", stats);
    assert_eq!(client_spans(&spans).len(), 100);
    let by_code = servers.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(attr_int(s, "http.response.status_code"))
            .or_insert(0) += 1;
        m
    });
    assert_eq!(by_code, BTreeMap::from([(200, 90), (404, 10)]));
    // One connection for all of them.
    let ports: std::collections::BTreeSet<i64> =
        servers.iter().map(|s| attr_int(s, "client.port")).collect();
    assert_eq!(ports.len(), 1);
    assert!(stats.parse_errors.is_empty(), "{:?}", stats.parse_errors);
}

#[test]
fn status_codes_map_to_span_status() {
    let mut cg = TestCgroup::new("h1-status");
    let port = start_python(&mut cg, &[]);
    let rec = cg.capture_spans();
    for code in [404, 500] {
        let mut cmd = cg.command("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/status/{code}"),
        ]);
        cg.run(cmd);
    }
    let (spans, _, _) = rec.finish();
    let find = |kind: SpanKind, code: i64| {
        spans
            .iter()
            .find(|s| s.kind == kind && attr_int(s, "http.response.status_code") == code)
            .unwrap_or_else(|| panic!("{kind:?} {code}: {:#?}", describe(&spans)))
    };
    // Server: only 5xx is an error. Client: 4xx and 5xx are.
    assert_eq!(find(SpanKind::Server, 404).status.code, StatusCode::Unset);
    assert_eq!(find(SpanKind::Server, 500).status.code, StatusCode::Error);
    assert_eq!(attr_str(find(SpanKind::Server, 500), "error.type"), "500");
    assert_eq!(find(SpanKind::Client, 404).status.code, StatusCode::Error);
    assert_eq!(attr_str(find(SpanKind::Client, 404), "error.type"), "404");
    assert_eq!(find(SpanKind::Client, 500).status.code, StatusCode::Error);
}

#[test]
fn pipelined_and_chunked_and_http10() {
    let mut cg = TestCgroup::new("h1-pipeline");
    let port = start_python(&mut cg, &[]);
    let port10 = start_python(&mut cg, &["--http10"]);
    let rec = cg.capture_spans();
    // Three pipelined requests in one write, the last one chunked in response.
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'GET /hello HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET /status/201 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n'\n\
                   b'GET /chunked HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   d = s.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   data += d\n\
         assert data.count(b'HTTP/1.1 ') == 3, data\n\
         assert b'first,' in data and data.endswith(b'0\\r\\n\\r\\n'), data\n"
    );
    let mut cmd = cg.command(&python());
    cmd.args(["-c", &script]);
    cg.run(cmd);
    // HTTP/1.0: the response body ends when the server closes.
    let mut cmd = cg.command("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "--http1.0",
        &format!("http://127.0.0.1:{port10}/big?n=3000"),
    ]);
    cg.run(cmd);
    let (spans, stats, _) = rec.finish();
    let servers: Vec<_> = server_spans(&spans)
        .into_iter()
        .filter(|s| attr_int(s, "server.port") == i64::from(port))
        .collect();
    let names: Vec<(&str, i64)> = servers
        .iter()
        .map(|s| (s.name.as_str(), attr_int(s, "http.response.status_code")))
        .collect();
    assert_eq!(
        names,
        vec![
            ("GET /hello", 200),
            ("GET /status/{id}", 201),
            ("GET /chunked", 200)
        ],
        "{:#?}",
        describe(&spans)
    );
    assert_eq!(attr_int(servers[2], "http.response.body.size"), 18);
    let clients: Vec<_> = client_spans(&spans)
        .into_iter()
        .filter(|s| attr_int(s, "server.port") == i64::from(port))
        .collect();
    assert_eq!(clients.len(), 3, "{:#?}", describe(&spans));
    assert!(clients.iter().all(|c| c.status.code == StatusCode::Unset));

    let h10: Vec<_> = server_spans(&spans)
        .into_iter()
        .filter(|s| attr_int(s, "server.port") == i64::from(port10))
        .collect();
    assert_eq!(h10.len(), 1, "{:#?}", describe(&spans));
    assert_eq!(attr_str(h10[0], "network.protocol.version"), "1.0");
    assert_eq!(attr_int(h10[0], "http.response.body.size"), 3000);
    assert_eq!(h10[0].status.code, StatusCode::Unset);
    assert!(stats.parse_errors.is_empty(), "{:?}", stats.parse_errors);
}

#[test]
fn a_reset_mid_response_gives_error_spans_that_say_why() {
    let mut cg = TestCgroup::new("h1-reset");
    let port = start_python(&mut cg, &[]);
    let rec = cg.capture_spans();
    let mut cmd = cg.command("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/reset"),
    ]);
    // curl fails (connection reset / partial file): that is the point.
    let _ = cmd.status();
    let (spans, _, _) = rec.finish();
    for kind in [SpanKind::Server, SpanKind::Client] {
        let s = spans
            .iter()
            .find(|s| s.kind == kind && s.name == "GET /reset")
            .unwrap_or_else(|| panic!("{kind:?}: {:#?}", describe(&spans)));
        assert_eq!(s.status.code, StatusCode::Error, "{s:#?}");
        assert_eq!(
            attr_str(s, "sonde.http.incomplete"),
            "response_truncated",
            "{s:#?}"
        );
        assert_eq!(attr_int(s, "http.response.status_code"), 200);
    }
}

#[test]
fn nginx_spans_including_sendfile_bodies() {
    let mut cg = TestCgroup::new("h1-nginx");
    let (port, dir) = start_nginx(&mut cg);
    let rec = cg.capture_spans();
    let mut cmd = cg.command("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/hello"),
        &format!("http://127.0.0.1:{port}/file.txt"),
        &format!("http://127.0.0.1:{port}/missing"),
        &format!("http://127.0.0.1:{port}/hello"),
    ]);
    cg.run(cmd);
    let (spans, stats, _) = rec.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let servers: Vec<(String, i64)> = server_spans(&spans)
        .iter()
        .map(|s| (s.name.clone(), attr_int(s, "http.response.status_code")))
        .collect();
    assert_eq!(
        servers,
        vec![
            ("GET /hello".to_string(), 200),
            ("GET /file.txt".to_string(), 200),
            ("GET /missing".to_string(), 404),
            ("GET /hello".to_string(), 200),
        ],
        "{:#?} {stats:?}",
        describe(&spans)
    );
    let file = server_spans(&spans)[1];
    // The body went out with sendfile: counted, never captured, and the exchange still ends.
    assert_eq!(attr_int(file, "http.response.body.size"), 20_000);
    assert!(file.resource.service_name().unwrap().starts_with("nginx"));
}

/// Runs `hey` for exactly `n` requests; returns how many completed with 200.
fn hey(cg: &TestCgroup, url: &str, n: usize, concurrency: usize) -> usize {
    let mut cmd = cg.command("hey");
    cmd.args(["-n", &n.to_string(), "-c", &concurrency.to_string(), url]);
    let out = String::from_utf8(cg.run(cmd)).unwrap();
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("[200]")
                .map(|r| r.trim().split(' ').next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no [200] line in hey output:\n{out}"))
}

#[test]
fn a_load_gives_exactly_one_server_span_per_request() {
    let mut cg = TestCgroup::new("h1-load");
    let (nginx_port, dir) = start_nginx(&mut cg);
    let py_port = start_python(&mut cg, &[]);
    // The load generator itself is not traced: only the servers' spans are counted.
    let load = TestCgroup::new("h1-load-client");
    let rec = cg.capture_spans();
    let n_nginx = hey(
        &load,
        &format!("http://127.0.0.1:{nginx_port}/hello"),
        3000,
        20,
    );
    let n_py = hey(
        &load,
        &format!("http://127.0.0.1:{py_port}/hello"),
        1500,
        10,
    );
    std::thread::sleep(Duration::from_millis(200));
    let (spans, stats, summary) = rec.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((n_nginx, n_py), (3000, 1500));
    let count = |port: u16| {
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server && attr_int(s, "server.port") == i64::from(port))
            .count()
    };
    assert_eq!(count(nginx_port), 3000, "{stats:?}");
    assert_eq!(count(py_port), 1500, "{stats:?}");
    assert!(spans.iter().all(|s| s.status.code == StatusCode::Unset));
    assert_eq!(summary.kernel.get(Counter::RingbufFull), 0);
    assert_eq!(summary.kernel.get(Counter::ArgsFull), 0);
    assert_eq!(summary.conns.gap_lost_bytes, 0);
    assert!(stats.parse_errors.is_empty(), "{:?}", stats.parse_errors);
}

#[test]
fn replaying_a_capture_of_a_live_run_gives_the_same_spans() {
    let mut cg = TestCgroup::new("h1-replay");
    let port = start_python(&mut cg, &[]);
    // tcpdump on a loopback busy with the other tests of this binary can drop packets (seen
    // once: 30 of 68, with its default buffer); a capture with losses would not replay the same
    // spans, so it is taken again (at most three times), and the last one must be whole.
    let mut attempt = 0;
    let (live, pcap, rest) = loop {
        attempt += 1;
        let (live, pcap, rest) = capture_live_run(&mut cg, port, attempt);
        let whole = rest
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel");
        if whole || attempt == 3 {
            assert!(whole, "tcpdump lost packets in {attempt} captures: {rest}");
            break (live, pcap, rest);
        }
        eprintln!("tcpdump lost packets, capturing again: {rest}");
        let _ = std::fs::remove_file(&pcap);
    };

    let (replayed, summary) = sonde::replay::replay(
        &pcap,
        sonde::replay::Sides::Both,
        sonde::span::HttpConfig::default(),
        Vec::new(),
    )
    .expect("replay");
    replay_ui_shows(&pcap, replayed.len());
    let _ = std::fs::remove_file(&pcap);
    let key = |s: &Span| {
        (
            format!("{:?}", s.kind),
            s.name.clone(),
            s.attr("http.response.status_code")
                .cloned()
                .map(|v| format!("{v:?}")),
            s.attr("url.path")
                .or(s.attr("url.full"))
                .map(|v| format!("{v:?}")),
            s.attr("http.response.body.size").map(|v| format!("{v:?}")),
            format!("{:?}", s.status.code),
        )
    };
    let mut a: Vec<_> = live.iter().map(key).collect();
    let mut b: Vec<_> = replayed.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), 6, "{a:#?}");
    assert_eq!(
        a, b,
        "live {a:#?}\nreplayed {b:#?}\nreplay summary: {summary:?}\ntcpdump: {rest}"
    );
}

/// `sonde replay FILE --ui`: after the replay, the trace view serves its spans (all of
/// them), until SIGTERM.
fn replay_ui_shows(pcap: &std::path::Path, spans: usize) {
    use std::io::{Read as _, Write as _};
    let port = free_port();
    let mut child = sonde_tests::Reaper(
        Command::new(sonde_tests::sonde_bin())
            .arg("replay")
            .arg(pcap)
            .arg("--ui")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sonde replay --ui"),
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /api/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let list: serde_json::Value = serde_json::from_str(body).expect(&answer);
    let shown: u64 = list["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["spans"].as_u64().unwrap())
        .sum();
    assert_eq!(shown, spans as u64, "the trace view of the replay: {body}");
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "sonde replay --ui exited with {status}");
}

/// One live run of three curl requests against the Python server, captured by sonde and by
/// tcpdump: the spans, the pcap and what tcpdump said when it stopped.
fn capture_live_run(
    cg: &mut TestCgroup,
    port: u16,
    attempt: u32,
) -> (Vec<Span>, std::path::PathBuf, String) {
    let pcap = std::env::temp_dir().join(format!(
        "sonde-replay-{}-{port}-{attempt}.pcap",
        std::process::id()
    ));
    let tcpdump = sonde_tests::Tcpdump::start(port, pcap.clone());
    let rec = cg.capture_spans();
    let mut cmd = cg.command("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/hello?x=1"),
        &format!("http://127.0.0.1:{port}/status/503"),
        &format!("http://127.0.0.1:{port}/chunked"),
    ]);
    cg.run(cmd);
    let (live, _, _) = rec.finish();
    let (rest, _) = tcpdump.stop();
    (live, pcap, rest)
}
