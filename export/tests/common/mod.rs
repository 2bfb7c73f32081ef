//! Helpers shared by the integration tests: the Python OTLP sinks (real receivers built on the
//! official `opentelemetry-proto` package), rotel, test spans and certificates.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value as Json;
use sonde_export::{
    batch::{ExportPipeline, PipelineOptions, Sink},
    config::{BatchConfig, Compression, ExportConfig, ExportFileConfig, Protocol, RetryConfig},
    span::{FLAG_SAMPLED, KeyValue, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId},
    transport::OtlpClient,
};

/// How long a test waits for something that should happen promptly before it fails.
/// A bound for failing, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const SCOPE_VERSION: &str = "1.2.3-test";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("export/ is in the workspace")
        .to_owned()
}

/// The peers' Python: `SONDE_PEERS_PYTHON`, else `<workspace>/target/peers/venv/bin/python`.
pub fn peers_python() -> PathBuf {
    let path = std::env::var_os("SONDE_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers/venv/bin/python"));
    assert!(
        path.exists(),
        "the Python test peers are missing ({}): run `cargo xtask setup`",
        path.display()
    );
    path
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "export-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    Grpc,
    Http,
}

/// TLS files for a sink.
#[derive(Clone, Debug)]
pub struct SinkTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A running Python OTLP sink; killed on drop.
pub struct PySink {
    child: Child,
    pub port: u16,
    pub record: PathBuf,
    pub kind: SinkKind,
}

impl PySink {
    pub fn start(kind: SinkKind, dir: &Path, script: &str) -> Self {
        Self::start_with(kind, dir, script, 0, None)
    }

    pub fn start_with(
        kind: SinkKind,
        dir: &Path,
        script: &str,
        port: u16,
        tls: Option<&SinkTls>,
    ) -> Self {
        let file = match kind {
            SinkKind::Grpc => "otlp_grpc_sink.py",
            SinkKind::Http => "otlp_http_sink.py",
        };
        let record = dir.join("records.jsonl");
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers_dir().join(file))
            .args(["--port", &port.to_string(), "--script", script])
            .arg("--record")
            .arg(&record)
            .current_dir(peers_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in the source tree
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(tls) = tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
            if let Some(ca) = &tls.client_ca {
                cmd.arg("--client-ca").arg(ca);
            }
        }
        let mut child = cmd.spawn().expect("start the Python sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{file} did not start: {line:?}"));
        Self {
            child,
            port,
            record,
            kind,
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every request recorded so far (in arrival order).
    pub fn records(&self) -> Vec<Json> {
        read_records(&self.record)
    }

    /// Waits until at least `n` requests were recorded.
    pub async fn wait_requests(&self, n: usize) -> Vec<Json> {
        eventually(&format!("{n} requests at the sink"), || {
            let r = self.records();
            (r.len() >= n).then_some(r)
        })
        .await
    }

    /// Stops the sink (SIGKILL: an outage, not a graceful stop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PySink {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn read_records(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("sink records are JSON lines"))
        .collect()
}

/// All spans of recorded requests, flattened.
pub fn spans_of(records: &[Json]) -> Vec<Json> {
    let mut out = Vec::new();
    for r in records {
        for rs in r["request"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

pub fn checkout_resource() -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("process.pid", 4242i64),
            KeyValue::new("k8s.namespace.name", "shop"),
        ],
    })
}

/// A span with every field set, distinct per `i`.
pub fn full_span(i: u8, resource: &Arc<Resource>) -> Span {
    Span {
        trace_id: TraceId([
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, i,
        ]),
        span_id: SpanId([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, i]),
        parent_span_id: Some(SpanId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, i])),
        trace_state: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into(),
        flags: FLAG_SAMPLED,
        name: format!("GET /users/{{id}} #{i}"),
        kind: SpanKind::Server,
        start_unix_nanos: 1_700_000_000_123_456_789 + u64::from(i),
        end_unix_nanos: 1_700_000_000_126_656_789 + u64::from(i),
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 503i64),
            KeyValue::new("network.peer.port", -1i64),
            KeyValue::new("sonde.sampled", true),
            KeyValue::new("sonde.ratio", 0.25f64),
            KeyValue::new(
                "http.request.header.accept",
                vec!["text/html".to_owned(), "*/*".to_owned()],
            ),
        ],
        status: Status {
            code: StatusCode::Error,
            message: "upstream unavailable".into(),
        },
        resource: Arc::clone(resource),
    }
}

/// A small span for volume tests: id from `n`.
pub fn numbered_span(n: u32, resource: &Arc<Resource>) -> Span {
    let b = n.to_be_bytes();
    Span {
        trace_id: TraceId([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, b[0], b[1], b[2], b[3]]),
        span_id: SpanId([2, 2, 2, 2, b[0], b[1], b[2], b[3]]),
        parent_span_id: None,
        trace_state: String::new(),
        flags: FLAG_SAMPLED,
        name: format!("span {n}"),
        kind: SpanKind::Client,
        start_unix_nanos: 1_700_000_000_000_000_000,
        end_unix_nanos: 1_700_000_000_001_000_000,
        attributes: vec![],
        status: Status::default(),
        resource: Arc::clone(resource),
    }
}

/// The span id (hex) [`numbered_span`] gives `n`.
pub fn numbered_span_id(n: u32) -> String {
    let b = n.to_be_bytes();
    SpanId([2, 2, 2, 2, b[0], b[1], b[2], b[3]]).to_string()
}

/// What the sink must have decoded for [`full_span`] (protobuf JSON mapping, hex ids).
pub fn expected_full_span_json(i: u8) -> Json {
    serde_json::json!({
        "traceId": format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}"),
        "spanId": format!("00f067aa0ba902{i:02x}"),
        "parentSpanId": format!("11223344556677{i:02x}"),
        "traceState": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "flags": 1,
        "name": format!("GET /users/{{id}} #{i}"),
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": (1_700_000_000_123_456_789u64 + u64::from(i)).to_string(),
        "endTimeUnixNano": (1_700_000_000_126_656_789u64 + u64::from(i)).to_string(),
        "attributes": [
            {"key": "http.request.method", "value": {"stringValue": "GET"}},
            {"key": "http.response.status_code", "value": {"intValue": "503"}},
            {"key": "network.peer.port", "value": {"intValue": "-1"}},
            {"key": "sonde.sampled", "value": {"boolValue": true}},
            {"key": "sonde.ratio", "value": {"doubleValue": 0.25}},
            {"key": "http.request.header.accept", "value": {"arrayValue": {"values": [
                {"stringValue": "text/html"}, {"stringValue": "*/*"}
            ]}}}
        ],
        "status": {"code": "STATUS_CODE_ERROR", "message": "upstream unavailable"}
    })
}

pub fn expected_checkout_resource_json() -> Json {
    serde_json::json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout"}},
        {"key": "process.pid", "value": {"intValue": "4242"}},
        {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}}
    ]})
}

/// An exporter configuration for a sink at `endpoint`.
pub fn config(protocol: Protocol, endpoint: String, compression: Compression) -> ExportConfig {
    let mut c = ExportConfig::resolve(ExportFileConfig {
        endpoint: Some(endpoint),
        protocol: Some(protocol),
        compression: Some(compression),
        ..Default::default()
    })
    .unwrap();
    c.scope_version = SCOPE_VERSION.into();
    c
}

/// Fast batching and retries for tests (the logic is the same at any scale).
pub fn fast(mut c: ExportConfig) -> ExportConfig {
    c.batch = BatchConfig {
        schedule_delay: Duration::from_millis(50),
        export_timeout: Duration::from_secs(20),
        max_queue_size: 256,
        max_export_batch_size: 64,
        max_concurrent_exports: BatchConfig::default().max_concurrent_exports,
    };
    c.retry = RetryConfig {
        enabled: true,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    c.timeout = Duration::from_secs(5);
    c
}

pub fn start_pipeline(c: &ExportConfig) -> ExportPipeline {
    ExportPipeline::start(
        Sink::Otlp(OtlpClient::new(c).expect("client builds")),
        PipelineOptions::from(c),
    )
}

/// A CA, a server certificate for 127.0.0.1/localhost, and a client certificate, as files.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn make_pki(dir: &Path) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sonde test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sonde test");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["sonde-agent".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    TestPki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}
