//! Hostile HTTP/2 traffic against the agent's memory: thousands of traced connections each
//! holding a header block that never ends (`tests/peers/h2_flood.py`). The parser state of all
//! connections together stays within `[capture] state_budget_bytes`, the agent's memory within
//! the chart's limit, and other traffic still gives its spans.

mod e2e_common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_common::*;
use sonde_tests::{Reaper, TestCgroup, free_port, peers_dir, peers_python, wait_for_port};

/// The chart's memory limit for the agent (`helm/sonde/values.yaml`).
const CHART_MEMORY_LIMIT: u64 = 512 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

#[test]
fn thousands_of_endless_h2_header_blocks_stay_within_the_state_budget() {
    sonde_tests::require_root();
    let mut cg = TestCgroup::new("hostile-h2");
    // The flood's server discards everything, outside the traced cgroup.
    let port = free_port();
    let mut server = Reaper(
        Command::new(peers_python())
            .arg(peers_dir().join("h2_flood.py"))
            .args(["serve", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the discard server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("ready {port}"));
    let (nginx, _dir) = cg.start_nginx("", "", |_| "location / { return 200 'ok'; }".to_owned());
    let metrics_port = free_port();
    let spans_file = temp("hostile-h2.jsonl");
    let budget: u64 = 16 << 20;
    let sonde = start_sonde(
        &cg,
        &format!(
            "[capture]\nstate_budget_bytes = {budget}\n\
             [metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n\
             [output]\nformat = \"jsonl\"\nfile = \"{}\"\n",
            spans_file.display()
        ),
        &[],
        &[],
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let rss_before = rss_bytes(sonde.id());

    // 2000 connections, each with 8 CONTINUATION frames of 4000 bytes: 64 MB of header
    // blocks that a parser following them would hold, four times the budget.
    let (conns, frames) = (2000, 8);
    let mut cmd = cg.command(&peers_python());
    cmd.arg(peers_dir().join("h2_flood.py"))
        .args([
            "flood",
            &port.to_string(),
            &conns.to_string(),
            &frames.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let flood = cg.spawn(cmd);
    let mut stdin = flood.stdin.take().unwrap();
    let mut out = BufReader::new(flood.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with(&format!("open {conns} ")), "{line}");

    // The budget is checked about once a second: wait for an eviction, then a little more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = parse_exposition("text", &scrape(metrics_port, "text/plain").1);
        if sum(&samples, "sonde_conn_state_evictions_total", &[]) > 0.0 {
            std::thread::sleep(Duration::from_millis(2500));
            break parse_exposition("text", &scrape(metrics_port, "text/plain").1);
        }
        assert!(
            Instant::now() < deadline,
            "no parser state was evicted; state bytes {}, events lost {}",
            sum(&samples, "sonde_conn_state_bytes", &[]),
            sum(&samples, "sonde_events_lost_total", &[])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let state = sum(&samples, "sonde_conn_state_bytes", &[]);
    let evictions = sum(&samples, "sonde_conn_state_evictions_total", &[]);
    let evicted = sum(&samples, "sonde_conn_state_evicted_bytes_total", &[]);
    let rss = rss_bytes(sonde.id());
    eprintln!(
        "hostile h2: {conns} connections; state {:.1} MiB (budget {} MiB), {evictions} evictions \
         ({:.1} MiB), events lost {}, agent RSS {:.1} MiB (before the flood {:.1} MiB)",
        state / 1048576.0,
        budget >> 20,
        evicted / 1048576.0,
        sum(&samples, "sonde_events_lost_total", &[]),
        rss as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    assert!(
        state <= budget as f64,
        "state {state} over the budget {budget}"
    );
    assert!(
        evicted >= 16.0 * 1048576.0,
        "the flood's blocks were held, then dropped: {evicted} bytes evicted"
    );
    assert!(
        rss < CHART_MEMORY_LIMIT,
        "agent RSS {rss} over the chart's limit {CHART_MEMORY_LIMIT}"
    );

    // Other traffic still gives its spans.
    let mut curl = cg.command("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{nginx}/after-flood"),
    ]);
    cg.run(curl);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&spans_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/after-flood"))
        .any(|l| l.contains("\"SPAN_KIND_SERVER\"") || l.contains("\"kind\":2"))
    {
        assert!(
            Instant::now() < deadline,
            "no server span for /after-flood after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writeln!(stdin).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "closed");
    stop(sonde);
    let _ = std::fs::remove_file(&spans_file);
}
