//! Privileged end-to-end test of ELF inspection against hostile files: a traced process maps
//! executable a file declaring 2^32 section headers, a Go binary whose compressed DWARF
//! declares 4 GiB (and inflates to 1 GiB), and a libssl cut in half (`peers/hostile_elf.py`).
//! sonde must refuse and count each on `/metrics`, stay under the chart's 512 MiB memory
//! limit, and keep producing spans for the process's traffic. (Before the limits, the agent
//! reached 3.4 GiB resident on these files; 67 MiB after.)

mod e2e_common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use e2e_common::*;
use sonde_tests::{Lines, TestCgroup, free_port, peers_dir, python};

/// The chart's memory limit (helm/sonde/values.yaml, resources.limits.memory).
const CHART_MEMORY_LIMIT: f64 = 512.0 * 1024.0 * 1024.0;
const REQUESTS: usize = 30;

/// The value of the sample of `name` whose labels include every one of `with`.
fn sample(body: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !rest.starts_with(['{', ' ']) {
            return None;
        }
        with.iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| l.rsplit(' ').next()?.parse().ok())?
    })
}

#[test]
fn hostile_elf_files_are_refused_counted_and_memory_stays_bounded() {
    let mut cg = TestCgroup::new("hostile-elf");
    let record = temp("hostile-elf-sink.jsonl");
    let (_sink, sink_port) = start_sink(&record);
    let metrics_port = free_port();
    let sonde = start_sonde(
        &cg,
        "",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &["--metrics-address", &format!("127.0.0.1:{metrics_port}")],
    );
    let dir = temp("hostile-elf-files");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("hostile_elf.py"))
        .arg(&dir)
        .arg(REQUESTS.to_string())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    let mut lines = Lines::of(child);
    assert_eq!(lines.next_line(), "ready");
    assert_eq!(lines.next_line(), format!("done {REQUESTS}"));

    // Each file refused once, for its own reason, by the TLS inspector.
    let want = [
        ("too_many_sections", "many-sections.so"),
        ("too_large", "dwarf-bomb (4 GiB declared)"),
        ("truncated", "truncated.so"),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (_, body) = scrape(metrics_port, "text/plain");
        let all = want.iter().all(|(reason, _)| {
            sample(
                &body,
                "sonde_elf_refused_total",
                &[("inspector", "tls"), ("reason", reason)],
            )
            .is_some_and(|n| n >= 1.0)
        });
        if all || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (reason, file) in want {
        let n = sample(
            &body,
            "sonde_elf_refused_total",
            &[("inspector", "tls"), ("reason", reason)],
        );
        assert_eq!(n, Some(1.0), "{file} refused as {reason}:\n{body}");
    }
    let rss = sample(&body, "sonde_process_resident_memory_bytes", &[]).expect("RSS gauge");
    eprintln!(
        "hostile_elf: agent RSS {:.1} MiB after inspecting the files",
        rss / 1048576.0
    );
    assert!(
        rss < CHART_MEMORY_LIMIT,
        "agent RSS {rss} bytes, over the chart's limit"
    );
    stop(sonde);

    // The process's own traffic was traced all along.
    let got = spans(&record);
    let served = got
        .iter()
        .filter(|g| g.kind() == "SPAN_KIND_SERVER" && g.str_attr("url.path") == Some("/hostile"))
        .count();
    assert_eq!(served, REQUESTS, "server spans of /hostile");
    let _ = std::fs::remove_dir_all(&dir);
}
