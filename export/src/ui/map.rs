//! The service map of the trace view, read from the span metrics: edges from the service
//! graph (`sonde.service_graph.request.duration`, client → server), and per service its
//! operations with rate, errors and latency (RED) from the duration histograms.
//!
//! Counts are since the agent started; rates are over the last [`WINDOW`] (from earlier reads
//! of the same metrics), or over the agent's lifetime until a read that old exists.
//! Percentiles are interpolated within histogram buckets, as Prometheus' `histogram_quantile`
//! does, so they are as precise as the buckets.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::metrics::{Instrument, SeriesSnapshot, SpanMetrics};

/// The span over which rates are computed.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Figures of an edge or an operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Red {
    pub requests: u64,
    pub errors: u64,
    pub rate_per_s: f64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub red: Red,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// `GET /users/{id}`, `helloworld.Greeter/SayHello`, `SELECT users`, or for clients the
    /// operation and its peer (`GET → nginx`).
    pub route: String,
    /// `server`, `client` or `db`.
    pub kind: &'static str,
    pub red: Red,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub routes: Vec<Operation>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceMap {
    /// Seconds the rates are over.
    pub window_s: f64,
    pub edges: Vec<Edge>,
    pub services: Vec<Service>,
}

/// Histograms of one edge or operation, summed over its series.
#[derive(Clone, Debug, Default)]
struct Acc {
    bounds: Vec<f64>,
    cumulative: Vec<u64>,
    count: u64,
    errors: u64,
    /// Multiplier from the instrument's unit to milliseconds.
    to_ms: f64,
}

impl Acc {
    fn add(&mut self, s: &SeriesSnapshot, failed: bool) {
        if self.cumulative.is_empty() {
            self.bounds = s.histogram.bounds.clone();
            self.cumulative = vec![0; s.histogram.cumulative.len()];
            self.to_ms = if s.instrument.unit() == "ms" {
                1.0
            } else {
                1000.0
            };
        }
        for (a, b) in self.cumulative.iter_mut().zip(&s.histogram.cumulative) {
            *a += b;
        }
        self.count += s.histogram.count;
        if failed {
            self.errors += s.histogram.count;
        }
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.bounds, &self.cumulative, q) * self.to_ms
    }
}

/// The value below which a fraction `q` of the observations fall, interpolated linearly
/// within the bucket that holds it; observations above the last bound count as the last
/// bound.
pub fn quantile(bounds: &[f64], cumulative: &[u64], q: f64) -> f64 {
    let total = cumulative.last().copied().unwrap_or(0);
    if total == 0 || bounds.is_empty() {
        return 0.0;
    }
    let rank = q * total as f64;
    let Some(i) = cumulative.iter().position(|&c| c as f64 >= rank) else {
        return bounds[bounds.len() - 1];
    };
    if i >= bounds.len() {
        return bounds[bounds.len() - 1];
    }
    let lower = if i == 0 {
        0.0_f64.min(bounds[0])
    } else {
        bounds[i - 1]
    };
    let below = if i == 0 { 0 } else { cumulative[i - 1] };
    let inside = cumulative[i] - below;
    if inside == 0 {
        return bounds[i];
    }
    lower + (bounds[i] - lower) * ((rank - below as f64) / inside as f64)
}

fn attr<'a>(s: &'a SeriesSnapshot, key: &str) -> Option<&'a str> {
    s.attributes
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// Which operation of which service a series counts, and whether it counts failures.
fn operation_of(s: &SeriesSnapshot) -> Option<(String, String, &'static str, bool)> {
    let service = attr(s, "service.name")?.to_owned();
    let peer = attr(s, "peer.service");
    let with_peer = |op: String| match peer {
        Some(p) => format!("{op} → {p}"),
        None => op,
    };
    let status = attr(s, "http.response.status_code").and_then(|c| c.parse::<u16>().ok());
    let rpc = || match (attr(s, "rpc.service"), attr(s, "rpc.method")) {
        (Some(svc), Some(m)) => format!("{svc}/{m}"),
        (Some(svc), None) => svc.to_owned(),
        _ => attr(s, "rpc.system").unwrap_or("rpc").to_owned(),
    };
    let http = || {
        let method = attr(s, "http.request.method").unwrap_or("HTTP");
        match attr(s, "http.route") {
            Some(r) => format!("{method} {r}"),
            None => method.to_owned(),
        }
    };
    let grpc_failed = attr(s, "rpc.grpc.status_code").is_some_and(|c| c != "0");
    Some(match s.instrument {
        Instrument::HttpServer => (service, http(), "server", status.is_some_and(|c| c >= 500)),
        Instrument::HttpClient => (
            service,
            with_peer(http()),
            "client",
            status.is_some_and(|c| c >= 400),
        ),
        Instrument::RpcServer => (service, rpc(), "server", grpc_failed),
        Instrument::RpcClient => (service, with_peer(rpc()), "client", grpc_failed),
        Instrument::DbClient => {
            let op = attr(s, "db.operation.name").unwrap_or("query");
            let op = match attr(s, "db.collection.name") {
                Some(c) => format!("{op} {c}"),
                None => op.to_owned(),
            };
            let failed = attr(s, "db.response.status_code").is_some_and(|c| c != "00000");
            (service, with_peer(op), "db", failed)
        }
        Instrument::ServiceGraph => return None,
    })
}

/// Counts per edge or operation, keyed for the rate window.
type Counts = HashMap<String, u64>;

fn edge_key(client: &str, server: &str) -> String {
    format!("e\u{0}{client}\u{0}{server}")
}

fn op_key(service: &str, kind: &str, route: &str) -> String {
    format!("o\u{0}{service}\u{0}{kind}\u{0}{route}")
}

/// Builds the map from one snapshot. `base` is an earlier read's counts and the seconds
/// since it; without it rates are over `uptime_s`.
pub fn build(
    snapshot: &[SeriesSnapshot],
    base: Option<(&Counts, f64)>,
    uptime_s: f64,
) -> (ServiceMap, Counts) {
    let mut edges: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut ops: BTreeMap<(String, &'static str, String), Acc> = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for s in snapshot {
        if attr(s, "otel.metric.overflow").is_some() {
            continue;
        }
        if s.instrument == Instrument::ServiceGraph {
            let (Some(c), Some(v)) = (attr(s, "client"), attr(s, "server")) else {
                continue;
            };
            names.insert(c.to_owned());
            names.insert(v.to_owned());
            edges
                .entry((c.to_owned(), v.to_owned()))
                .or_default()
                .add(s, attr(s, "failed") == Some("true"));
        } else if let Some((service, route, kind, failed)) = operation_of(s) {
            names.insert(service.clone());
            ops.entry((service, kind, route))
                .or_default()
                .add(s, failed);
        }
    }
    let (window_s, base) = match base {
        Some((counts, secs)) if secs > 0.0 => (secs, Some(counts)),
        _ => (uptime_s.max(1e-3), None),
    };
    let mut counts = Counts::new();
    let mut red = |key: String, a: &Acc| {
        let before = base.and_then(|b| b.get(&key)).copied().unwrap_or(0);
        let r = Red {
            requests: a.count,
            errors: a.errors,
            rate_per_s: a.count.saturating_sub(before) as f64 / window_s,
            error_rate: if a.count == 0 {
                0.0
            } else {
                a.errors as f64 / a.count as f64
            },
            p50_ms: a.quantile_ms(0.5),
            p99_ms: a.quantile_ms(0.99),
        };
        counts.insert(key, a.count);
        r
    };
    let edges = edges
        .iter()
        .map(|((c, v), a)| Edge {
            client: c.clone(),
            server: v.clone(),
            red: red(edge_key(c, v), a),
        })
        .collect();
    let mut services: BTreeMap<String, Vec<Operation>> =
        names.into_iter().map(|n| (n, Vec::new())).collect();
    for ((service, kind, route), a) in &ops {
        let op = Operation {
            route: route.clone(),
            kind,
            red: red(op_key(service, kind, route), a),
        };
        services.entry(service.clone()).or_default().push(op);
    }
    let map = ServiceMap {
        window_s,
        edges,
        services: services
            .into_iter()
            .map(|(name, routes)| Service { name, routes })
            .collect(),
    };
    (map, counts)
}

/// Reads the map from live span metrics, keeping earlier reads for the rate window.
#[derive(Debug)]
pub struct MapReader {
    metrics: Arc<SpanMetrics>,
    started: Instant,
    history: Mutex<VecDeque<(Instant, Counts)>>,
}

impl MapReader {
    pub fn new(metrics: Arc<SpanMetrics>) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            history: Mutex::new(VecDeque::new()),
        }
    }

    pub fn read(&self) -> ServiceMap {
        let now = Instant::now();
        let snapshot = self.metrics.snapshot();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the newest read at least WINDOW old, and the ones after it.
        while h.len() > 1 && now.duration_since(h[1].0) >= WINDOW {
            h.pop_front();
        }
        let base = h
            .front()
            .filter(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
            .map(|(at, c)| (c, now.duration_since(*at).as_secs_f64()));
        let uptime = now.duration_since(self.started).as_secs_f64();
        let (map, counts) = build(&snapshot, base, uptime);
        if h.back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            h.push_back((now, counts));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        metrics::Point,
        span::{KeyValue, Resource},
    };

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let bounds = [1.0, 2.0, 4.0];
        // 10 observations in (0,1], 10 in (1,2], none in (2,4], none above.
        let cumulative = [10, 20, 20, 20];
        assert!((quantile(&bounds, &cumulative, 0.5) - 1.0).abs() < 1e-9);
        assert!((quantile(&bounds, &cumulative, 0.25) - 0.5).abs() < 1e-9);
        assert!((quantile(&bounds, &cumulative, 0.99) - 1.98).abs() < 1e-9);
        // Everything above the last bound: the last bound.
        assert_eq!(quantile(&bounds, &[0, 0, 0, 5], 0.5), 4.0);
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.5), 0.0);
    }

    fn record(m: &SpanMetrics, instrument: Instrument, attrs: &[(&'static str, &str)], value: f64) {
        let resource = Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", "x")],
        });
        m.record(
            &Point {
                instrument,
                attributes: attrs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                value,
            },
            &resource,
            None,
        );
    }

    #[test]
    fn edges_and_routes_come_from_the_span_metrics() {
        let m = SpanMetrics::new(0);
        let edge = |failed| [("client", "curl"), ("server", "api"), ("failed", failed)];
        for _ in 0..3 {
            record(&m, Instrument::ServiceGraph, &edge("false"), 0.003);
        }
        record(&m, Instrument::ServiceGraph, &edge("true"), 0.2);
        for status in ["200", "200", "503"] {
            record(
                &m,
                Instrument::HttpServer,
                &[
                    ("http.request.method", "GET"),
                    ("http.route", "/users/{id}"),
                    ("http.response.status_code", status),
                    ("service.name", "api"),
                ],
                0.004,
            );
        }
        record(
            &m,
            Instrument::RpcServer,
            &[
                ("rpc.service", "helloworld.Greeter"),
                ("rpc.method", "SayHello"),
                ("rpc.grpc.status_code", "0"),
                ("service.name", "api"),
            ],
            7.0,
        );
        let (map, counts) = build(&m.snapshot(), None, 2.0);
        assert_eq!(map.window_s, 2.0);
        assert_eq!(map.edges.len(), 1);
        let e = &map.edges[0];
        assert_eq!((e.client.as_str(), e.server.as_str()), ("curl", "api"));
        assert_eq!((e.red.requests, e.red.errors), (4, 1));
        assert_eq!(e.red.rate_per_s, 2.0);
        assert_eq!(e.red.error_rate, 0.25);
        // Three in (0, 5 ms], one in (100, 250 ms]: the median is in the first bucket.
        assert!(e.red.p50_ms > 0.0 && e.red.p50_ms <= 5.0, "{:?}", e.red);
        assert!(e.red.p99_ms > 100.0 && e.red.p99_ms <= 250.0, "{:?}", e.red);
        let names: Vec<&str> = map.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["api", "curl"]);
        let api = &map.services[0];
        let routes: Vec<(&str, &str, u64, u64)> = api
            .routes
            .iter()
            .map(|o| (o.route.as_str(), o.kind, o.red.requests, o.red.errors))
            .collect();
        assert_eq!(
            routes,
            vec![
                ("GET /users/{id}", "server", 3, 1),
                ("helloworld.Greeter/SayHello", "server", 1, 0),
            ]
        );
        // gRPC in milliseconds: 7 ms falls in (5, 10].
        let grpc = &api.routes[1].red;
        assert!(grpc.p50_ms > 5.0 && grpc.p50_ms <= 10.0, "{grpc:?}");
        // A later read with 4 more edge requests over 2 s: 2 per second in the window.
        for _ in 0..4 {
            record(&m, Instrument::ServiceGraph, &edge("false"), 0.003);
        }
        let (later, _) = build(&m.snapshot(), Some((&counts, 2.0)), 100.0);
        assert_eq!(later.window_s, 2.0);
        assert_eq!(later.edges[0].red.requests, 8);
        assert_eq!(later.edges[0].red.rate_per_s, 2.0);
    }
}
