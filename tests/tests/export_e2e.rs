//! Privileged end-to-end tests of `sonde run` exporting OTLP to real receivers: the sonde
//! binary itself (CLI, environment, exporter, /metrics), real traffic, and receivers built on
//! the official opentelemetry-proto package (gRPC and HTTP) and rotel.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    Lines, Reaper, TestCgroup, free_port, peers_dir, peers_python, python, sonde_run,
    spawn_tracing, wait_for_port,
};

fn export_peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../export/tests/peers")
}

/// An OTLP sink of the export crate's tests: records every request as a JSON line.
fn start_sink(kind: &str, port: u16, record: &Path) -> Reaper {
    let script = export_peers().join(format!("otlp_{kind}_sink.py"));
    let mut child = Command::new(peers_python())
        .arg(&script)
        .args(["--port", &port.to_string(), "--record"])
        .arg(record)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sink");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("LISTENING"), "{line}");
    Reaper(child)
}

/// Spans the sink recorded: (resource attributes, span) pairs.
fn recorded_spans(record: &Path) -> Vec<(BTreeMap<String, Value>, Value)> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        for rs in rec["request"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let res = attrs(&rs["resource"]["attributes"]);
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                assert_eq!(ss["scope"]["name"], "sonde");
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((res.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attrs(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap().to_owned(), kv["value"].clone()))
        .collect()
}

/// `sonde run` tracing `cg`, with extra environment; returns once it is tracing.
fn start_sonde(cg: &TestCgroup, env: &[(&str, String)], args: &[&str]) -> Reaper {
    let mut cmd = sonde_run(&cg.path);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Reaper(spawn_tracing(cmd))
}

fn start_server(cg: &mut TestCgroup) -> u16 {
    let port = free_port();
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    port
}

fn curl(cg: &TestCgroup, urls: &[String]) {
    let mut cmd = cg.command("curl");
    cmd.args(["-s", "-o", "/dev/null"]).args(urls);
    cg.run(cmd);
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn scrape(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write as _;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The value of a metric sample line (`name{labels} value`).
fn metric(body: &str, sample: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{body}"))
}

fn export_fields(kind: &str, protocol: &str, compression: &str) {
    let mut cg = TestCgroup::new(&format!("export-{kind}"));
    let port = start_server(&mut cg);
    let sink_port = free_port();
    let record =
        std::env::temp_dir().join(format!("sonde-e2e-{kind}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let _sink = start_sink(kind, sink_port, &record);
    let metrics_port = free_port();
    let _sonde = start_sonde(
        &cg,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", compression.into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &[
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
            "--route",
            "/users/{user}",
        ],
    );
    curl(
        &cg,
        &[
            format!("http://127.0.0.1:{port}/hello?token=secret"),
            format!("http://127.0.0.1:{port}/users/alice"),
        ],
    );
    wait_until("4 spans at the sink", || recorded_spans(&record).len() >= 4);
    let spans = recorded_spans(&record);
    let _ = std::fs::remove_file(&record);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let find = |kind: &str, name: &str| {
        spans
            .iter()
            .find(|(_, s)| s["kind"] == kind && s["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in {spans:#?}"))
    };
    let (res, server) = find("SPAN_KIND_SERVER", "GET /hello");
    let a = attrs(&server["attributes"]);
    assert_eq!(a["http.request.method"]["stringValue"], "GET");
    assert_eq!(a["url.path"]["stringValue"], "/hello");
    assert_eq!(a["url.query"]["stringValue"], "token=REDACTED");
    assert_eq!(a["http.response.status_code"]["intValue"], "200");
    assert_eq!(a["server.port"]["intValue"], port.to_string());
    assert_eq!(server["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(server["spanId"].as_str().unwrap().len(), 16);
    let start: u64 = server["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u64 = server["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end > start);
    assert!(
        res["service.name"]["stringValue"]
            .as_str()
            .unwrap()
            .starts_with("python")
    );
    assert!(
        res["process.pid"]["intValue"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            > 0
    );
    assert_eq!(
        res["host.name"]["stringValue"].as_str().unwrap(),
        sonde::enrich::host_name()
    );
    let (res, client) = find("SPAN_KIND_CLIENT", "GET /users/{user}");
    assert_eq!(res["service.name"]["stringValue"], "curl");
    assert_eq!(
        attrs(&client["attributes"])["http.route"]["stringValue"],
        "/users/{user}"
    );
    find("SPAN_KIND_SERVER", "GET /users/{user}");

    // /metrics accounts for every span.
    let (code, body) = scrape(metrics_port, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "sonde_export_spans_exported_total"), 4.0);
    assert_eq!(metric(&body, "sonde_export_spans_created_total"), 4.0);
    assert_eq!(scrape(metrics_port, "/readyz").0, 200);
    assert_eq!(scrape(metrics_port, "/healthz").0, 200);
}

#[test]
fn sonde_exports_every_field_over_grpc() {
    export_fields("grpc", "grpc", "none");
}

#[test]
fn sonde_exports_every_field_over_http_with_gzip() {
    export_fields("http", "http/protobuf", "gzip");
}

#[test]
fn rotel_accepts_and_prints_sondes_spans() {
    let mut cg = TestCgroup::new("export-rotel");
    let port = start_server(&mut cg);
    let rotel_port = free_port();
    let rotel = Path::new(&peers_python())
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("lib/python3.11/site-packages/rotel/rotel-agent");
    let log = std::env::temp_dir().join(format!("sonde-rotel-{}.log", std::process::id()));
    let _rotel = Reaper(
        Command::new(&rotel)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed", "--otlp-grpc-endpoint"])
            .arg(format!("127.0.0.1:{rotel_port}"))
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel"),
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], rotel_port)));
    let _sonde = start_sonde(
        &cg,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{rotel_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &["--metrics-address", ""],
    );
    curl(&cg, &[format!("http://127.0.0.1:{port}/status/503")]);
    // The server's and the client's spans may reach rotel in separate
    // batches (one per process): wait for both before reading the log.
    wait_until("rotel prints the server's and the client's spans", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("GET /status/{id}") && text.contains("service.name: Str(curl)")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("service.name: Str(curl)"), "{text}");
    assert!(
        text.contains("http.response.status_code: Int(503)"),
        "{text}"
    );
}

#[test]
fn a_collector_outage_loses_nothing_silently() {
    let mut cg = TestCgroup::new("export-outage");
    let port = start_server(&mut cg);
    let sink_port = free_port();
    let record = std::env::temp_dir().join(format!("sonde-outage-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let sink = start_sink("grpc", sink_port, &record);
    let metrics_port = free_port();
    let _sonde = start_sonde(
        &cg,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            // A small queue so that the outage overflows it.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "50".into()),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10".into()),
        ],
        &["--metrics-address", &format!("127.0.0.1:{metrics_port}")],
    );
    let urls = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| format!("http://127.0.0.1:{port}/hello"))
            .collect()
    };
    curl(&cg, &urls(10));
    wait_until("the first spans", || recorded_spans(&record).len() >= 20);
    drop(sink);
    // 150 requests = 300 spans while the collector is down: more than the queue holds.
    curl(&cg, &urls(150));
    std::thread::sleep(Duration::from_millis(1500));
    let (_, during) = scrape(metrics_port, "/metrics");
    let queued = metric(&during, "sonde_export_queue_spans");
    assert!(queued <= 50.0, "the queue stays bounded: {queued}");
    assert!(
        metric(
            &during,
            "sonde_export_spans_dropped_total{reason=\"queue_full\"}"
        ) > 0.0,
        "{during}"
    );
    let _sink = start_sink("grpc", sink_port, &record);
    wait_until("the queue drains after the restart", || {
        let (_, b) = scrape(metrics_port, "/metrics");
        metric(&b, "sonde_export_queue_spans") == 0.0
            && metric(&b, "sonde_export_in_flight_spans") == 0.0
    });
    let (_, after) = scrape(metrics_port, "/metrics");
    let created = metric(&after, "sonde_export_spans_created_total");
    let exported = metric(&after, "sonde_export_spans_exported_total");
    let dropped: f64 = after
        .lines()
        .filter(|l| l.starts_with("sonde_export_spans_dropped_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(created, 320.0, "{after}");
    assert_eq!(exported + dropped, created, "{after}");
    assert_eq!(metric(&after, "sonde_spans_created_total"), created);
    // Every curl request got a traceparent, and every server span read it.
    assert_eq!(
        metric(&after, "sonde_trace_injections_total{outcome=\"injected\"}"),
        160.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "sonde_trace_links_total{link=\"header\"}"),
        160.0,
        "{after}"
    );
    // The receiver got exactly what was counted as exported, each span once.
    let spans = recorded_spans(&record);
    let _ = std::fs::remove_file(&record);
    let ids: std::collections::BTreeSet<String> = spans
        .iter()
        .map(|(_, s)| s["spanId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len() as f64, exported);
    assert_eq!(spans.len() as f64, exported);
}
