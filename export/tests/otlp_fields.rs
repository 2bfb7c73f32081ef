//! Every span field, as a real OTLP receiver decodes it: over gRPC and HTTP/protobuf, with and
//! without gzip, over plain TCP, TLS and mutual TLS. The sinks decode with the official
//! `opentelemetry-proto` Python package.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value as Json, json};
use sonde_export::{
    config::{Compression, ExportConfig, Protocol},
    span::{KeyValue, Resource},
    stats::{DropReason, RequestOutcome},
};

enum Tls<'a> {
    None,
    /// Server certificate verified against the test CA.
    Server(&'a TestPki),
    /// And a client certificate the server requires.
    Mutual(&'a TestPki),
}

/// Sends three spans of two resources through a pipeline to a fresh sink and returns the one
/// request the sink recorded.
async fn roundtrip(kind: SinkKind, compression: Compression, tls: Tls<'_>) -> Json {
    let dir = temp_dir("fields");
    let sink_tls = match &tls {
        Tls::None => None,
        Tls::Server(pki) | Tls::Mutual(pki) => Some(SinkTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: matches!(tls, Tls::Mutual(_)).then(|| pki.ca.clone()),
        }),
    };
    let sink = PySink::start_with(kind, &dir, "", 0, sink_tls.as_ref());
    let scheme = if sink_tls.is_some() { "https" } else { "http" };
    let protocol = match kind {
        SinkKind::Grpc => Protocol::Grpc,
        SinkKind::Http => Protocol::HttpProtobuf,
    };
    let mut c = fast(config(protocol, sink.url(scheme), compression));
    c.headers = vec![("x-tenant".into(), "acme".into())];
    match tls {
        Tls::None => {}
        Tls::Server(pki) => c.tls.certificate = Some(pki.ca.clone()),
        Tls::Mutual(pki) => {
            c.tls.certificate = Some(pki.ca.clone());
            c.tls.client_certificate = Some(pki.client_cert.clone());
            c.tls.client_key = Some(pki.client_key.clone());
        }
    }
    let pipeline = start_pipeline(&c);
    let queue = pipeline.queue();
    let checkout = checkout_resource();
    let billing = Arc::new(Resource {
        attributes: vec![KeyValue::new("service.name", "billing")],
    });
    queue.try_send(full_span(1, &checkout)).unwrap();
    queue.try_send(full_span(3, &billing)).unwrap();
    // Equal to `checkout` but another Arc: must land in the same ResourceSpans.
    queue.try_send(full_span(2, &checkout_resource())).unwrap();
    pipeline.force_flush().await;
    let stats = pipeline.shutdown(PATIENCE).await;
    assert_eq!(stats.exported, 3, "{stats:?}");
    assert_eq!(stats.created, 3);
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(stats.requests(RequestOutcome::Success), 1);
    assert!(stats.is_balanced());

    let records = sink.wait_requests(1).await;
    assert_eq!(records.len(), 1, "one batch, one request: {records:?}");
    let record = records.into_iter().next().unwrap();
    check_request(&record["request"]);
    record
}

fn check_request(request: &Json) {
    let rs = request["resourceSpans"].as_array().expect("resourceSpans");
    assert_eq!(rs.len(), 2, "grouped by resource: {request:#}");
    assert_eq!(rs[0]["resource"], expected_checkout_resource_json());
    assert_eq!(
        rs[1]["resource"],
        json!({"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]})
    );
    for r in rs {
        let scopes = r["scopeSpans"].as_array().unwrap();
        assert_eq!(scopes.len(), 1);
        assert_eq!(
            scopes[0]["scope"],
            json!({"name": "sonde", "version": SCOPE_VERSION})
        );
    }
    assert_eq!(
        rs[0]["scopeSpans"][0]["spans"],
        json!([expected_full_span_json(1), expected_full_span_json(2)])
    );
    assert_eq!(
        rs[1]["scopeSpans"][0]["spans"],
        json!([expected_full_span_json(3)])
    );
}

fn check_http_headers(record: &Json, gzip: bool) {
    assert_eq!(record["path"], "/v1/traces");
    let h = &record["headers"];
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-tenant"], "acme");
    assert!(
        h["user-agent"].as_str().unwrap().starts_with("sonde/"),
        "{h}"
    );
    if gzip {
        assert_eq!(h["content-encoding"], "gzip");
    } else {
        assert!(h.get("content-encoding").is_none(), "{h}");
    }
}

fn check_grpc_metadata(record: &Json) {
    let m = &record["metadata"];
    assert_eq!(m["x-tenant"], "acme");
    assert!(
        m["user-agent"].as_str().unwrap().starts_with("sonde/"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_every_field() {
    let record = roundtrip(SinkKind::Grpc, Compression::None, Tls::None).await;
    check_grpc_metadata(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_every_field() {
    let record = roundtrip(SinkKind::Grpc, Compression::Gzip, Tls::None).await;
    check_grpc_metadata(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_every_field() {
    let record = roundtrip(SinkKind::Http, Compression::None, Tls::None).await;
    check_http_headers(&record, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_every_field() {
    let record = roundtrip(SinkKind::Http, Compression::Gzip, Tls::None).await;
    check_http_headers(&record, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_with_configured_ca() {
    let pki = make_pki(&temp_dir("pki"));
    let record = roundtrip(SinkKind::Grpc, Compression::Gzip, Tls::Server(&pki)).await;
    check_grpc_metadata(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mutual_tls() {
    let pki = make_pki(&temp_dir("pki"));
    roundtrip(SinkKind::Grpc, Compression::None, Tls::Mutual(&pki)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tls_with_configured_ca() {
    let pki = make_pki(&temp_dir("pki"));
    let record = roundtrip(SinkKind::Http, Compression::Gzip, Tls::Server(&pki)).await;
    check_http_headers(&record, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mutual_tls() {
    let pki = make_pki(&temp_dir("pki"));
    roundtrip(SinkKind::Http, Compression::None, Tls::Mutual(&pki)).await;
}

/// Without the test CA the server certificate must not be accepted: nothing arrives, and the
/// batch is dropped as retries exhausted (handshake failures are connection errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rejects_an_unknown_server_certificate() {
    let pki = make_pki(&temp_dir("pki"));
    for (kind, protocol) in [
        (SinkKind::Grpc, Protocol::Grpc),
        (SinkKind::Http, Protocol::HttpProtobuf),
    ] {
        let dir = temp_dir("tls-unknown");
        let tls = SinkTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: None,
        };
        let sink = PySink::start_with(kind, &dir, "", 0, Some(&tls));
        let mut c = fast(config(protocol, sink.url("https"), Compression::None));
        c.batch.export_timeout = std::time::Duration::from_millis(300);
        let pipeline = start_pipeline(&c);
        pipeline
            .queue()
            .try_send(full_span(1, &checkout_resource()))
            .unwrap();
        pipeline.force_flush().await;
        let stats = pipeline.shutdown(PATIENCE).await;
        assert_eq!(stats.exported, 0, "{kind:?}: {stats:?}");
        assert_eq!(
            stats.dropped(DropReason::RetriesExhausted),
            1,
            "{kind:?}: {stats:?}"
        );
        assert_eq!(stats.requests(RequestOutcome::Success), 0);
        assert!(stats.requests(RequestOutcome::RetryableError) >= 1);
        assert!(stats.is_balanced());
        assert!(sink.records().is_empty(), "{kind:?}: nothing may arrive");
    }
}

/// A configuration straight from the standard variables reaches the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_from_env_variables() {
    let dir = temp_dir("env");
    let sink = PySink::start(SinkKind::Http, &dir, "");
    let base = sink.url("http");
    let env = |name: &str| match name {
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_owned()),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(base.clone()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-tenant=acme%2Cco,x-other=1".to_owned()),
        "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("gzip".to_owned()),
        "OTEL_BSP_SCHEDULE_DELAY" => Some("20".to_owned()),
        _ => None,
    };
    let c = ExportConfig::from_env(env).unwrap();
    let pipeline = sonde_export::batch::ExportPipeline::otlp(&c).unwrap();
    pipeline
        .queue()
        .try_send(full_span(7, &checkout_resource()))
        .unwrap();
    // No flush: the schedule delay alone must send it.
    let records = sink.wait_requests(1).await;
    let stats = pipeline.shutdown(PATIENCE).await;
    assert_eq!(stats.exported, 1);
    assert_eq!(records[0]["path"], "/v1/traces");
    assert_eq!(records[0]["headers"]["x-tenant"], "acme,co");
    assert_eq!(records[0]["headers"]["content-encoding"], "gzip");
    assert_eq!(spans_of(&records), vec![expected_full_span_json(7)]);
    assert_eq!(
        records[0]["request"]["resourceSpans"][0]["scopeSpans"][0]["scope"]["version"],
        env!("CARGO_PKG_VERSION")
    );
}

/// A TCP relay that counts the bytes clients send through it.
async fn counting_relay(target: u16) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (port, sent)
}

/// grpcio hides a request's `grpc-encoding`, so gzip over gRPC is checked on the wire: the
/// same spans take far fewer bytes, and the receiver still decodes every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_shrinks_the_bytes_on_the_wire() {
    let dir = temp_dir("gzip-wire");
    let sink = PySink::start(SinkKind::Grpc, &dir, "");
    let mut bytes = Vec::new();
    for compression in [Compression::None, Compression::Gzip] {
        let (relay, sent) = counting_relay(sink.port).await;
        let c = fast(config(
            Protocol::Grpc,
            format!("http://127.0.0.1:{relay}"),
            compression,
        ));
        let pipeline = start_pipeline(&c);
        let r = checkout_resource();
        for i in 0..50 {
            pipeline.queue().try_send(full_span(i, &r)).unwrap();
        }
        pipeline.force_flush().await;
        let stats = pipeline.shutdown(PATIENCE).await;
        assert_eq!(stats.exported, 50, "{compression:?}");
        bytes.push(sent.load(std::sync::atomic::Ordering::Relaxed));
    }
    let (plain, gzip) = (bytes[0], bytes[1]);
    assert!(gzip * 3 < plain, "gzip sent {gzip} bytes, plain {plain}");
    let spans = spans_of(&sink.wait_requests(2).await);
    assert_eq!(spans.len(), 100);
    assert_eq!(
        spans[50],
        expected_full_span_json(0),
        "decoded intact after gzip"
    );
}
