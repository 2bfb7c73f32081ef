//! Privileged end-to-end test of the privacy policy: real requests (curl, traced) carrying
//! credentials in headers, cookies, the query string and the command line, to a real server;
//! the OTLP receiver's whole output is searched for the secret values.

mod e2e_common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_common::*;
use sonde_tests::{Lines, TestCgroup, free_port, peers_dir, python, wait_for_port};

const SECRETS: &[&str] = &[
    "TOPSECRET-AUTH",
    "TOPSECRET-COOKIE",
    "TOPSECRET-APIKEY",
    "TOPSECRET-QUERY",
    "TOPSECRET-PROXY",
    "TOPSECRET-URLPASS",
    "TOPSECRET-ENVARG",
    "s3cr3t-",
];

const CONFIG: &str = r#"
[privacy]
capture_request_headers = ["x-request-id", "x-tenant"]
capture_response_headers = ["content-type"]
drop_routes = ["/internal/*"]
[[privacy.redact]]
pattern = "s3cr3t-[a-z0-9]+"
replacement = "[configured-secret]"
"#;

#[test]
fn credentials_and_configured_secrets_never_reach_the_receiver() {
    let mut cg = TestCgroup::new("privacy");
    let record = temp("privacy-sink.jsonl");
    let (_sink, sink_port) = start_sink(&record);
    let summary = temp("privacy-summary.json");
    let sonde = start_sonde(
        &cg,
        CONFIG,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &[
            "--metrics-address",
            "",
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    );
    let port = free_port();
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));

    let base = format!("http://127.0.0.1:{port}");
    let mut curl = cg.command("curl");
    // `--rate` keeps curl alive between requests, so that its command line (with the
    // credentials on it) is read for its resource.
    curl.args(["-s", "-o", "/dev/null", "--rate", "4/s"])
        .args(["-H", "Authorization: Bearer TOPSECRET-AUTH"])
        .args(["-H", "Proxy-Authorization: Basic TOPSECRET-PROXY"])
        .args(["-H", "Cookie: session=TOPSECRET-COOKIE"])
        .args(["-H", "X-Api-Key: TOPSECRET-APIKEY"])
        .args(["-H", "X-Request-Id: s3cr3t-abc123"])
        .args(["-H", "X-Tenant: acme"])
        // A secret-named variable, only on the command line (what curl prints after each
        // transfer, to its stdout).
        .args(["--write-out", "DB_PASSWORD=TOPSECRET-ENVARG\\n"])
        .arg(format!(
            "{base}/hello?api_key=TOPSECRET-QUERY&token=TOPSECRET-QUERY&page=2"
        ))
        // … and in a URL's user information.
        .arg(format!(
            "http://alice:TOPSECRET-URLPASS@127.0.0.1:{port}/status/201?session=s3cr3t-zz9"
        ))
        .arg(format!("{base}/internal/7"));
    cg.run(curl);

    // Wait for the server span of /status (the last one that is exported).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = spans(&record);
        if got
            .iter()
            .filter(|g| {
                g.str_attr("http.route")
                    .is_some_and(|r| r.starts_with("/status"))
            })
            .count()
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(sonde);

    // Nothing the receiver got contains a secret, in any field.
    let raw = std::fs::read_to_string(&record).unwrap();
    for s in SECRETS {
        let at = raw
            .find(s)
            .map(|i| &raw[i.saturating_sub(200)..(i + 60).min(raw.len())]);
        assert!(
            at.is_none(),
            "{s} reached the receiver: …{}…",
            at.unwrap_or_default()
        );
    }

    let got = spans(&record);
    let server = |path: &str| {
        got.iter()
            .find(|g| g.kind() == "SPAN_KIND_SERVER" && g.str_attr("url.path") == Some(path))
            .unwrap_or_else(|| panic!("no server span of {path}: {got:?}"))
    };
    let hello = server("/hello");
    // Allow-listed headers are captured (redaction applied); query values are redacted.
    let header = |g: &Got, key: &str| -> Vec<String> {
        g.attr(key).unwrap_or_else(|| panic!("{key} missing"))["arrayValue"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["stringValue"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(header(hello, "http.request.header.x-tenant"), ["acme"]);
    assert_eq!(
        header(hello, "http.request.header.x-request-id"),
        ["[configured-secret]"]
    );
    assert_eq!(
        header(hello, "http.response.header.content-type"),
        ["text/plain"]
    );
    assert_eq!(
        hello.str_attr("url.query"),
        Some("api_key=REDACTED&token=REDACTED&page=REDACTED")
    );
    for g in &got {
        for kv in g.span["attributes"].as_array().unwrap() {
            let k = kv["key"].as_str().unwrap();
            assert!(
                !k.contains("authorization") && !k.contains("cookie") && !k.contains("api-key"),
                "{k} captured"
            );
        }
    }
    // The client side (curl): its command line is exported with credentials redacted.
    let client = got
        .iter()
        .find(|g| g.kind() == "SPAN_KIND_CLIENT")
        .expect("curl's client spans");
    assert!(
        client
            .str_attr("url.full")
            .is_some_and(|u| u.ends_with("/hello?api_key=REDACTED&token=REDACTED&page=REDACTED")),
        "{:?}",
        client.str_attr("url.full")
    );
    let cmdline = got
        .iter()
        .filter(|g| g.service == "curl")
        .find_map(|g| g.resource_attr("process.command_line"))
        .expect("curl's command line is exported");
    assert!(
        cmdline.contains("Authorization: Bearer REDACTED")
            && cmdline.contains("api_key=REDACTED")
            && cmdline.contains("--write-out DB_PASSWORD=REDACTED")
            && cmdline.contains(&format!("{base}/hello?api_key=REDACTED"))
            && cmdline.contains(&format!("http://REDACTED@127.0.0.1:{port}/status/201")),
        "{cmdline}"
    );
    // The dropped route: neither side exported, both counted.
    assert!(
        !got.iter()
            .any(|g| g.str_attr("url.path") == Some("/internal/7")
                || g.str_attr("url.full")
                    .is_some_and(|u| u.contains("/internal/"))),
        "a span of a dropped route was exported"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["export"]["dropped"]["policy"], 2, "{}", s["export"]);
}

#[test]
fn asking_to_capture_a_sensitive_header_is_refused() {
    let dir = temp("privacy-bad.toml");
    std::fs::write(
        &dir,
        "[privacy]\ncapture_request_headers = [\"X-Request-Id\", \"Authorization\"]\n",
    )
    .unwrap();
    let out = Command::new(sonde_bin())
        .args(["run", "--output", "none", "--config"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("capture_request_headers") && err.contains("\"authorization\""),
        "{err}"
    );
}
