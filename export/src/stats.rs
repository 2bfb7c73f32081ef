//! Export self-telemetry: what happened to every span handed to the exporter.
//!
//! Plain atomics, so the producer's hot path pays a few relaxed increments and any thread can
//! read them at any time. The accounting is closed: every span counted in `created` is, at a
//! quiescent moment, in exactly one of `exported`, `dropped{reason}`, `queue_len` or
//! `in_flight` ([`StatsSnapshot::is_balanced`]). Nothing is lost silently.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Why spans were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue was at its bound when the pipeline offered the span.
    QueueFull,
    /// The receiver accepted the request but rejected these spans (OTLP partial success).
    Rejected,
    /// The receiver answered with a non-retryable error (or a line sink failed to write).
    PermanentError,
    /// Retryable failures went on until the export timeout ran out.
    RetriesExhausted,
    /// Still queued or failing when the shutdown deadline passed, or offered after shutdown.
    Shutdown,
    /// Not sampled: the head decision (parent's flag, ratio, rule, rate limit) said drop and
    /// no tail rule (error, slow) kept it. Counted in the span metrics all the same.
    SampledOut,
    /// Dropped by a privacy rule (`[privacy] drop_routes`) before export.
    Policy,
}

impl DropReason {
    pub const ALL: [Self; 7] = [
        Self::QueueFull,
        Self::Rejected,
        Self::PermanentError,
        Self::RetriesExhausted,
        Self::Shutdown,
        Self::SampledOut,
        Self::Policy,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::PermanentError => "permanent_error",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Shutdown => "shutdown",
            Self::SampledOut => "sampled_out",
            Self::Policy => "policy",
        }
    }
}

/// How one export request (one attempt) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    Success,
    /// Accepted with some spans rejected.
    PartialSuccess,
    RetryableError,
    PermanentError,
}

impl RequestOutcome {
    pub const ALL: [Self; 4] = [
        Self::Success,
        Self::PartialSuccess,
        Self::RetryableError,
        Self::PermanentError,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::PartialSuccess => "partial_success",
            Self::RetryableError => "retryable_error",
            Self::PermanentError => "permanent_error",
        }
    }
}

/// Upper bounds (seconds) of the export latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts; the last slot is the `+Inf` overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut acc = 0;
        for (slot, b) in cumulative.iter_mut().zip(&self.buckets) {
            acc += b.load(Relaxed);
            *slot = acc;
        }
        HistogramSnapshot {
            bounds: LATENCY_BUCKETS.to_vec(),
            cumulative: cumulative.to_vec(),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count: self.count.load(Relaxed),
        }
    }
}

/// A histogram read out: `cumulative[i]` counts observations `<= bounds[i]`, and the last
/// element (one past `bounds`) counts all of them (`le="+Inf"`).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// The live counters. Shared (`Arc`) between the queue handles, the worker and readers.
#[derive(Debug, Default)]
pub struct ExportStats {
    created: AtomicU64,
    exported: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    retries: AtomicU64,
    /// Signed: the worker may take a span out before its producer counted it in (the
    /// producer increments after a successful send); reads clamp at zero.
    queue_len: AtomicI64,
    queue_peak: AtomicU64,
    queue_capacity: AtomicU64,
    in_flight: AtomicU64,
    requests: [AtomicU64; RequestOutcome::ALL.len()],
    latency: Histogram,
    /// Nanoseconds spent encoding export requests.
    encode_ns: AtomicU64,
}

fn drop_index(reason: DropReason) -> usize {
    DropReason::ALL
        .iter()
        .position(|&r| r == reason)
        .unwrap_or(0)
}

fn outcome_index(outcome: RequestOutcome) -> usize {
    RequestOutcome::ALL
        .iter()
        .position(|&o| o == outcome)
        .unwrap_or(0)
}

impl ExportStats {
    pub fn new(queue_capacity: usize) -> Self {
        let s = Self::default();
        s.queue_capacity.store(queue_capacity as u64, Relaxed);
        s
    }

    // --- producer side -------------------------------------------------------------------

    pub(crate) fn record_offered(&self) {
        self.created.fetch_add(1, Relaxed);
    }

    /// A span went into the queue; returns the queue length it observed.
    pub(crate) fn record_enqueued(&self) -> i64 {
        let n = self.queue_len.fetch_add(1, Relaxed) + 1;
        // Read first: a new peak is rare, and a plain load keeps the cache line shared.
        if n > 0 && n as u64 > self.queue_peak.load(Relaxed) {
            self.queue_peak.fetch_max(n as u64, Relaxed);
        }
        n
    }

    // --- worker side ---------------------------------------------------------------------

    /// `n` spans left the queue to form the batch being exported.
    pub(crate) fn record_dequeued(&self, n: usize) {
        self.in_flight.fetch_add(n as u64, Relaxed);
        self.queue_len.fetch_sub(n as i64, Relaxed);
    }

    /// The in-flight batch of `n` spans ended: `exported` were delivered, the rest are
    /// accounted as dropped by the caller.
    pub(crate) fn record_batch_done(&self, n: usize, exported: u64) {
        self.exported.fetch_add(exported, Relaxed);
        self.in_flight.fetch_sub(n as u64, Relaxed);
    }

    /// Spans dropped before they reached the queue (`created` is counted by the caller).
    pub(crate) fn record_dropped(&self, reason: DropReason, n: u64) {
        self.dropped[drop_index(reason)].fetch_add(n, Relaxed);
    }

    pub(crate) fn record_request(&self, outcome: RequestOutcome, latency: Duration) {
        self.requests[outcome_index(outcome)].fetch_add(1, Relaxed);
        self.latency.observe(latency);
    }

    pub(crate) fn record_encode(&self, took: Duration) {
        self.encode_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    // --- readers -------------------------------------------------------------------------

    pub fn queue_len(&self) -> u64 {
        self.queue_len.load(Relaxed).max(0) as u64
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[drop_index(reason)].load(Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            created: self.created.load(Relaxed),
            exported: self.exported.load(Relaxed),
            dropped: DropReason::ALL.map(|r| (r, self.dropped(r))),
            retries: self.retries.load(Relaxed),
            queue_len: self.queue_len(),
            queue_peak: self.queue_peak.load(Relaxed),
            queue_capacity: self.queue_capacity.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            requests: RequestOutcome::ALL
                .map(|o| (o, self.requests[outcome_index(o)].load(Relaxed))),
            latency: self.latency.snapshot(),
            encode_ns: self.encode_ns.load(Relaxed),
        }
    }
}

/// A reading of all counters. Taken field by field, so exact relations between fields hold
/// only when nothing moves (no producer offering, worker idle).
#[derive(Clone, Debug, PartialEq)]
pub struct StatsSnapshot {
    pub created: u64,
    pub exported: u64,
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
    pub retries: u64,
    pub queue_len: u64,
    pub queue_peak: u64,
    pub queue_capacity: u64,
    pub in_flight: u64,
    pub requests: [(RequestOutcome, u64); RequestOutcome::ALL.len()],
    pub latency: HistogramSnapshot,
    pub encode_ns: u64,
}

impl StatsSnapshot {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    pub fn requests(&self, outcome: RequestOutcome) -> u64 {
        self.requests
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }

    /// `created == exported + dropped + queued + in_flight`.
    pub fn is_balanced(&self) -> bool {
        self.created == self.exported + self.dropped_total() + self.queue_len + self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_balances_through_a_batch_lifecycle() {
        let s = ExportStats::new(8);
        for _ in 0..5 {
            s.record_offered();
            s.record_enqueued();
        }
        s.record_offered();
        s.record_dropped(DropReason::QueueFull, 1);
        assert!(s.snapshot().is_balanced());
        s.record_dequeued(4);
        let snap = s.snapshot();
        assert_eq!((snap.queue_len, snap.in_flight, snap.queue_peak), (1, 4, 5));
        assert!(snap.is_balanced());
        s.record_dropped(DropReason::Rejected, 1);
        s.record_batch_done(4, 3);
        let snap = s.snapshot();
        assert_eq!(snap.created, 6);
        assert_eq!(snap.exported, 3);
        assert_eq!(snap.dropped(DropReason::QueueFull), 1);
        assert_eq!(snap.dropped(DropReason::Rejected), 1);
        assert_eq!(snap.dropped_total(), 2);
        assert!(snap.is_balanced());
    }

    #[test]
    fn queue_gauge_clamps_a_transient_negative() {
        let s = ExportStats::new(8);
        s.record_dequeued(1); // worker took it before the producer counted it
        assert_eq!(s.queue_len(), 0);
        s.record_enqueued();
        assert_eq!(s.queue_len(), 0);
        assert_eq!(s.snapshot().queue_peak, 0);
    }

    #[test]
    fn histogram_is_cumulative_with_inf_bucket() {
        let s = ExportStats::new(1);
        s.record_request(RequestOutcome::Success, Duration::from_micros(500));
        s.record_request(RequestOutcome::Success, Duration::from_millis(30));
        s.record_request(RequestOutcome::RetryableError, Duration::from_secs(60));
        let h = s.snapshot().latency;
        assert_eq!(h.count, 3);
        assert_eq!(h.cumulative[0], 1); // <= 1ms
        assert_eq!(h.cumulative[5], 2); // <= 50ms
        assert_eq!(h.cumulative[LATENCY_BUCKETS.len() - 1], 2); // <= 10s
        assert_eq!(h.cumulative[LATENCY_BUCKETS.len()], 3); // +Inf
        assert!((h.sum_seconds - 60.0305).abs() < 1e-9);
        let snap = s.snapshot();
        assert_eq!(snap.requests(RequestOutcome::Success), 2);
        assert_eq!(snap.requests(RequestOutcome::RetryableError), 1);
    }

    #[test]
    fn renders_all_families() {
        let s = ExportStats::new(2048);
        s.record_offered();
        s.record_dropped(DropReason::QueueFull, 1);
        let mut w = crate::prom::Writer::new();
        s.render_prometheus(&mut w);
        let text = w.finish();
        assert!(text.contains("sonde_export_spans_dropped_total{reason=\"queue_full\"} 1\n"));
        assert!(text.contains("sonde_export_spans_created_total 1\n"));
        assert!(text.contains("sonde_export_queue_capacity_spans 2048\n"));
        assert!(text.contains("sonde_export_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("# TYPE sonde_export_requests_total counter\n"));
    }
}
