//! Span metrics → an OTLP `ExportMetricsServiceRequest`: one `ResourceMetrics` per service
//! (the resource of the spans that made its series), cumulative histograms with exemplars.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{InstrumentationScope, KeyValue as PbKeyValue},
    metrics::v1::{
        AggregationTemporality, Exemplar as PbExemplar, Histogram, HistogramDataPoint, Metric,
        ResourceMetrics, ScopeMetrics, exemplar, metric,
    },
};

use super::{Instrument, SeriesSnapshot};
use crate::{
    otlp::{kv_to_proto, resource_to_proto},
    span::{KeyValue, Resource},
};

fn kv(k: &'static str, v: &str) -> PbKeyValue {
    kv_to_proto(&KeyValue::new(k, v))
}

type PointsByInstrument = Vec<(Instrument, Vec<HistogramDataPoint>)>;

/// Builds one request from a snapshot; `service.name` moves from the attributes to the
/// resource.
pub fn to_request(
    series: &[SeriesSnapshot],
    start_unix_nanos: u64,
    now_unix_nanos: u64,
    scope: &InstrumentationScope,
) -> ExportMetricsServiceRequest {
    let empty = Arc::new(Resource::default());
    // (resource, per-instrument data points), in first-seen order.
    let mut groups: Vec<(Arc<Resource>, PointsByInstrument)> = Vec::new();
    for s in series {
        let resource = s.resource.clone().unwrap_or_else(|| Arc::clone(&empty));
        let gi = match groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &resource) || **r == *resource)
        {
            Some(i) => i,
            None => {
                groups.push((resource, Vec::new()));
                groups.len() - 1
            }
        };
        let h = &s.histogram;
        let mut prev = 0;
        let bucket_counts = h
            .cumulative
            .iter()
            .map(|c| {
                let n = c - prev;
                prev = *c;
                n
            })
            .collect();
        let point = HistogramDataPoint {
            attributes: s
                .attributes
                .iter()
                .filter(|(k, _)| *k != "service.name")
                .map(|(k, v)| kv(k, v))
                .collect(),
            start_time_unix_nano: start_unix_nanos,
            time_unix_nano: now_unix_nanos,
            count: h.count,
            sum: Some(h.sum_seconds),
            bucket_counts,
            explicit_bounds: h.bounds.clone(),
            exemplars: s
                .exemplars
                .iter()
                .flatten()
                .map(|e| PbExemplar {
                    filtered_attributes: Vec::new(),
                    time_unix_nano: e.unix_nanos,
                    span_id: e.span_id.0.to_vec(),
                    trace_id: e.trace_id.0.to_vec(),
                    value: Some(exemplar::Value::AsDouble(e.value)),
                })
                .collect(),
            flags: 0,
            min: None,
            max: None,
        };
        let per = &mut groups[gi].1;
        match per.iter_mut().find(|(i, _)| *i == s.instrument) {
            Some((_, points)) => points.push(point),
            None => per.push((s.instrument, vec![point])),
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: groups
            .into_iter()
            .map(|(resource, per)| ResourceMetrics {
                resource: Some(resource_to_proto(&resource)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics: per
                        .into_iter()
                        .map(|(i, data_points)| Metric {
                            name: i.name().to_owned(),
                            description: i.description().to_owned(),
                            unit: i.unit().to_owned(),
                            metadata: Vec::new(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        metrics::{Exemplar, Point, SpanMetrics},
        span::{SpanId, TraceId},
    };

    #[test]
    fn one_resource_per_service_cumulative_with_exemplars() {
        let m = SpanMetrics::new(5);
        let r = Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", "shop")],
        });
        let p = Point {
            instrument: Instrument::HttpServer,
            attributes: vec![("http.route", "/a".into()), ("service.name", "shop".into())],
            value: 0.2,
        };
        m.record(&p, &r, None);
        m.record(
            &p,
            &r,
            Some(Exemplar {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([2; 8]),
                value: 0.2,
                unix_nanos: 9,
            }),
        );
        let req = to_request(&m.snapshot(), 5, 10, &crate::otlp::scope("t"));
        assert_eq!(req.resource_metrics.len(), 1);
        let metric = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "http.server.request.duration");
        let Some(metric::Data::Histogram(h)) = &metric.data else {
            panic!("not a histogram");
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let dp = &h.data_points[0];
        assert_eq!(dp.count, 2);
        assert_eq!(dp.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(dp.bucket_counts[6], 2, "0.2 is in (0.1, 0.25]");
        assert_eq!(dp.attributes.len(), 1, "service.name is on the resource");
        assert_eq!(dp.exemplars[0].trace_id, vec![1; 16]);
        assert_eq!((dp.start_time_unix_nano, dp.time_unix_nano), (5, 10));
    }
}
