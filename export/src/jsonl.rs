//! One span per line as JSON, with OTLP/JSON field names and encodings, so the lines can be
//! read by anything that reads OTLP/JSON spans (`jq`, tests, log shippers):
//! ids as lower-case hex, 64-bit integers (times, `intValue`) as decimal strings, `kind` and
//! `status.code` as the OTLP enum numbers, attribute values as `AnyValue` objects. Each line
//! carries its `resource`, since a line has no enclosing `ResourceSpans`.

use std::io::{self, Write};

use serde::Serialize;

use crate::{
    otlp,
    span::{KeyValue, Span, Value},
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    resource: JsonResource<'a>,
    trace_id: String,
    span_id: String,
    /// Empty for a root span, as in OTLP.
    parent_span_id: String,
    trace_state: &'a str,
    flags: u32,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<JsonKeyValue<'a>>,
    status: JsonStatus<'a>,
}

#[derive(Serialize)]
struct JsonResource<'a> {
    attributes: Vec<JsonKeyValue<'a>>,
}

#[derive(Serialize)]
struct JsonKeyValue<'a> {
    key: &'a str,
    value: JsonValue<'a>,
}

/// `AnyValue`: externally tagged, as `{"stringValue": "x"}`.
#[derive(Serialize)]
enum JsonValue<'a> {
    #[serde(rename = "stringValue")]
    Str(&'a str),
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
    #[serde(rename = "doubleValue")]
    Double(JsonDouble),
    #[serde(rename = "arrayValue")]
    Array { values: Vec<JsonValue<'a>> },
}

/// Protobuf's JSON mapping writes non-finite doubles as strings.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonDouble {
    Number(f64),
    Text(&'static str),
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    code: i32,
    message: &'a str,
}

fn value(v: &Value) -> JsonValue<'_> {
    match v {
        Value::Str(s) => JsonValue::Str(s),
        Value::Int(i) => JsonValue::Int(i.to_string()),
        Value::Bool(b) => JsonValue::Bool(*b),
        Value::Double(d) => JsonValue::Double(if d.is_nan() {
            JsonDouble::Text("NaN")
        } else if d.is_infinite() {
            JsonDouble::Text(if *d > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            JsonDouble::Number(*d)
        }),
        Value::StrArray(items) => JsonValue::Array {
            values: items.iter().map(|s| JsonValue::Str(s)).collect(),
        },
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<JsonKeyValue<'_>> {
    kvs.iter()
        .map(|kv| JsonKeyValue {
            key: &kv.key,
            value: value(&kv.value),
        })
        .collect()
}

/// Writes `span` as one JSON line.
pub fn write_span(w: &mut impl Write, span: &Span) -> io::Result<()> {
    let json = JsonSpan {
        resource: JsonResource {
            attributes: attributes(&span.resource.attributes),
        },
        trace_id: span.trace_id.to_string(),
        span_id: span.span_id.to_string(),
        parent_span_id: span
            .parent_span_id
            .map(|p| p.to_string())
            .unwrap_or_default(),
        trace_state: &span.trace_state,
        flags: u32::from(span.flags),
        name: &span.name,
        kind: otlp::kind_to_proto(span.kind) as i32,
        start_time_unix_nano: span.start_unix_nanos.to_string(),
        end_time_unix_nano: span.end_unix_nanos.to_string(),
        attributes: attributes(&span.attributes),
        status: JsonStatus {
            code: otlp::status_code_to_proto(span.status.code) as i32,
            message: &span.status.message,
        },
    };
    serde_json::to_writer(&mut *w, &json)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::span::{Resource, SpanId, SpanKind, Status, StatusCode, TraceId};

    fn span() -> Span {
        Span {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0, 1, 2, 3, 4, 5, 6, 0xff]),
            parent_span_id: Some(SpanId([0x10; 8])),
            trace_state: "v=1".into(),
            flags: 1,
            name: "POST /orders".into(),
            kind: SpanKind::Client,
            start_unix_nanos: 1_700_000_000_123_456_789,
            end_unix_nanos: 1_700_000_000_223_456_789,
            attributes: vec![
                KeyValue::new("s", "x\"y"),
                KeyValue::new("i", i64::MAX),
                KeyValue::new("b", false),
                KeyValue::new("d", 0.25f64),
                KeyValue::new("nan", f64::NAN),
                KeyValue::new("arr", vec!["a".to_owned(), "b".to_owned()]),
            ],
            status: Status {
                code: StatusCode::Error,
                message: "timeout".into(),
            },
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", "shop")],
            }),
        }
    }

    #[test]
    fn one_line_with_otlp_json_names_and_encodings() {
        let mut out = Vec::new();
        write_span(&mut out, &span()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                "traceId": "abababababababababababababababab",
                "spanId": "00010203040506ff",
                "parentSpanId": "1010101010101010",
                "traceState": "v=1",
                "flags": 1,
                "name": "POST /orders",
                "kind": 3,
                "startTimeUnixNano": "1700000000123456789",
                "endTimeUnixNano": "1700000000223456789",
                "attributes": [
                    {"key": "s", "value": {"stringValue": "x\"y"}},
                    {"key": "i", "value": {"intValue": "9223372036854775807"}},
                    {"key": "b", "value": {"boolValue": false}},
                    {"key": "d", "value": {"doubleValue": 0.25}},
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                    {"key": "arr", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}}
                ],
                "status": {"code": 2, "message": "timeout"}
            })
        );
    }

    #[test]
    fn root_span_has_empty_parent_and_server_kind_two() {
        let mut s = span();
        s.parent_span_id = None;
        s.kind = SpanKind::Server;
        s.status = Status::default();
        let mut out = Vec::new();
        write_span(&mut out, &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["parentSpanId"], "");
        assert_eq!(v["kind"], 2);
        assert_eq!(v["status"], json!({"code": 0, "message": ""}));
    }
}
