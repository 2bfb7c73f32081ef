//! The trace view (`sonde run --ui`) in a real browser: headless Chromium driven by Selenium
//! (`tests/peers/ui_browser.py`) opens the page while a chain of real services (curl → a
//! Python service → nginx) is traced, and what the page shows is compared with the spans the
//! same agent exported over OTLP in the same run.

mod e2e_common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_common::*;
use serde_json::Value;
use sonde_tests::{TestCgroup, free_port, peers_dir, peers_python, python, wait_for_port};

fn py_hop(cg: &mut TestCgroup, next: u16) -> u16 {
    cg.start_peer(
        &python(),
        "chain_server.py",
        &[&format!("127.0.0.1:{next}")],
    )
}

fn id(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn nanos(v: &Value, key: &str) -> u64 {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v[key].as_u64())
        .unwrap_or_else(|| panic!("{key} in {v}"))
}

fn number(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_trace_view_shows_the_exported_trace_in_a_browser() {
    sonde_tests::require_root();
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run `cargo xtask setup` (Debian's chromium and chromium-driver)"
        );
    }
    let mut cg = TestCgroup::new("ui");
    let (nginx, _dir) = cg.start_nginx("", "", |_| {
        "default_type application/json;\n\
         location / { return 200 '{\"path\":\"$uri\",\"headers\":[]}'; }"
            .to_owned()
    });
    let hop = py_hop(&mut cg, nginx);
    let record = temp("ui-otlp.jsonl");
    let (_sink, sink_port) = start_sink(&record);
    let ui_port = free_port();
    let metrics_port = free_port();
    let sonde = start_sonde(
        &cg,
        &format!(
            "[ui]\nenabled = true\naddress = \"127.0.0.1:{ui_port}\"\n\
             [metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n"
        ),
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &[],
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], ui_port)));
    let mut curl = cg.command("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{hop}/orders/7"),
    ]);
    cg.run(curl);

    // The chain's trace as exported: curl's client span is its root.
    let deadline = Instant::now() + Duration::from_secs(30);
    let trace: Vec<Got> = loop {
        let got = spans(&record);
        let root = got.iter().find(|g| {
            g.service == "curl" && g.span["parentSpanId"].as_str().unwrap_or("").is_empty()
        });
        if let Some(root) = root {
            let t: Vec<Got> = got
                .iter()
                .filter(|g| g.trace_id() == root.trace_id())
                .cloned()
                .collect();
            if t.len() >= 4 {
                break t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the chain's four spans were not exported: {:?}",
            got.iter()
                .map(|g| (&g.service, g.kind(), g.trace_id()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(trace.len(), 4, "curl → python → nginx is four spans");
    let trace_id = trace[0].trace_id().to_owned();

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-waterfall.png");
    let out = Command::new(peers_python())
        .arg(peers_dir().join("ui_browser.py"))
        .arg(format!("http://127.0.0.1:{ui_port}/"))
        .arg(&trace_id)
        .arg(&shot)
        .env("SE_OFFLINE", "true")
        .stderr(Stdio::inherit())
        .output()
        .expect("run ui_browser.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser run failed: {stdout}");
    let seen: Value = serde_json::from_str(&stdout).expect("ui_browser.py prints one JSON object");

    // The list's row.
    assert_eq!(seen["row"]["trace_id"], trace_id.as_str());
    assert_eq!(number(&seen["row"]["spans"]), 4.0);
    assert_eq!(seen["row"]["root_service"], "curl");

    // The waterfall: the exported spans, each under its exported parent, in nesting order.
    let exported: BTreeMap<String, &Got> =
        trace.iter().map(|g| (id(&g.span, "spanId"), g)).collect();
    let rows = seen["waterfall"].as_array().expect("waterfall rows");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let trace_start = trace
        .iter()
        .map(|g| nanos(&g.span, "startTimeUnixNano"))
        .min()
        .unwrap();
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    let mut depth_of: BTreeMap<String, f64> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let span_id = id(row, "span_id");
        let g = exported
            .get(&span_id)
            .unwrap_or_else(|| panic!("the page shows span {span_id}, which was not exported"));
        let parent = id(&g.span, "parentSpanId");
        assert_eq!(id(row, "parent_span_id"), parent, "parent of {span_id}");
        assert_eq!(row["service"], g.service.as_str(), "service of {span_id}");
        assert_eq!(row["name"], g.span["name"], "name of {span_id}");
        let depth = number(&row["depth"]);
        if parent.is_empty() {
            assert_eq!((i, depth), (0, 0.0), "the root comes first, at depth 0");
        } else {
            let p = position[&parent];
            assert!(p < i, "{span_id} is drawn after its parent");
            assert_eq!(
                depth,
                depth_of[&parent] + 1.0,
                "{span_id} is nested under its parent"
            );
        }
        let exported_ms =
            (nanos(&g.span, "endTimeUnixNano") - nanos(&g.span, "startTimeUnixNano")) as f64 / 1e6;
        let shown_ms = number(&row["duration_ms"]);
        assert!(
            (shown_ms - exported_ms).abs() <= 0.001 + exported_ms * 1e-6,
            "{span_id}: the page shows {shown_ms} ms, OTLP says {exported_ms} ms"
        );
        let offset_ms = (nanos(&g.span, "startTimeUnixNano") - trace_start) as f64 / 1e6;
        assert!(
            (number(&row["offset_ms"]) - offset_ms).abs() <= 0.001,
            "{span_id}: offset {} ms on the page, {offset_ms} ms exported",
            row["offset_ms"]
        );
        position.insert(span_id.clone(), i);
        depth_of.insert(span_id, depth);
    }
    // The first span's detail lists its attributes.
    let detail: BTreeSet<String> = seen["detail"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| kv[0].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        detail.contains("http.request.method"),
        "the span detail shows attributes: {detail:?}"
    );

    // The service map: one edge per exported client → server call of the chain.
    let mut expected_edges = BTreeSet::new();
    for g in trace.iter().filter(|g| g.kind() == "SPAN_KIND_SERVER") {
        let parent = id(&g.span, "parentSpanId");
        if let Some(client) = exported.get(&parent) {
            expected_edges.insert((client.service.clone(), g.service.clone()));
        }
    }
    assert_eq!(
        expected_edges.len(),
        2,
        "curl → python → nginx: {expected_edges:?}"
    );
    let edges: BTreeSet<(String, String)> = seen["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| number(&e["requests"]) >= 1.0)
        .map(|e| (id(e, "client"), id(e, "server")))
        .collect();
    assert!(
        expected_edges.is_subset(&edges),
        "the map's edges {edges:?} miss some of {expected_edges:?}"
    );

    // Nothing but the agent was asked for anything.
    let base = format!("http://127.0.0.1:{ui_port}/");
    let requests: Vec<&str> = seen["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        requests
            .iter()
            .any(|u| u.starts_with(&format!("{base}api/trace/"))),
        "{requests:?}"
    );
    let outside: Vec<&&str> = requests.iter().filter(|u| !u.starts_with(&base)).collect();
    assert!(outside.is_empty(), "the page requested {outside:?}");
    assert_eq!(
        seen["console_errors"],
        serde_json::json!([]),
        "browser console errors"
    );

    // The view's counters on /metrics.
    let samples = parse_exposition("text", &scrape(metrics_port, "text/plain").1);
    assert!(sum(&samples, "sonde_ui_traces", &[]) >= 1.0);
    assert_eq!(sum(&samples, "sonde_ui_traces_evicted_total", &[]), 0.0);
    stop(sonde);
}
