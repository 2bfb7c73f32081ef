//! Collector outage: the receiver dies while spans flow and comes back on the same port.
//! Queued spans (within the bound) arrive after the restart, the overflow is counted as
//! dropped, the queue never exceeds its bound, and every span is accounted for exactly.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use sonde_export::{
    config::{Compression, Protocol},
    stats::{DropReason, RequestOutcome},
};

const QUEUE: usize = 64;
const BATCH: usize = 16;
const TOTAL: u32 = 600;
const KILL_AT: u32 = 100;
const RESTART_AT: u32 = 400;

async fn outage(kind: SinkKind) {
    let protocol = match kind {
        SinkKind::Grpc => Protocol::Grpc,
        SinkKind::Http => Protocol::HttpProtobuf,
    };
    let dir_a = temp_dir("outage-a");
    let dir_b = temp_dir("outage-b");
    let mut sink = PySink::start(kind, &dir_a, "");
    let port = sink.port;
    let mut c = fast(config(protocol, sink.url("http"), Compression::None));
    c.batch.max_queue_size = QUEUE;
    c.batch.max_export_batch_size = BATCH;
    c.batch.schedule_delay = Duration::from_millis(20);
    // Longer than the outage: the batch held during it must survive to the restart.
    c.batch.export_timeout = Duration::from_secs(120);
    let slots = c.batch.max_concurrent_exports as u64;
    assert!(
        slots > 1,
        "the outage should hold several batches in flight"
    );
    let pipeline = start_pipeline(&c);
    let queue = pipeline.queue();
    let stats = pipeline.stats();
    let resource = checkout_resource();

    let mut refused_during_outage = 0u64;
    // Refusals go on a little after the restart, until the worker's next retry finds it.
    let mut refused = 0u64;
    let mut restarted = None;
    for i in 0..TOTAL {
        if i == KILL_AT {
            // Everything so far delivered, so the kill interrupts no request.
            eventually("the first spans to be exported", || {
                (stats.snapshot().exported == u64::from(KILL_AT)).then_some(())
            })
            .await;
            sink.kill();
        }
        if i == RESTART_AT {
            eventually("the worker to be retrying", || {
                (stats.snapshot().requests(RequestOutcome::RetryableError) >= 2).then_some(())
            })
            .await;
            // Quiescent: the producer pauses and every export slot is retrying a batch.
            let s = stats.snapshot();
            assert!(s.is_balanced(), "during the outage: {s:?}");
            // At most one batch per slot held (timer-triggered ones may be smaller than BATCH).
            assert!((1..=slots * BATCH as u64).contains(&s.in_flight), "{s:?}");
            assert_eq!(
                s.queue_len, QUEUE as u64,
                "queue filled to its bound: {s:?}"
            );
            restarted = Some(PySink::start_with(kind, &dir_b, "", port, None));
        }
        let outcome = queue.try_send(numbered_span(i, &resource));
        if let Err(reason) = outcome {
            assert_eq!(reason, DropReason::QueueFull, "span {i}");
            assert!(i >= KILL_AT, "span {i} refused while the receiver was up");
            refused += 1;
            if i < RESTART_AT {
                refused_during_outage += 1;
            }
        }
        assert!(
            stats.queue_len() <= QUEUE as u64,
            "queue above its bound: {}",
            stats.queue_len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let restarted = restarted.unwrap();

    eventually("the queue to drain after the restart", || {
        let s = stats.snapshot();
        (s.queue_len == 0 && s.in_flight == 0 && s.exported + s.dropped_total() == s.created)
            .then_some(())
    })
    .await;
    let s = pipeline.shutdown(PATIENCE).await;

    assert_eq!(s.created, u64::from(TOTAL));
    assert_eq!(s.exported + s.dropped_total(), s.created, "{s:?}");
    assert!(s.is_balanced());
    // Only the queue bound dropped anything: no batch was lost to the outage.
    assert_eq!(s.dropped_total(), s.dropped(DropReason::QueueFull), "{s:?}");
    assert_eq!(s.dropped(DropReason::QueueFull), refused);
    // 300 spans offered while down; at most the queue and a batch per slot could be held.
    let outage_spans = u64::from(RESTART_AT - KILL_AT);
    assert!(
        refused_during_outage >= outage_spans - QUEUE as u64 - slots * BATCH as u64,
        "{refused_during_outage} refused of {outage_spans}"
    );
    assert!(
        s.queue_peak <= QUEUE as u64,
        "peak {} above {QUEUE}",
        s.queue_peak
    );
    assert_eq!(s.queue_peak, QUEUE as u64, "the queue did fill up");
    assert!(s.retries >= 2);

    // What the two receiver lives got, together, is exactly what was counted as exported.
    let mut received = spans_of(&read_records(&sink.record));
    received.extend(spans_of(&restarted.records()));
    let ids: HashSet<String> = received
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len() as u64,
        s.exported,
        "distinct spans received = exported"
    );
    assert_eq!(received.len(), ids.len(), "no span delivered twice");
    // The spans held during the outage arrived after the restart.
    let after_restart: HashSet<String> = spans_of(&restarted.records())
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_owned())
        .collect();
    let first_held = numbered_span_id(KILL_AT);
    assert!(
        after_restart.contains(&first_held),
        "the batch retried through the outage arrived"
    );
    assert!(
        after_restart.len() > QUEUE,
        "held spans delivered after restart: {}",
        after_restart.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_collector_outage() {
    outage(SinkKind::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_collector_outage() {
    outage(SinkKind::Http).await;
}
