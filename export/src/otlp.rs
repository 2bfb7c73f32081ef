//! Span model → OTLP protobuf messages.
//!
//! One `ResourceSpans` per distinct resource in a batch (spans of one process share an
//! `Arc<Resource>`, so pointer equality is the fast path; equal resources behind different
//! `Arc`s are merged too), each with a single `ScopeSpans` for the `sonde` scope: sonde is the
//! only instrumentation that produced these spans, whatever the application runs.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue as PbKeyValue, any_value},
    resource::v1::Resource as PbResource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span as PbSpan, SpanFlags, Status as PbStatus,
        span::SpanKind as PbKind, status::StatusCode as PbStatusCode,
    },
};

use crate::{
    span::{KeyValue, Resource, Span, SpanKind, StatusCode, Value},
    transport::EncodedRequest,
    wire::group_by_resource,
};

pub use crate::wire::SCOPE_NAME;

/// The instrumentation scope sonde reports: `sonde` and the agent's version.
pub fn scope(version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: version.to_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// Builds one export request from a batch, grouping spans by resource (first-seen order).
pub fn to_request(spans: Vec<Span>, scope: &InstrumentationScope) -> ExportTraceServiceRequest {
    let order = group_by_resource(&spans);
    let mut slots: Vec<Option<Span>> = spans.into_iter().map(Some).collect();
    let groups: Vec<(Arc<Resource>, Vec<PbSpan>)> = order
        .into_iter()
        .map(|members| {
            let mut taken = members.into_iter().filter_map(|i| slots[i].take());
            let first = taken.next().expect("a group has a span");
            let resource = Arc::clone(&first.resource);
            let spans = std::iter::once(first)
                .chain(taken)
                .map(span_to_proto)
                .collect();
            (resource, spans)
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(resource_to_proto(&resource)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// A batch in its wire form, ready for every attempt of its export: the bytes prost would
/// make of [`to_request`], written straight from the spans ([`crate::wire`]).
pub fn encode_request(spans: &[Span], scope: &InstrumentationScope) -> EncodedRequest {
    EncodedRequest(crate::wire::encode_request(spans, &scope.version).into())
}

pub fn resource_to_proto(resource: &Resource) -> PbResource {
    PbResource {
        attributes: resource.attributes.iter().map(kv_to_proto).collect(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// The OTLP `SpanKind` number (`SPAN_KIND_SERVER` = 2, …).
pub fn kind_to_proto(kind: SpanKind) -> PbKind {
    match kind {
        SpanKind::Internal => PbKind::Internal,
        SpanKind::Server => PbKind::Server,
        SpanKind::Client => PbKind::Client,
    }
}

/// The OTLP `Status.StatusCode` number (`STATUS_CODE_ERROR` = 2, …).
pub fn status_code_to_proto(code: StatusCode) -> PbStatusCode {
    match code {
        StatusCode::Unset => PbStatusCode::Unset,
        StatusCode::Ok => PbStatusCode::Ok,
        StatusCode::Error => PbStatusCode::Error,
    }
}

pub fn span_to_proto(span: Span) -> PbSpan {
    let status = if span.status.code == StatusCode::Unset && span.status.message.is_empty() {
        None
    } else {
        Some(PbStatus {
            message: span.status.message,
            code: status_code_to_proto(span.status.code) as i32,
        })
    };
    PbSpan {
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        trace_state: span.trace_state,
        parent_span_id: span
            .parent_span_id
            .map(|p| p.0.to_vec())
            .unwrap_or_default(),
        // Only the W3C trace flags: the span model does not know whether the parent was
        // remote, so the HAS_IS_REMOTE bit stays clear ("unknown").
        flags: u32::from(span.flags) & SpanFlags::TraceFlagsMask as u32,
        name: span.name,
        kind: kind_to_proto(span.kind) as i32,
        start_time_unix_nano: span.start_unix_nanos,
        end_time_unix_nano: span.end_unix_nanos,
        attributes: span.attributes.into_iter().map(kv_into_proto).collect(),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status,
    }
}

pub fn kv_to_proto(kv: &KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.to_string(),
        value: Some(value_to_proto(&kv.value)),
        key_strindex: 0, // profiles-only string table index
    }
}

/// [`kv_to_proto`] taking the attribute: its strings move instead of being copied.
pub fn kv_into_proto(kv: KeyValue) -> PbKeyValue {
    let v = match kv.value {
        Value::Str(s) => any_value::Value::StringValue(s.into()),
        Value::StrArray(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items
                .into_iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                })
                .collect(),
        }),
        other => {
            return kv_to_proto(&KeyValue {
                key: kv.key,
                value: other,
            });
        }
    };
    PbKeyValue {
        key: kv.key.into_owned(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

pub fn value_to_proto(value: &Value) -> AnyValue {
    let v = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Double(d) => any_value::Value::DoubleValue(*d),
        Value::StrArray(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{FLAG_SAMPLED, SpanId, Status, TraceId};

    fn resource(service: &str) -> Arc<Resource> {
        Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", service)],
        })
    }

    fn span(name: &str, resource: &Arc<Resource>) -> Span {
        Span {
            trace_id: TraceId([0x4b; 16]),
            span_id: SpanId([0x01, 2, 3, 4, 5, 6, 7, 8]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: FLAG_SAMPLED,
            name: name.to_owned(),
            kind: SpanKind::Server,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            attributes: Vec::new(),
            status: Status::default(),
            resource: Arc::clone(resource),
        }
    }

    #[test]
    fn groups_by_resource_pointer_and_value_in_first_seen_order() {
        let a = resource("a");
        let b = resource("b");
        let a_again = resource("a"); // equal, different Arc
        let spans = vec![
            span("1", &a),
            span("2", &b),
            span("3", &a_again),
            span("4", &a),
        ];
        let req = to_request(spans, &scope("9.9.9"));
        assert_eq!(req.resource_spans.len(), 2);
        let names = |i: usize| -> Vec<String> {
            req.resource_spans[i].scope_spans[0]
                .spans
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        assert_eq!(names(0), ["1", "3", "4"]);
        assert_eq!(names(1), ["2"]);
        let rs = &req.resource_spans[1];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let sc = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!((sc.name.as_str(), sc.version.as_str()), ("sonde", "9.9.9"));
    }

    #[test]
    fn maps_every_span_field() {
        let r = resource("svc");
        let mut s = span("GET /x", &r);
        s.parent_span_id = Some(SpanId([9; 8]));
        s.trace_state = "k=v".into();
        s.kind = SpanKind::Client;
        s.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        s.attributes = vec![
            KeyValue::new("s", "x"),
            KeyValue::new("i", -3i64),
            KeyValue::new("b", true),
            KeyValue::new("d", 1.5f64),
            KeyValue::new("a", vec!["p".to_owned(), "q".to_owned()]),
        ];
        let p = span_to_proto(s);
        assert_eq!(p.trace_id, vec![0x4b; 16]);
        assert_eq!(p.span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.parent_span_id, vec![9; 8]);
        assert_eq!(p.trace_state, "k=v");
        assert_eq!(p.flags, 1);
        assert_eq!(p.kind, 3);
        assert_eq!((p.start_time_unix_nano, p.end_time_unix_nano), (1, 2));
        let st = p.status.unwrap();
        assert_eq!((st.code, st.message.as_str()), (2, "boom"));
        let vals: Vec<_> = p
            .attributes
            .iter()
            .map(|kv| kv.value.clone().unwrap().value.unwrap())
            .collect();
        assert_eq!(vals[0], any_value::Value::StringValue("x".into()));
        assert_eq!(vals[1], any_value::Value::IntValue(-3));
        assert_eq!(vals[2], any_value::Value::BoolValue(true));
        assert_eq!(vals[3], any_value::Value::DoubleValue(1.5));
        match &vals[4] {
            any_value::Value::ArrayValue(a) => assert_eq!(a.values.len(), 2),
            other => panic!("expected array, got {other:?}"),
        }
    }

    #[test]
    fn root_span_has_empty_parent_and_unset_status_is_omitted() {
        let r = resource("svc");
        let p = span_to_proto(span("n", &r));
        assert!(p.parent_span_id.is_empty());
        assert!(p.status.is_none());
        assert_eq!(p.kind, 2);
    }
}
