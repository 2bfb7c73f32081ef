//! OTLP protobuf bytes written straight from sonde's span model.
//!
//! [`crate::otlp::to_request`] builds opentelemetry-proto structs (a `String` per attribute key,
//! a struct per value) only for prost to walk them once and drop them; on a busy node that was
//! most of the agent's export CPU. This writes the same bytes directly: lengths are computed
//! first (nested messages are length-prefixed), then fields are written in tag order with
//! proto3's defaults left out, exactly as prost does. A test checks the bytes are equal to
//! prost's encoding of `to_request` for spans covering every field and value kind.

use std::sync::Arc;

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::span::{KeyValue, Resource, Span, SpanKind, StatusCode, Value};

/// Name of the instrumentation scope on every exported span.
pub const SCOPE_NAME: &str = "sonde";

/// The spans of each resource, by index, groups and members in first-seen order. A span joins
/// the group of the span before it when they share the `Arc` (the common case, checked first),
/// else the first group with an equal resource.
pub(crate) fn group_by_resource(spans: &[Span]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&Arc<Resource>, Vec<usize>)> = Vec::new();
    let mut last = 0usize;
    for (i, span) in spans.iter().enumerate() {
        let r = &span.resource;
        let idx = if groups.get(last).is_some_and(|(g, _)| Arc::ptr_eq(g, r)) {
            last
        } else if let Some(found) = groups
            .iter()
            .position(|(g, _)| Arc::ptr_eq(g, r) || ***g == **r)
        {
            found
        } else {
            groups.push((r, Vec::new()));
            groups.len() - 1
        };
        last = idx;
        groups[idx].1.push(i);
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// The request `to_request(spans, scope)` would make, encoded (grouped by resource the same
/// way, [`group_by_resource`]).
pub fn encode_request(spans: &[Span], scope_version: &str) -> Vec<u8> {
    let groups: Vec<(&Arc<Resource>, Vec<&Span>)> = group_by_resource(spans)
        .into_iter()
        .map(|members| {
            let spans: Vec<&Span> = members.into_iter().map(|i| &spans[i]).collect();
            (&spans[0].resource, spans)
        })
        .collect();
    let scope_len = scope_len(scope_version);
    let mut plans = Vec::with_capacity(groups.len());
    let mut total = 0;
    for (resource, spans) in &groups {
        let resource_len = attrs_len(1, &resource.attributes);
        let span_lens: Vec<usize> = spans.iter().map(|s| span_len(s)).collect();
        let scope_spans_len =
            message_len(1, scope_len) + span_lens.iter().map(|&l| message_len(2, l)).sum::<usize>();
        let resource_spans_len = message_len(1, resource_len) + message_len(2, scope_spans_len);
        total += message_len(1, resource_spans_len);
        plans.push((resource_len, span_lens, scope_spans_len, resource_spans_len));
    }
    let mut buf = Vec::with_capacity(total);
    for ((resource, spans), (resource_len, span_lens, scope_spans_len, resource_spans_len)) in
        groups.iter().zip(plans)
    {
        // ExportTraceServiceRequest.resource_spans = 1
        put_len(&mut buf, 1, resource_spans_len);
        // ResourceSpans.resource = 1
        put_len(&mut buf, 1, resource_len);
        put_attrs(&mut buf, 1, &resource.attributes);
        // ResourceSpans.scope_spans = 2
        put_len(&mut buf, 2, scope_spans_len);
        // ScopeSpans.scope = 1
        put_len(&mut buf, 1, scope_len);
        put_str(&mut buf, 1, SCOPE_NAME);
        put_str(&mut buf, 2, scope_version);
        // ScopeSpans.spans = 2
        for (span, len) in spans.iter().zip(span_lens) {
            put_len(&mut buf, 2, len);
            put_span(&mut buf, span);
        }
    }
    debug_assert_eq!(buf.len(), total);
    buf
}

/// Key and length prefix of a length-delimited field holding `len` bytes, plus those bytes.
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        message_len(tag, s.len())
    }
}

fn scope_len(version: &str) -> usize {
    str_len(1, SCOPE_NAME) + str_len(2, version)
}

fn status_code(code: StatusCode) -> u64 {
    match code {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

fn kind_number(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// The `Status` message, when the span has one (`to_request` leaves an unset, empty one out).
fn status_len(span: &Span) -> Option<usize> {
    let code = status_code(span.status.code);
    if code == 0 && span.status.message.is_empty() {
        return None;
    }
    let code_len = if code == 0 {
        0
    } else {
        key_len(3) + encoded_len_varint(code)
    };
    Some(str_len(2, &span.status.message) + code_len)
}

fn span_len(span: &Span) -> usize {
    let mut n = message_len(1, 16) + message_len(2, 8);
    n += str_len(3, &span.trace_state);
    if span.parent_span_id.is_some() {
        n += message_len(4, 8);
    }
    n += str_len(5, &span.name);
    n += key_len(6) + encoded_len_varint(kind_number(span.kind));
    if span.start_unix_nanos != 0 {
        n += key_len(7) + 8;
    }
    if span.end_unix_nanos != 0 {
        n += key_len(8) + 8;
    }
    n += attrs_len(9, &span.attributes);
    if let Some(l) = status_len(span) {
        n += message_len(15, l);
    }
    if span.flags != 0 {
        n += key_len(16) + 4;
    }
    n
}

fn put_span(buf: &mut Vec<u8>, span: &Span) {
    put_bytes(buf, 1, &span.trace_id.0);
    put_bytes(buf, 2, &span.span_id.0);
    put_str(buf, 3, &span.trace_state);
    if let Some(p) = &span.parent_span_id {
        put_bytes(buf, 4, &p.0);
    }
    put_str(buf, 5, &span.name);
    encode_key(6, WireType::Varint, buf);
    encode_varint(kind_number(span.kind), buf);
    if span.start_unix_nanos != 0 {
        encode_key(7, WireType::SixtyFourBit, buf);
        buf.put_u64_le(span.start_unix_nanos);
    }
    if span.end_unix_nanos != 0 {
        encode_key(8, WireType::SixtyFourBit, buf);
        buf.put_u64_le(span.end_unix_nanos);
    }
    put_attrs(buf, 9, &span.attributes);
    if let Some(l) = status_len(span) {
        put_len(buf, 15, l);
        put_str(buf, 2, &span.status.message);
        let code = status_code(span.status.code);
        if code != 0 {
            encode_key(3, WireType::Varint, buf);
            encode_varint(code, buf);
        }
    }
    if span.flags != 0 {
        encode_key(16, WireType::ThirtyTwoBit, buf);
        // Only the W3C trace flags, as `span_to_proto` does.
        buf.put_u32_le(u32::from(span.flags) & 0xff);
    }
}

/// `AnyValue` contents: a oneof, so even a default value is written.
fn value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => message_len(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::Double(_) => key_len(4) + 8,
        Value::StrArray(items) => message_len(5, array_len(items)),
    }
}

fn array_len(items: &[String]) -> usize {
    items
        .iter()
        .map(|s| message_len(1, message_len(1, s.len())))
        .sum()
}

fn kv_len(kv: &KeyValue) -> usize {
    str_len(1, &kv.key) + message_len(2, value_len(&kv.value))
}

fn attrs_len(tag: u32, attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| message_len(tag, kv_len(kv))).sum()
}

fn put_attrs(buf: &mut Vec<u8>, tag: u32, attrs: &[KeyValue]) {
    for kv in attrs {
        put_len(buf, tag, kv_len(kv));
        put_str(buf, 1, &kv.key);
        put_len(buf, 2, value_len(&kv.value));
        match &kv.value {
            Value::Str(s) => put_len_bytes(buf, 1, s.as_bytes()),
            Value::Bool(b) => {
                encode_key(2, WireType::Varint, buf);
                encode_varint(u64::from(*b), buf);
            }
            Value::Int(i) => {
                encode_key(3, WireType::Varint, buf);
                encode_varint(*i as u64, buf);
            }
            Value::Double(d) => {
                encode_key(4, WireType::SixtyFourBit, buf);
                buf.put_f64_le(*d);
            }
            Value::StrArray(items) => {
                put_len(buf, 5, array_len(items));
                for s in items {
                    put_len(buf, 1, message_len(1, s.len()));
                    put_len_bytes(buf, 1, s.as_bytes());
                }
            }
        }
    }
}

fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A length-delimited field, written even when empty (inside a oneof).
fn put_len_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

/// A proto3 `string`/`bytes` field: left out when empty.
fn put_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
    put_bytes(buf, tag, s.as_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_bytes(buf, tag, bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use prost::Message as _;

    use super::*;
    use crate::{
        otlp::{scope, to_request},
        span::{SpanId, Status, TraceId},
    };

    fn resource(attrs: Vec<KeyValue>) -> Arc<Resource> {
        Arc::new(Resource { attributes: attrs })
    }

    fn kv(key: &'static str, value: Value) -> KeyValue {
        KeyValue {
            key: Cow::Borrowed(key),
            value,
        }
    }

    fn spans() -> Vec<Span> {
        let a = resource(vec![
            kv("service.name", Value::Str("checkout".into())),
            kv("process.pid", Value::Int(4242)),
        ]);
        let b = resource(vec![kv("service.name", Value::Str("cart".into()))]);
        // Equal to `a` by value but another allocation: grouped with `a`.
        let a2 = resource(a.attributes.clone());
        let empty = resource(Vec::new());
        let base = Span {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0x01; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET /users/{id}".into(),
            kind: SpanKind::Server,
            start_unix_nanos: 1_700_000_000_123_456_789,
            end_unix_nanos: 1_700_000_000_223_456_789,
            attributes: vec![
                kv("http.request.method", Value::Str("GET".into())),
                kv("http.response.status_code", Value::Int(200)),
                kv("negative", Value::Int(-7)),
                kv("zero", Value::Int(0)),
                kv("empty", Value::Str("".into())),
                kv("flag", Value::Bool(true)),
                kv("off", Value::Bool(false)),
                kv("ratio", Value::Double(0.25)),
                kv("nothing", Value::Double(0.0)),
                kv(
                    "list",
                    Value::StrArray(vec!["a".into(), String::new(), "ccc".into()]),
                ),
                kv("none", Value::StrArray(Vec::new())),
                KeyValue {
                    key: Cow::Owned("owned.key".into()),
                    value: Value::Str("x".repeat(300).into()),
                },
            ],
            status: Status::default(),
            resource: Arc::clone(&a),
        };
        let mut out = vec![base.clone()];
        out.push(Span {
            span_id: SpanId([2; 8]),
            parent_span_id: Some(SpanId([1; 8])),
            trace_state: "vendor=1".into(),
            kind: SpanKind::Client,
            status: Status {
                code: StatusCode::Error,
                message: "connection reset".into(),
            },
            resource: Arc::clone(&b),
            ..base.clone()
        });
        out.push(Span {
            span_id: SpanId([3; 8]),
            flags: 0,
            kind: SpanKind::Internal,
            status: Status {
                code: StatusCode::Ok,
                message: String::new(),
            },
            attributes: Vec::new(),
            resource: a2,
            ..base.clone()
        });
        out.push(Span {
            span_id: SpanId([4; 8]),
            name: String::new(),
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            status: Status {
                code: StatusCode::Unset,
                message: "only a message".into(),
            },
            resource: empty,
            ..base.clone()
        });
        out.push(Span {
            span_id: SpanId([5; 8]),
            resource: Arc::clone(&b),
            ..base
        });
        out
    }

    #[test]
    fn bytes_equal_prosts_encoding_of_the_proto_structs() {
        let spans = spans();
        let want = to_request(spans.clone(), &scope("9.8.7")).encode_to_vec();
        let got = encode_request(&spans, "9.8.7");
        assert_eq!(got, want);
        // One span, one resource; and nothing at all.
        let one = vec![spans[1].clone()];
        assert_eq!(
            encode_request(&one, "1"),
            to_request(one.clone(), &scope("1")).encode_to_vec()
        );
        assert_eq!(
            encode_request(&[], "1"),
            to_request(Vec::new(), &scope("1")).encode_to_vec()
        );
    }

    #[test]
    fn decodes_back_to_the_same_request() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let spans = spans();
        let decoded =
            ExportTraceServiceRequest::decode(encode_request(&spans, "2").as_slice()).unwrap();
        assert_eq!(decoded, to_request(spans, &scope("2")));
        assert_eq!(decoded.resource_spans.len(), 3);
    }
}
