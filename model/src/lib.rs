//! The span model: what the pipeline produces and every exporter consumes.
//!
//! Kept deliberately close to OTLP (ids, kinds, status, typed attribute values, one resource per
//! traced process) so the OTLP conversion is a direct mapping, while staying independent of any
//! protobuf crate: the console and JSON outputs use it too.

use std::{borrow::Cow, fmt, sync::Arc};

/// A 16-byte W3C trace id (never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id (never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
}

impl SpanId {
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Status {
    pub code: StatusCode,
    /// Only meaningful with `StatusCode::Error`.
    pub message: String,
}

pub use smol_str::SmolStr;

/// A typed attribute value, as in OTLP's `AnyValue` (the subset sonde produces).
///
/// Strings are [`SmolStr`]: up to 23 bytes inline (most values: methods, addresses, routes,
/// short paths) and shared beyond, so building and cloning a span's attributes allocates little.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(SmolStr),
    Int(i64),
    Bool(bool),
    Double(f64),
    StrArray(Vec<String>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(SmolStr::new(s))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Self::Str(SmolStr::new(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(SmolStr::from(s))
    }
}

impl From<SmolStr> for Value {
    fn from(s: SmolStr) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Self::StrArray(v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// Attribute names are nearly always static strings: no allocation for them.
    pub key: Cow<'static, str>,
    pub value: Value,
}

impl KeyValue {
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Attributes describing the entity that produced spans: one per traced process (service).
/// Spans are grouped by resource when exported.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
}

impl Resource {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }

    /// `service.name`, if set.
    pub fn service_name(&self) -> Option<&str> {
        match self.get("service.name") {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// W3C trace flags: bit 0 = sampled.
pub const FLAG_SAMPLED: u8 = 0x01;

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Absent for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C `tracestate` of the trace, passed on unchanged (may be empty).
    pub trace_state: String,
    /// W3C trace flags.
    pub flags: u8,
    pub name: String,
    pub kind: SpanKind,
    /// Unix time in nanoseconds.
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
    /// Shared by all spans of one process.
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }
}
