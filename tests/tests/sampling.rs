//! Privileged end-to-end test of sampling and span metrics: `sonde run` with a 10% ratio over
//! a real three-service chain (Python servers calling each other, traced through injected
//! `traceparent`), a real OTLP receiver of traces and metrics, and `/metrics` parsed by
//! `prometheus_client`.

mod e2e_common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use e2e_common::*;
use serde_json::Value;
use sonde_tests::{Lines, TestCgroup, free_port, peers_dir, python, wait_for_port};

const PLAIN: usize = 2000;
const ERRORS: usize = 20;
const SLOW: usize = 20;
const PARENT0: usize = 50;
const PARENT1: usize = 50;
const TOTAL: usize = PLAIN + ERRORS + SLOW + PARENT0 + PARENT1;

/// (service, kind) of the five spans of one request through front → middle → back.
fn complete_shape() -> BTreeSet<(String, String)> {
    [
        ("front", "SPAN_KIND_SERVER"),
        ("front", "SPAN_KIND_CLIENT"),
        ("middle", "SPAN_KIND_SERVER"),
        ("middle", "SPAN_KIND_CLIENT"),
        ("back", "SPAN_KIND_SERVER"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect()
}

fn start_hop(cg: &mut TestCgroup, name: &str, next: Option<u16>) -> u16 {
    let port = free_port();
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("sampling_chain.py"))
        .arg(port.to_string())
        .env("OTEL_SERVICE_NAME", name)
        .stdout(Stdio::piped());
    if let Some(n) = next {
        cmd.arg(format!("127.0.0.1:{n}"));
    }
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    port
}

#[test]
fn ratio_sampling_keeps_whole_traces_every_error_and_slow_one_and_metrics_count_all() {
    let mut cg = TestCgroup::new("sampling");
    let record = temp("sampling-sink.jsonl");
    let (_sink, sink_port) = start_sink(&record);
    let metrics_port = free_port();
    let summary = temp("sampling-summary.json");
    let sonde = start_sonde(
        &cg,
        "[sampling]\nratio = 0.1\nkeep_slower_than_ms = 200\ntail_wait_ms = 1500\n\
         tail_buffer_spans = 50000\n[span_metrics]\nexport_interval_ms = 1000\n",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "20000".into()),
        ],
        &[
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    );
    let back = start_hop(&mut cg, "back", None);
    let middle = start_hop(&mut cg, "middle", Some(back));
    let front = start_hop(&mut cg, "front", Some(middle));

    // The driver is not traced: the front's SERVER span is where each trace starts (unless
    // the request brings a traceparent).
    let out = Command::new(python())
        .arg(peers_dir().join("sampling_driver.py"))
        .arg(format!("127.0.0.1:{front}"))
        .args(["--plain", &PLAIN.to_string()])
        .args(["--err", &ERRORS.to_string()])
        .args(["--slow", &SLOW.to_string()])
        .args(["--parent0", &PARENT0.to_string()])
        .args(["--parent1", &PARENT1.to_string()])
        .args(["--threads", "4"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let driven: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        driven["statuses"]["200"],
        (TOTAL - ERRORS) as u64,
        "{driven}"
    );
    assert_eq!(driven["statuses"]["500"], ERRORS as u64, "{driven}");
    let ids = |k: &str| -> BTreeSet<String> {
        driven[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (parent0, parent1) = (ids("parent0"), ids("parent1"));

    // Held spans expire (1.5 s), batches go out (200 ms): then scrape and stop.
    std::thread::sleep(Duration::from_secs(4));
    let (ctype, text) = scrape(metrics_port, "text/plain");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let (om_type, om) = scrape(
        metrics_port,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert!(
        om_type.starts_with("application/openmetrics-text"),
        "{om_type}"
    );
    stop(sonde);

    let got = spans(&record);
    let mut traces: BTreeMap<String, Vec<&Got>> = BTreeMap::new();
    for g in &got {
        traces.entry(g.trace_id().to_owned()).or_default().push(g);
    }
    // Whole or absent: every exported trace has exactly the five spans of the chain.
    for (id, spans) in &traces {
        let shape: BTreeSet<(String, String)> = spans
            .iter()
            .map(|g| (g.service.clone(), g.kind().to_owned()))
            .collect();
        assert_eq!(
            (spans.len(), &shape),
            (5, &complete_shape()),
            "trace {id} is partial: {:?}",
            spans
                .iter()
                .map(|g| (&g.service, g.kind(), g.str_attr("url.path")))
                .collect::<Vec<_>>()
        );
    }
    let fronts = |prefix: &str| -> Vec<&Got> {
        got.iter()
            .filter(|g| {
                g.service == "front"
                    && g.kind() == "SPAN_KIND_SERVER"
                    && g.str_attr("url.path")
                        .is_some_and(|p| p.starts_with(prefix))
            })
            .collect()
    };
    // The ratio: 2000 new roots at 10%: 200 expected, sd 13.4; within 4 sd.
    let plain_kept = fronts("/item/").len();
    eprintln!("plain traces kept: {plain_kept} of {PLAIN}");
    assert!(
        (146..=254).contains(&plain_kept),
        "{plain_kept} of {PLAIN} plain traces kept at a 10% ratio"
    );
    // Every error and every slow request is kept, whole (checked above), marked when only the
    // tail kept it.
    let errs = fronts("/err/");
    assert_eq!(errs.len(), ERRORS, "every error trace is kept");
    let slow = fronts("/slow/");
    assert_eq!(slow.len(), SLOW, "every slow trace is kept");
    let tail_marked = errs
        .iter()
        .chain(&slow)
        .filter(|g| g.str_attr("sonde.sampling.tail").is_some())
        .count();
    assert!(
        tail_marked >= (ERRORS + SLOW) * 2 / 3,
        "most error/slow traces are kept by the tail, marked: {tail_marked}"
    );
    // An incoming sampled=0 is honoured downstream; sampled=1 is kept whole.
    let exported: BTreeSet<&str> = traces.keys().map(String::as_str).collect();
    let leaked: Vec<&String> = parent0
        .iter()
        .filter(|t| exported.contains(t.as_str()))
        .collect();
    assert!(leaked.is_empty(), "sampled=0 traces exported: {leaked:?}");
    for t in &parent1 {
        assert!(exported.contains(t.as_str()), "sampled=1 trace {t} missing");
    }

    // Span metrics count every request exactly, whatever was sampled.
    let samples = parse_exposition("text", &text);
    for service in ["front", "middle", "back"] {
        assert_eq!(
            sum(
                &samples,
                "http_server_request_duration_seconds_count",
                &[("service_name", service)]
            ),
            TOTAL as f64,
            "{service} server requests"
        );
    }
    for service in ["front", "middle"] {
        assert_eq!(
            sum(
                &samples,
                "http_client_request_duration_seconds_count",
                &[("service_name", service)]
            ),
            TOTAL as f64,
            "{service} client requests"
        );
    }
    assert_eq!(
        sum(
            &samples,
            "http_server_request_duration_seconds_count",
            &[
                ("service_name", "front"),
                ("http_response_status_code", "500")
            ]
        ),
        ERRORS as f64
    );
    // The service graph: front → middle → back, paired by span ids.
    let edge = |c: &str, s: &str| {
        sum(
            &samples,
            "sonde_service_graph_request_duration_seconds_count",
            &[("client", c), ("server", s)],
        )
    };
    let (fm, mb) = (edge("front", "middle"), edge("middle", "back"));
    eprintln!("service graph: front->middle {fm}, middle->back {mb}");
    assert!(
        fm >= TOTAL as f64 * 0.95 && mb >= TOTAL as f64 * 0.95,
        "{fm} {mb}"
    );
    let all_edges = sum(
        &samples,
        "sonde_service_graph_request_duration_seconds_count",
        &[],
    );
    assert_eq!(
        all_edges,
        (2 * TOTAL) as f64,
        "every client request is an edge"
    );
    // Sampling decisions are counted.
    let not_sampled = sum(
        &samples,
        "sonde_sampling_head_decisions_total",
        &[("decision", "not_sampled")],
    );
    assert!(not_sampled > (PLAIN * 5) as f64 * 0.8, "{not_sampled}");

    // Exemplars (OpenMetrics, parsed by prometheus_client) name traces the receiver has.
    let om_samples = parse_exposition("openmetrics", &om);
    let exemplars: Vec<&BTreeMap<String, String>> = om_samples
        .iter()
        .filter_map(|s| s.exemplar.as_ref())
        .collect();
    assert!(exemplars.len() >= 5, "{} exemplars", exemplars.len());
    for e in &exemplars {
        let t = &e["trace_id"];
        assert!(
            exported.contains(t.as_str()),
            "exemplar trace {t} never reached the receiver"
        );
    }

    // The same counts and exemplars over OTLP (the push at shutdown).
    let points = last_metrics(&record);
    let count = |service: &str, name: &str| -> u64 {
        points
            .iter()
            .filter(|(s, n, _)| s == service && n == name)
            .map(|(_, _, dp)| dp["count"].as_str().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(count("front", "http.server.request.duration"), TOTAL as u64);
    assert_eq!(count("back", "http.server.request.duration"), TOTAL as u64);
    assert_eq!(
        count("middle", "http.client.request.duration"),
        TOTAL as u64
    );
    let otlp_exemplars: Vec<&str> = points
        .iter()
        .flat_map(|(_, _, dp)| dp["exemplars"].as_array().into_iter().flatten())
        .map(|e| e["traceId"].as_str().unwrap())
        .collect();
    assert!(!otlp_exemplars.is_empty());
    for t in otlp_exemplars {
        assert!(
            exported.contains(t),
            "OTLP exemplar trace {t} never reached the receiver"
        );
    }

    // Every span is accounted for: created = exported + dropped (sampled_out among them).
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let e = &s["export"];
    let dropped: u64 = e["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        e["created"].as_u64().unwrap(),
        e["exported"].as_u64().unwrap() + dropped,
        "{e}"
    );
    assert_eq!(e["exported"].as_u64().unwrap(), got.len() as u64, "{e}");
    assert_eq!(
        s["spans"]["created"], e["created"],
        "every span made is offered or not_sent"
    );
    assert!(
        e["dropped"]["sampled_out"].as_u64().unwrap() > (PLAIN * 5 / 2) as u64,
        "{e}"
    );
}
