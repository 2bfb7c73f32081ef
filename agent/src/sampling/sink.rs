//! The stage between span building and every output: span metrics (from every span), the
//! privacy policy's route drops, head and tail sampling, then the deny list and redaction on
//! what is kept. Spans not kept are reported to the output ([`SpanSink::not_sent`]) so that
//! the export counters still add up.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use sonde_export::{
    metrics::{Exemplar, Point, SpanMetrics},
    span::{KeyValue, Span},
    stats::DropReason,
};

use super::{
    Sampler, SamplingConfig, SamplingStats, TailBuffer, TailOutcome,
    points::{Peers, points_of},
};
use crate::{clock::monotonic_ns, privacy::Policy, span::SpanSink};

struct Held {
    span: Span,
    points: Vec<Point>,
}

/// Wraps the output `O`.
pub struct PolicySink<O: SpanSink> {
    inner: O,
    sampler: Sampler,
    tail: TailBuffer<Held>,
    tail_on: bool,
    policy: Policy,
    metrics: Option<Arc<SpanMetrics>>,
    peers: Peers,
    stats: Arc<SamplingStats>,
}

impl<O: SpanSink> PolicySink<O> {
    pub fn new(
        inner: O,
        config: SamplingConfig,
        policy: Policy,
        metrics: Option<Arc<SpanMetrics>>,
    ) -> Self {
        Self {
            inner,
            tail: TailBuffer::new(config.tail_buffer_spans, config.tail_wait),
            tail_on: config.keep_errors || config.keep_slower_than.is_some(),
            sampler: Sampler::new(config),
            policy,
            metrics,
            peers: Peers::default(),
            stats: Arc::new(SamplingStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<SamplingStats> {
        Arc::clone(&self.stats)
    }

    pub fn inner(&self) -> &O {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// Drops (and counts) what the tail still holds: call once, when the capture stopped.
    pub fn finish(&mut self) {
        let held = self.tail.drain();
        self.stats
            .count_tail(TailOutcome::Shutdown, held.len() as u64);
        for _ in held {
            self.inner.not_sent(DropReason::SampledOut);
        }
        self.stats.held.store(0, Relaxed);
    }

    fn record(&mut self, span: &Span, points: &[Point], kept: bool) {
        if points.is_empty() {
            return;
        }
        // The metrics' resource leaves the node too: the policy applies to it.
        let resource = self.policy.resource(&span.resource);
        if let Some(m) = &self.metrics {
            for p in points {
                let e = kept.then(|| exemplar(span, p));
                m.record(p, &resource, e);
            }
        }
    }

    fn send(&mut self, mut span: Span, points: &[Point], tail: Option<TailOutcome>, late: bool) {
        if let Some(t) = tail.and_then(TailOutcome::attr) {
            span.attributes
                .push(KeyValue::new("sonde.sampling.tail", t));
        }
        if late && let Some(m) = &self.metrics {
            for p in points {
                m.exemplar(p, exemplar(&span, p));
            }
        }
        self.policy.apply(&mut span);
        self.inner.span(span);
    }

    fn dropped(&mut self, n: usize) {
        for _ in 0..n {
            self.inner.not_sent(DropReason::SampledOut);
        }
    }
}

fn exemplar(span: &Span, p: &Point) -> Exemplar {
    Exemplar {
        trace_id: span.trace_id,
        span_id: span.span_id,
        value: p.value,
        unix_nanos: span.end_unix_nanos,
    }
}

impl<O: SpanSink> SpanSink for PolicySink<O> {
    fn span(&mut self, span: Span) {
        let now = monotonic_ns();
        self.peers.server_seen(&span);
        let mut points = match self.metrics {
            Some(_) => points_of(&span, &self.peers),
            None => Vec::new(),
        };
        for p in &mut points {
            for (_, v) in &mut p.attributes {
                self.policy.redact_str(v);
            }
        }
        if self.policy.drops(&span) {
            self.record(&span, &points, false);
            self.stats.policy_dropped.fetch_add(1, Relaxed);
            self.inner.not_sent(DropReason::Policy);
            return;
        }
        let (sampled, by) = self.sampler.head(&span, now);
        self.stats.count_head(by, sampled);
        if sampled {
            self.record(&span, &points, true);
            self.send(span, &points, None, false);
            return;
        }
        self.record(&span, &points, false);
        if !self.tail_on {
            self.inner.not_sent(DropReason::SampledOut);
            return;
        }
        if let Some(reason) = self.sampler.tail_reason(&span) {
            self.stats.count_tail(reason, 1);
            let held = self.tail.keep(span.trace_id, now);
            self.stats
                .count_tail(TailOutcome::KeptTrace, held.len() as u64);
            for h in held {
                self.send(h.span, &h.points, Some(TailOutcome::KeptTrace), true);
            }
            self.send(span, &points, Some(reason), true);
        } else if self.tail.is_kept(&span.trace_id, now) {
            self.stats.count_tail(TailOutcome::KeptTrace, 1);
            self.send(span, &points, Some(TailOutcome::KeptTrace), true);
        } else {
            let trace = span.trace_id;
            let evicted = self.tail.hold(trace, Held { span, points }, now);
            self.stats
                .count_tail(TailOutcome::BufferFull, evicted.len() as u64);
            self.dropped(evicted.len());
        }
        self.stats.held.store(self.tail.held() as u64, Relaxed);
    }

    fn tick(&mut self, now_ns: u64) {
        let expired = self.tail.expire(now_ns);
        if !expired.is_empty() {
            self.stats
                .count_tail(TailOutcome::Expired, expired.len() as u64);
            self.dropped(expired.len());
            self.stats.held.store(self.tail.held() as u64, Relaxed);
        }
        self.inner.tick(now_ns);
    }

    fn not_sent(&mut self, reason: DropReason) {
        self.inner.not_sent(reason);
    }
}
