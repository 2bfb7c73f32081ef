//! Shared by the sampling and privacy tests: `sonde run` as a process with a config file, the
//! traces + metrics OTLP sink (`tests/peers/otlp_sink.py`), `/metrics` scrapes parsed by
//! `prometheus_client`, and what the sink recorded.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
#[allow(unused_imports)] // The privacy tests take it from here.
pub use sonde_tests::sonde_bin;
use sonde_tests::{Reaper, TestCgroup, peers_dir, peers_python, sonde_run, spawn_tracing};

pub fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sonde-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// The OTLP/gRPC traces + metrics sink, recording to `record`.
pub fn start_sink(record: &Path) -> (Reaper, u16) {
    let mut child = Command::new(peers_python())
        .arg(peers_dir().join("otlp_sink.py"))
        .args(["--port", "0", "--record"])
        .arg(record)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sink");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("sink said {line:?}"));
    (Reaper(child), port)
}

/// `sonde run` tracing `cg` with a config file; returns once it is tracing.
pub fn start_sonde(cg: &TestCgroup, config: &str, env: &[(&str, String)], args: &[&str]) -> Child {
    let file = temp(&format!("config-{}.toml", cg.id));
    std::fs::write(&file, config).unwrap();
    let mut cmd = sonde_run(&cg.path);
    cmd.arg("--config").arg(&file).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_tracing(cmd)
}

/// SIGTERM, then waits (sonde flushes spans and pushes metrics once more on the way out).
pub fn stop(mut child: Child) {
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "sonde exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("sonde did not stop within 20 s of SIGTERM");
}

/// GET `/metrics`, with an `Accept` header.
pub fn scrape(port: u16, accept: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (ctype, body.to_owned())
}

/// One parsed sample: name, labels, value, exemplar labels.
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub exemplar: Option<BTreeMap<String, String>>,
}

/// Parses an exposition with `prometheus_client` (`text` or `openmetrics`); panics with the
/// parser's message if it refuses it.
pub fn parse_exposition(kind: &str, body: &str) -> Vec<Sample> {
    let mut child = Command::new(peers_python())
        .arg(peers_dir().join("parse_metrics.py"))
        .arg(kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client ({kind}) refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let strmap = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s[0].as_str().unwrap().to_owned(),
            labels: strmap(&s[1]),
            value: s[2].as_f64().unwrap(),
            exemplar: s[3].as_object().map(|e| strmap(&e["labels"])),
        })
        .collect()
}

/// Sum of the samples named `name` whose labels include all of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// A span the sink received, with its resource's `service.name`.
#[derive(Clone, Debug)]
pub struct Got {
    pub service: String,
    pub resource: Value,
    pub span: Value,
}

impl Got {
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        self.resource["attributes"]
            .as_array()?
            .iter()
            .find(|kv| kv["key"] == key)
            .and_then(|kv| kv["value"]["stringValue"].as_str())
            .map(str::to_owned)
    }

    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.span["attributes"]
            .as_array()?
            .iter()
            .find(|kv| kv["key"] == key)
            .map(|kv| &kv["value"])
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key)?["stringValue"].as_str()
    }

    pub fn trace_id(&self) -> &str {
        self.span["traceId"].as_str().unwrap()
    }

    pub fn kind(&self) -> &str {
        self.span["kind"].as_str().unwrap_or_default()
    }
}

fn records(record: &Path, signal: &str) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["signal"] == signal)
        .map(|r| r["request"].clone())
        .collect()
}

pub fn resource_service(resource: &Value) -> String {
    resource["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|kv| kv["key"] == "service.name")
        .and_then(|kv| kv["value"]["stringValue"].as_str())
        .unwrap_or_default()
        .to_owned()
}

pub fn spans(record: &Path) -> Vec<Got> {
    let mut out = Vec::new();
    for req in records(record, "traces") {
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource_service(&rs["resource"]);
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Got {
                        service: service.clone(),
                        resource: rs["resource"].clone(),
                        span: span.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The last OTLP metrics push: (service, metric name, data point) triples.
pub fn last_metrics(record: &Path) -> Vec<(String, String, Value)> {
    let Some(req) = records(record, "metrics").pop() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rm in req["resourceMetrics"].as_array().into_iter().flatten() {
        let service = resource_service(&rm["resource"]);
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                for dp in m["histogram"]["dataPoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.push((
                        service.clone(),
                        m["name"].as_str().unwrap().to_owned(),
                        dp.clone(),
                    ));
                }
            }
        }
    }
    out
}
