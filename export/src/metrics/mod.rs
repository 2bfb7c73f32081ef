//! Span metrics: request-duration histograms computed from every span, before sampling, so
//! that latency and error rates stay exact whatever leaves the node; each bucket remembers an
//! exemplar (the trace id of a span that was kept), so a latency spike leads to a trace.
//!
//! Instruments follow the OpenTelemetry semantic conventions: `http.server.request.duration`
//! and `http.client.request.duration` (seconds), `rpc.server.duration` and
//! `rpc.client.duration` (milliseconds), plus a service graph (`sonde.service_graph.request.
//! duration`, one series per client → server edge). Attributes are low-cardinality by
//! construction (method, route template, status code, service, peer) and the number of series
//! is bounded: past [`MAX_SERIES`], points go to one overflow series
//! (`otel.metric.overflow=true`, as the OpenTelemetry SDKs do), counted.
//!
//! Read out as Prometheus text or OpenMetrics (with exemplars) by [`SpanMetrics::render`], and
//! as OTLP by [`otlp::to_request`].

pub mod otlp;
pub mod push;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use crate::{
    prom,
    span::{Resource, SpanId, TraceId},
    stats::HistogramSnapshot,
};

/// Series kept per instrument before new attribute sets go to the overflow series.
pub const MAX_SERIES: usize = 2000;

/// HTTP duration buckets (seconds), from the HTTP semantic conventions.
pub const HTTP_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// RPC duration buckets (milliseconds), the OpenTelemetry SDKs' default.
pub const RPC_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// What a point measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
    /// Database operations (every one, before sampling), from the client span or, when only
    /// the server is traced, the server's.
    DbClient,
    /// Client → server edges, measured on the client span (its duration).
    ServiceGraph,
}

impl Instrument {
    pub const ALL: [Self; 6] = [
        Self::HttpServer,
        Self::HttpClient,
        Self::RpcServer,
        Self::RpcClient,
        Self::DbClient,
        Self::ServiceGraph,
    ];

    /// The OpenTelemetry name.
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpServer => "http.server.request.duration",
            Self::HttpClient => "http.client.request.duration",
            Self::RpcServer => "rpc.server.duration",
            Self::RpcClient => "rpc.client.duration",
            Self::DbClient => "db.client.operation.duration",
            Self::ServiceGraph => "sonde.service_graph.request.duration",
        }
    }

    /// The Prometheus family name (dots to underscores, unit suffix).
    pub fn prom_name(self) -> &'static str {
        match self {
            Self::HttpServer => "http_server_request_duration_seconds",
            Self::HttpClient => "http_client_request_duration_seconds",
            Self::RpcServer => "rpc_server_duration_milliseconds",
            Self::RpcClient => "rpc_client_duration_milliseconds",
            Self::DbClient => "db_client_operation_duration_seconds",
            Self::ServiceGraph => "sonde_service_graph_request_duration_seconds",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::RpcServer | Self::RpcClient => "ms",
            _ => "s",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::HttpServer => {
                "Duration of HTTP server requests (every request, before sampling)."
            }
            Self::HttpClient => {
                "Duration of HTTP client requests (every request, before sampling)."
            }
            Self::RpcServer => "Duration of inbound RPCs (every call, before sampling).",
            Self::RpcClient => "Duration of outbound RPCs (every call, before sampling).",
            Self::DbClient => "Duration of database operations (every one, before sampling).",
            Self::ServiceGraph => {
                "Requests between services, per client -> server edge, as the client saw them."
            }
        }
    }

    pub fn bounds(self) -> &'static [f64] {
        match self {
            Self::RpcServer | Self::RpcClient => &RPC_BOUNDS,
            _ => &HTTP_BOUNDS,
        }
    }

    /// Nanoseconds to this instrument's unit.
    pub fn value_of(self, nanos: u64) -> f64 {
        match self.unit() {
            "ms" => nanos as f64 / 1e6,
            _ => nanos as f64 / 1e9,
        }
    }
}

/// One measurement: an instrument, its attributes (OpenTelemetry names, `service.name`
/// included) and a value in the instrument's unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub instrument: Instrument,
    pub attributes: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A sampled span that stands for a bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub value: f64,
    pub unix_nanos: u64,
}

type Key = (Instrument, Vec<(&'static str, String)>);

#[derive(Clone, Debug)]
struct Series {
    /// Non-cumulative; the last slot is `+Inf`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
    exemplars: Vec<Option<Exemplar>>,
    resource: Option<Arc<Resource>>,
}

impl Series {
    fn new(instrument: Instrument) -> Self {
        let n = instrument.bounds().len() + 1;
        Self {
            buckets: vec![0; n],
            sum: 0.0,
            count: 0,
            exemplars: vec![None; n],
            resource: None,
        }
    }
}

fn bucket(instrument: Instrument, value: f64) -> usize {
    let b = instrument.bounds();
    b.iter().position(|&x| value <= x).unwrap_or(b.len())
}

#[derive(Debug, Default)]
struct Registry {
    series: BTreeMap<Key, Series>,
    per_instrument: HashMap<Instrument, usize>,
    /// Points that went to an overflow series.
    overflowed: u64,
}

/// A read-out series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSnapshot {
    pub instrument: Instrument,
    pub attributes: Vec<(&'static str, String)>,
    pub histogram: HistogramSnapshot,
    /// Per bucket (same length as `histogram.cumulative`).
    pub exemplars: Vec<Option<Exemplar>>,
    pub resource: Option<Arc<Resource>>,
}

/// The live span metrics: shared between the pipeline (writes) and readers (scrapes, OTLP).
#[derive(Debug)]
pub struct SpanMetrics {
    inner: Mutex<Registry>,
    /// Unix ns when counting started (the OTLP cumulative start time).
    pub start_unix_nanos: u64,
    max_series: usize,
}

const OVERFLOW: (&str, &str) = ("otel.metric.overflow", "true");

impl SpanMetrics {
    pub fn new(start_unix_nanos: u64) -> Self {
        Self::with_max_series(start_unix_nanos, MAX_SERIES)
    }

    pub fn with_max_series(start_unix_nanos: u64, max_series: usize) -> Self {
        Self {
            inner: Mutex::new(Registry::default()),
            start_unix_nanos,
            max_series,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves counts that are still counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a point; `exemplar` when its span is kept. `resource` describes the service.
    pub fn record(&self, point: &Point, resource: &Arc<Resource>, exemplar: Option<Exemplar>) {
        let mut r = self.lock();
        let key = (point.instrument, point.attributes.clone());
        let key = if r.series.contains_key(&key) {
            key
        } else if r
            .per_instrument
            .get(&point.instrument)
            .copied()
            .unwrap_or(0)
            >= self.max_series
        {
            r.overflowed += 1;
            (point.instrument, vec![(OVERFLOW.0, OVERFLOW.1.to_owned())])
        } else {
            *r.per_instrument.entry(point.instrument).or_default() += 1;
            key
        };
        let s = r
            .series
            .entry(key)
            .or_insert_with(|| Series::new(point.instrument));
        let i = bucket(point.instrument, point.value);
        s.buckets[i] += 1;
        s.sum += point.value;
        s.count += 1;
        if s.resource.is_none() {
            s.resource = Some(Arc::clone(resource));
        }
        if let Some(e) = exemplar {
            s.exemplars[i] = Some(e);
        }
    }

    /// Sets the exemplar of the point's bucket (a span kept after it was counted).
    pub fn exemplar(&self, point: &Point, exemplar: Exemplar) {
        let mut r = self.lock();
        let key = (point.instrument, point.attributes.clone());
        if let Some(s) = r.series.get_mut(&key) {
            s.exemplars[bucket(point.instrument, point.value)] = Some(exemplar);
        }
    }

    /// Points that went to overflow series.
    pub fn overflowed(&self) -> u64 {
        self.lock().overflowed
    }

    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let r = self.lock();
        r.series
            .iter()
            .map(|((instrument, attributes), s)| {
                let mut acc = 0;
                let cumulative = s
                    .buckets
                    .iter()
                    .map(|b| {
                        acc += b;
                        acc
                    })
                    .collect();
                SeriesSnapshot {
                    instrument: *instrument,
                    attributes: attributes.clone(),
                    histogram: HistogramSnapshot {
                        bounds: instrument.bounds().to_vec(),
                        cumulative,
                        sum_seconds: s.sum,
                        count: s.count,
                    },
                    exemplars: s.exemplars.clone(),
                    resource: s.resource.clone(),
                }
            })
            .collect()
    }

    /// Writes every series (Prometheus label names: dots become underscores). Exemplars are
    /// written when `w` is an OpenMetrics writer.
    pub fn render(&self, w: &mut prom::Writer) {
        let snap = self.snapshot();
        for instrument in Instrument::ALL {
            let mut series = snap
                .iter()
                .filter(|s| s.instrument == instrument)
                .peekable();
            if series.peek().is_none() {
                continue;
            }
            let mut f = w.histogram(instrument.prom_name(), instrument.description());
            let mut names: Vec<String> = Vec::new();
            for s in series {
                names.clear();
                names.extend(s.attributes.iter().map(|(k, _)| prom_label(k)));
                let labels: Vec<(&str, &str)> = names
                    .iter()
                    .zip(&s.attributes)
                    .map(|(k, (_, v))| (k.as_str(), v.as_str()))
                    .collect();
                let exemplars: Vec<Option<prom::ExemplarRef>> = s
                    .exemplars
                    .iter()
                    .map(|e| {
                        e.map(|e| prom::ExemplarRef {
                            trace_id: e.trace_id,
                            span_id: e.span_id,
                            value: e.value,
                            unix_nanos: e.unix_nanos,
                        })
                    })
                    .collect();
                f = f.sample_with_exemplars(&labels, &s.histogram, &exemplars);
            }
        }
        w.counter(
            "sonde_span_metrics_overflow_total",
            "Span-metric points that went to the overflow series (too many attribute sets).",
        )
        .sample(&[], self.overflowed() as f64);
    }
}

/// An OpenTelemetry attribute name as a Prometheus label name.
pub fn prom_label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: Instrument, route: &str, value: f64) -> Point {
        Point {
            instrument: i,
            attributes: vec![
                ("http.route", route.to_owned()),
                ("service.name", "svc".to_owned()),
            ],
            value,
        }
    }

    #[test]
    fn counts_every_point_and_keeps_the_last_exemplar_per_bucket() {
        let m = SpanMetrics::new(1);
        let r = Arc::new(Resource::default());
        let ex = |n: u8| Exemplar {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            value: 0.02,
            unix_nanos: 1_700_000_000_000_000_000,
        };
        m.record(&point(Instrument::HttpServer, "/a", 0.02), &r, Some(ex(1)));
        m.record(&point(Instrument::HttpServer, "/a", 0.02), &r, None);
        m.record(&point(Instrument::HttpServer, "/a", 3.0), &r, None);
        m.exemplar(&point(Instrument::HttpServer, "/a", 0.021), ex(2));
        let s = m.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].histogram.count, 3);
        assert_eq!(s[0].histogram.cumulative[2], 2, "two at <= 0.025");
        assert_eq!(*s[0].histogram.cumulative.last().unwrap(), 3);
        assert_eq!(s[0].exemplars[2].unwrap().trace_id, TraceId([2; 16]));
        assert!(s[0].exemplars[11].is_none());
    }

    #[test]
    fn series_beyond_the_bound_go_to_overflow() {
        let m = SpanMetrics::with_max_series(1, 2);
        let r = Arc::new(Resource::default());
        for route in ["/a", "/b", "/c", "/d"] {
            m.record(&point(Instrument::HttpClient, route, 0.1), &r, None);
        }
        let s = m.snapshot();
        assert_eq!(s.len(), 3);
        assert_eq!(m.overflowed(), 2);
        let o = s
            .iter()
            .find(|s| s.attributes == vec![(OVERFLOW.0, "true".to_owned())])
            .unwrap();
        assert_eq!(o.histogram.count, 2);
    }

    #[test]
    fn renders_openmetrics_exemplars_and_plain_text_without() {
        let m = SpanMetrics::new(1);
        let r = Arc::new(Resource::default());
        m.record(
            &point(Instrument::HttpServer, "/a", 0.02),
            &r,
            Some(Exemplar {
                trace_id: TraceId([0xab; 16]),
                span_id: SpanId([0xcd; 8]),
                value: 0.02,
                unix_nanos: 1_700_000_000_500_000_000,
            }),
        );
        let mut w = prom::Writer::openmetrics();
        m.render(&mut w);
        let om = w.finish();
        assert!(
            om.contains(
                "http_server_request_duration_seconds_bucket{http_route=\"/a\",service_name=\"svc\",le=\"0.025\"} 1 # {trace_id=\"abababababababababababababababab\",span_id=\"cdcdcdcdcdcdcdcd\"} 0.02 1700000000.5\n"
            ),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let mut w = prom::Writer::new();
        m.render(&mut w);
        let text = w.finish();
        assert!(!text.contains('#') || !text.contains("# {"), "{text}");
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/a\",service_name=\"svc\",le=\"0.025\"} 1\n"
        ));
    }
}
