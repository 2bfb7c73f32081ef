//! Retry, throttling, permanent errors and partial success against real receivers that answer
//! as scripted (see tests/peers/otlp_*_sink.py).

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use serde_json::Value as Json;
use sonde_export::{
    batch::ExportPipeline,
    config::{Compression, ExportConfig, Protocol},
    stats::{DropReason, RequestOutcome, StatsSnapshot},
};

fn protocol(kind: SinkKind) -> Protocol {
    match kind {
        SinkKind::Grpc => Protocol::Grpc,
        SinkKind::Http => Protocol::HttpProtobuf,
    }
}

/// Starts a sink with `script` and a pipeline to it (tweaked by `tune`), sends `n` spans as one
/// batch, flushes, shuts down; returns the final counters and what the sink recorded.
async fn run(
    kind: SinkKind,
    script: &str,
    n: u32,
    tune: impl FnOnce(&mut ExportConfig),
) -> (StatsSnapshot, Vec<Json>) {
    let dir = temp_dir("retry");
    let sink = PySink::start(kind, &dir, script);
    let mut c = fast(config(protocol(kind), sink.url("http"), Compression::None));
    tune(&mut c);
    let pipeline = start_pipeline(&c);
    let resource = checkout_resource();
    for i in 0..n {
        pipeline
            .queue()
            .try_send(numbered_span(i, &resource))
            .unwrap();
    }
    pipeline.force_flush().await;
    let stats = pipeline.shutdown(PATIENCE).await;
    assert!(stats.is_balanced(), "{stats:?}");
    assert_eq!(stats.created, u64::from(n));
    (stats, sink.records())
}

fn span_ids(record: &Json) -> HashSet<String> {
    spans_of(std::slice::from_ref(record))
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_owned())
        .collect()
}

fn arrival(record: &Json) -> f64 {
    record["time"].as_f64().unwrap()
}

/// Every request carried the same batch (a retry resends, it does not re-batch).
fn assert_same_batch(records: &[Json], n: u32) {
    let want: HashSet<String> = (0..n).map(numbered_span_id).collect();
    for r in records {
        assert_eq!(span_ids(r), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retryable_errors_then_success_exports_once() {
    let (stats, records) = run(SinkKind::Grpc, "unavailable,unavailable,ok", 5, |_| {}).await;
    assert_eq!(records.len(), 3);
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["unavailable", "unavailable", "ok"]);
    assert_same_batch(&records, 5);
    assert_eq!(stats.exported, 5);
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.requests(RequestOutcome::RetryableError), 2);
    assert_eq!(stats.requests(RequestOutcome::Success), 1);
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(stats.latency.count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_resource_exhausted_with_retry_info_waits_the_servers_delay() {
    // The backoff alone would retry after at most 20 ms; the server asks for 800 ms.
    let (stats, records) = run(SinkKind::Grpc, "exhausted_retry:0.8,ok", 3, |_| {}).await;
    assert_eq!(records.len(), 2);
    assert_same_batch(&records, 3);
    let waited = arrival(&records[1]) - arrival(&records[0]);
    assert!(
        waited >= 0.8,
        "retried after {waited:.3}s, before the server's 0.8s"
    );
    assert_eq!(stats.exported, 3);
    assert_eq!(stats.retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_with_retry_info_waits_the_servers_delay() {
    let (stats, records) = run(SinkKind::Grpc, "unavailable_retry:0.5,ok", 2, |_| {}).await;
    assert_eq!(records.len(), 2);
    let waited = arrival(&records[1]) - arrival(&records[0]);
    assert!(
        waited >= 0.5,
        "retried after {waited:.3}s, before the server's 0.5s"
    );
    assert_eq!(stats.exported, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_resource_exhausted_without_retry_info_is_permanent() {
    let (stats, records) = run(SinkKind::Grpc, "exhausted", 4, |_| {}).await;
    assert_eq!(records.len(), 1, "not retried");
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.dropped(DropReason::PermanentError), 4);
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.requests(RequestOutcome::PermanentError), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invalid_argument_is_dropped_and_later_batches_still_flow() {
    let dir = temp_dir("invalid");
    let sink = PySink::start(SinkKind::Grpc, &dir, "invalid,ok");
    let c = fast(config(Protocol::Grpc, sink.url("http"), Compression::None));
    let pipeline = start_pipeline(&c);
    let r = checkout_resource();
    for i in 0..3 {
        pipeline.queue().try_send(numbered_span(i, &r)).unwrap();
    }
    pipeline.force_flush().await;
    for i in 3..5 {
        pipeline.queue().try_send(numbered_span(i, &r)).unwrap();
    }
    pipeline.force_flush().await;
    let stats = pipeline.shutdown(PATIENCE).await;
    let records = sink.records();
    assert_eq!(records.len(), 2);
    assert_eq!(span_ids(&records[0]).len(), 3);
    assert_eq!(
        span_ids(&records[1]),
        HashSet::from([numbered_span_id(3), numbered_span_id(4)])
    );
    assert_eq!(stats.dropped(DropReason::PermanentError), 3);
    assert_eq!(stats.exported, 2);
    assert_eq!(stats.retries, 0);
    assert!(stats.is_balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_partial_success_counts_rejected() {
    let (stats, records) = run(SinkKind::Grpc, "partial:2", 5, |_| {}).await;
    assert_eq!(records.len(), 1);
    assert_eq!(stats.exported, 3);
    assert_eq!(stats.dropped(DropReason::Rejected), 2);
    assert_eq!(stats.dropped_total(), 2);
    assert_eq!(stats.requests(RequestOutcome::PartialSuccess), 1);
    assert_eq!(stats.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retries_stop_at_the_export_timeout() {
    let script = vec!["unavailable"; 500].join(",");
    let (stats, records) = run(SinkKind::Grpc, &script, 3, |c| {
        c.batch.export_timeout = Duration::from_millis(400);
    })
    .await;
    assert!(
        records.len() >= 2,
        "retried before giving up: {}",
        records.len()
    );
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.dropped(DropReason::RetriesExhausted), 3);
    assert_eq!(stats.retries + 1, records.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_delay_beyond_the_export_timeout_gives_up_at_once() {
    let (stats, records) = run(SinkKind::Grpc, "exhausted_retry:30", 2, |c| {
        c.batch.export_timeout = Duration::from_secs(5);
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(stats.dropped(DropReason::RetriesExhausted), 2);
    assert_eq!(stats.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_disabled_drops_on_the_first_retryable_error() {
    let (stats, records) = run(SinkKind::Http, "unavailable,ok", 2, |c| {
        c.retry.enabled = false;
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(stats.dropped(DropReason::RetriesExhausted), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_retry_after_is_honoured() {
    let (stats, records) = run(SinkKind::Http, "unavailable:1,ok", 3, |_| {}).await;
    assert_eq!(records.len(), 2);
    assert_same_batch(&records, 3);
    let waited = arrival(&records[1]) - arrival(&records[0]);
    assert!(
        waited >= 1.0,
        "retried after {waited:.3}s, before Retry-After: 1"
    );
    assert_eq!(stats.exported, 3);
    assert_eq!(stats.retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_and_502_are_retried_with_backoff() {
    let (stats, records) = run(
        SinkKind::Http,
        "too_many,bad_gateway,too_many:0,ok",
        4,
        |_| {},
    )
    .await;
    assert_eq!(records.len(), 4);
    assert_same_batch(&records, 4);
    assert_eq!(stats.exported, 4);
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.requests(RequestOutcome::RetryableError), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_is_permanent() {
    let (stats, records) = run(SinkKind::Http, "bad_request", 3, |_| {}).await;
    assert_eq!(records.len(), 1, "not retried");
    assert_eq!(stats.dropped(DropReason::PermanentError), 3);
    assert_eq!(stats.requests(RequestOutcome::PermanentError), 1);
    assert_eq!(stats.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_partial_success_counts_rejected() {
    let (stats, records) = run(SinkKind::Http, "partial:1", 4, |_| {}).await;
    assert_eq!(records.len(), 1);
    assert_eq!(stats.exported, 3);
    assert_eq!(stats.dropped(DropReason::Rejected), 1);
    assert_eq!(stats.requests(RequestOutcome::PartialSuccess), 1);
}

/// A shutdown deadline cuts a retry loop short: the batch counts as dropped by shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_ends_retries() {
    let dir = temp_dir("shutdown");
    let script = vec!["unavailable"; 1000].join(",");
    let sink = PySink::start(SinkKind::Grpc, &dir, &script);
    let mut c = fast(config(Protocol::Grpc, sink.url("http"), Compression::None));
    c.batch.export_timeout = Duration::from_secs(600);
    c.batch.max_export_batch_size = 4;
    let pipeline = start_pipeline(&c);
    let r = checkout_resource();
    for i in 0..10 {
        pipeline.queue().try_send(numbered_span(i, &r)).unwrap();
    }
    let stats = pipeline.stats();
    eventually("the worker to be retrying", || {
        (stats.snapshot().retries >= 2).then_some(())
    })
    .await;
    let final_stats = pipeline.shutdown(Duration::from_millis(300)).await;
    assert_eq!(final_stats.exported, 0);
    assert_eq!(
        final_stats.dropped(DropReason::Shutdown),
        10,
        "{final_stats:?}"
    );
    assert_eq!((final_stats.queue_len, final_stats.in_flight), (0, 0));
    assert!(final_stats.is_balanced());
}

/// After shutdown, offered spans are refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_offered_after_shutdown_are_counted() {
    let dir = temp_dir("after");
    let sink = PySink::start(SinkKind::Http, &dir, "");
    let c = fast(config(
        Protocol::HttpProtobuf,
        sink.url("http"),
        Compression::None,
    ));
    let pipeline = ExportPipeline::otlp(&c).unwrap();
    let queue = pipeline.queue();
    queue
        .try_send(numbered_span(1, &checkout_resource()))
        .unwrap();
    let stats = pipeline.shutdown(PATIENCE).await;
    assert_eq!(stats.exported, 1, "shutdown flushes what was queued");
    assert_eq!(
        queue.try_send(numbered_span(2, &checkout_resource())),
        Err(DropReason::Shutdown)
    );
    let after = queue.stats().snapshot();
    assert_eq!(after.created, 2);
    assert_eq!(after.dropped(DropReason::Shutdown), 1);
    assert!(after.is_balanced());
    assert_eq!(spans_of(&sink.records()).len(), 1);
}

/// Batches go out side by side, never more than `max_concurrent_exports` at once: a receiver
/// that holds every request for a while sees exactly that many in progress, and each span
/// arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_exported_concurrently_up_to_the_limit() {
    for limit in [1usize, 3] {
        let dir = temp_dir(&format!("concurrent-{limit}"));
        let sink = PySink::start(SinkKind::Grpc, &dir, &["hold:1.5"; 6].join(","));
        let mut c = fast(config(Protocol::Grpc, sink.url("http"), Compression::None));
        c.batch.max_export_batch_size = 2;
        c.batch.max_concurrent_exports = limit;
        let pipeline = start_pipeline(&c);
        let r = checkout_resource();
        for i in 0..12 {
            pipeline.queue().try_send(numbered_span(i, &r)).unwrap();
        }
        pipeline.force_flush().await;
        let stats = pipeline.shutdown(PATIENCE).await;
        let records = sink.records();
        assert_eq!(records.len(), 6, "limit {limit}");
        let most = records
            .iter()
            .map(|r| r["in_progress"].as_u64().unwrap())
            .max()
            .unwrap();
        assert_eq!(most, limit as u64, "limit {limit}: {records:?}");
        let mut seen = HashSet::new();
        for r in &records {
            for id in span_ids(r) {
                assert!(seen.insert(id), "a span was sent twice");
            }
        }
        assert_eq!(seen, (0..12).map(numbered_span_id).collect());
        assert_eq!((stats.exported, stats.dropped_total()), (12, 0));
        assert!(stats.is_balanced(), "{stats:?}");
    }
}
