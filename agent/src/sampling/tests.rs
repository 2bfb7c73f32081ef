//! Sampling and the policy sink on synthetic spans: ratios, rules, parents, the tail.

use std::sync::Arc;

use sonde_export::{
    metrics::{Instrument, SpanMetrics},
    span::{KeyValue, Resource, SpanId, Status},
    stats::DropReason,
};

use super::{sink::PolicySink, *};
use crate::{privacy::Policy, span::SpanSink};

fn span(trace: u64, parent: Option<u8>, flags: u8) -> Span {
    let mut t = [7u8; 16];
    t[8..].copy_from_slice(&trace.to_be_bytes());
    Span {
        trace_id: TraceId(t),
        span_id: SpanId([(trace as u8) | 1; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: String::new(),
        flags,
        name: "GET /x".into(),
        kind: SpanKind::Server,
        start_unix_nanos: 1_000_000_000,
        end_unix_nanos: 1_010_000_000,
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/x"),
            KeyValue::new("http.response.status_code", 200i64),
        ],
        status: Status::default(),
        resource: Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", "shop")],
        }),
    }
}

#[derive(Default)]
struct Out {
    spans: Vec<Span>,
    not_sent: Vec<DropReason>,
}

impl SpanSink for Out {
    fn span(&mut self, span: Span) {
        self.spans.push(span);
    }
    fn not_sent(&mut self, reason: DropReason) {
        self.not_sent.push(reason);
    }
}

fn config(ratio: f64) -> SamplingConfig {
    SamplingConfig {
        ratio,
        ..SamplingConfig::default()
    }
}

#[test]
fn ratio_is_a_function_of_the_trace_id_shared_with_the_kernel() {
    let mut s = Sampler::new(config(0.25));
    let t = threshold(0.25);
    let mut kept = 0;
    for i in 0..10_000u64 {
        // Spread ids over the whole range.
        let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let sp = span(id, None, 0);
        let (k, by) = s.head(&sp, 0);
        assert_eq!(by, HeadBy::Ratio);
        assert_eq!(
            k,
            sampled_by_ratio(&sp.trace_id.0, t),
            "same rule as the kernel"
        );
        kept += u32::from(k);
    }
    assert!((2300..=2700).contains(&kept), "{kept} of 10000 at 25%");
    assert_eq!(threshold(1.0), SAMPLE_ALL);
    assert!(sampled_by_ratio(&[0xff; 16], SAMPLE_ALL));
    assert!(!sampled_by_ratio(&[0; 16], 0));
}

#[test]
fn children_follow_the_parent_flag_whatever_the_ratio() {
    let mut s = Sampler::new(config(0.0));
    assert_eq!(s.head(&span(1, Some(2), 1), 0), (true, HeadBy::Parent));
    let mut s = Sampler::new(config(1.0));
    assert_eq!(s.head(&span(1, Some(2), 0), 0), (false, HeadBy::Parent));
    let mut s = Sampler::new(SamplingConfig {
        parent_based: false,
        ..config(1.0)
    });
    assert_eq!(s.head(&span(1, Some(2), 0), 0), (true, HeadBy::Ratio));
}

#[test]
fn rules_override_the_ratio_for_roots_and_the_rate_limit_caps_them() {
    let mut s = Sampler::new(SamplingConfig {
        rules: vec![
            Rule {
                service: None,
                route: Some("/x".into()),
                ratio: 0.0,
            },
            Rule {
                service: Some("other".into()),
                route: None,
                ratio: 1.0,
            },
        ],
        ..config(1.0)
    });
    assert_eq!(s.head(&span(1, None, 1), 0), (false, HeadBy::Rule));
    let mut s = Sampler::new(SamplingConfig {
        root_rate_limit: Some(2.0),
        ..config(1.0)
    });
    let kept: Vec<bool> = (0..4).map(|i| s.head(&span(i, None, 1), 0).0).collect();
    assert_eq!(kept, [true, true, false, false]);
    assert_eq!(s.head(&span(9, None, 1), 0).1, HeadBy::RateLimit);
    assert!(
        s.head(&span(9, None, 1), 1_000_000_000).0,
        "refilled after 1 s"
    );
}

#[test]
fn the_tail_keeps_errors_slow_spans_and_what_it_held_of_their_trace() {
    let metrics = Arc::new(SpanMetrics::new(0));
    let mut sink = PolicySink::new(
        Out::default(),
        SamplingConfig {
            keep_slower_than: Some(Duration::from_millis(100)),
            ..config(0.0)
        },
        Policy::default(),
        Some(Arc::clone(&metrics)),
    );
    // A child call of trace 5, then its failing parent: both kept, the child marked `trace`.
    sink.span(span(5, Some(1), 0));
    assert!(sink.inner().spans.is_empty());
    let mut parent = span(5, Some(9), 0);
    parent.status.code = StatusCode::Error;
    sink.span(parent);
    let tails: Vec<&Value> = sink
        .inner()
        .spans
        .iter()
        .map(|s| s.attr("sonde.sampling.tail").unwrap())
        .collect();
    assert_eq!(tails, [&Value::from("trace"), &Value::from("error")]);
    // A slow one.
    let mut slow = span(6, Some(1), 0);
    slow.end_unix_nanos = slow.start_unix_nanos + 200_000_000;
    sink.span(slow);
    assert_eq!(
        sink.inner().spans[2].attr("sonde.sampling.tail"),
        Some(&Value::from("slow"))
    );
    // A plain one waits, then expires as sampled out.
    sink.span(span(7, Some(1), 0));
    let stats = sink.stats();
    assert_eq!(stats.held.load(Relaxed), 1);
    sink.tick(crate::clock::monotonic_ns() + 6_000_000_000);
    assert_eq!(sink.inner().not_sent, [DropReason::SampledOut]);
    assert_eq!(stats.tail(TailOutcome::Expired), 1);
    assert_eq!(stats.tail(TailOutcome::KeptError), 1);
    assert_eq!(stats.tail(TailOutcome::KeptSlow), 1);
    assert_eq!(stats.tail(TailOutcome::KeptTrace), 1);
    assert_eq!(stats.head(HeadBy::Parent, false), 4);
    // Metrics counted all four; exemplars only from kept spans.
    let snap = metrics.snapshot();
    let http: Vec<_> = snap
        .iter()
        .filter(|s| s.instrument == Instrument::HttpServer)
        .collect();
    assert_eq!(http.iter().map(|s| s.histogram.count).sum::<u64>(), 4);
    let kept: Vec<TraceId> = sink.inner().spans.iter().map(|s| s.trace_id).collect();
    for s in &http {
        for e in s.exemplars.iter().flatten() {
            assert!(kept.contains(&e.trace_id));
        }
    }
}

#[test]
fn a_full_tail_buffer_drops_the_oldest_and_counts_it() {
    let mut sink = PolicySink::new(
        Out::default(),
        SamplingConfig {
            tail_buffer_spans: 2,
            ..config(0.0)
        },
        Policy::default(),
        None,
    );
    for i in 0..3 {
        sink.span(span(10 + i, Some(1), 0));
    }
    assert_eq!(sink.inner().not_sent, [DropReason::SampledOut]);
    assert_eq!(sink.stats().tail(TailOutcome::BufferFull), 1);
    sink.finish();
    assert_eq!(sink.inner().not_sent.len(), 3);
    assert_eq!(sink.stats().tail(TailOutcome::Shutdown), 2);
}

#[test]
fn configuration_errors_name_the_field() {
    let e = SamplingConfig::resolve(
        &SamplingSection {
            ratio: Some(10.0),
            ..Default::default()
        },
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[sampling] ratio = 10"), "{e}");
    let e = SamplingConfig::resolve(
        &SamplingSection {
            rules: vec![RuleSection {
                service: None,
                route: None,
                ratio: 1.0,
            }],
            ..Default::default()
        },
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("#1"), "{e}");
    assert_eq!(
        from_otel_env(Some("parentbased_traceidratio"), Some("0.1")).unwrap(),
        (Some(0.1), Some(true))
    );
    assert!(from_otel_env(Some("jaeger_remote"), None).is_err());
    let c = SamplingConfig::resolve(&SamplingSection::default(), None, None).unwrap();
    assert_eq!(c, SamplingConfig::default());
}
