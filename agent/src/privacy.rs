//! The privacy policy: what may leave the node, applied to every span before any output.
//!
//! Defaults (the README's privacy promise): bodies are never captured; no header is captured
//! as an attribute except `User-Agent`; [`ALWAYS_SENSITIVE`] headers are never captured even
//! when asked for (asking is a configuration error); query values are `REDACTED` unless
//! allow-listed. On top, configured rules: an attribute deny list, value redaction rules
//! (regex → replacement, over span names, status messages, string attributes and resource
//! attributes) and routes whose spans are dropped entirely (they still count in span metrics,
//! which carry only the route template).

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use sonde_model::{KeyValue, Resource, SmolStr, Span, Value};

/// Headers never captured, whatever the configuration says.
pub const ALWAYS_SENSITIVE: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// The `[privacy]` section of the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// Request headers captured as `http.request.header.<name>`. Default none.
    #[serde(default)]
    pub capture_request_headers: Vec<String>,
    /// Response headers captured as `http.response.header.<name>`. Default none.
    #[serde(default)]
    pub capture_response_headers: Vec<String>,
    /// More headers never captured (added to the built-in list). Default none.
    #[serde(default)]
    pub sensitive_headers: Vec<String>,
    /// Attribute names removed from spans and resources (`prefix.*` for a prefix). Default none.
    #[serde(default)]
    pub deny_attributes: Vec<String>,
    /// Value redaction rules, applied in order. Default none.
    #[serde(default)]
    pub redact: Vec<RedactRule>,
    /// Routes (`http.route`, or `rpc.service/rpc.method`) whose spans are never exported;
    /// `prefix*` for a prefix. Default none.
    #[serde(default)]
    pub drop_routes: Vec<String>,
    /// Services (`service.name`) whose database spans carry the query text as sent, literals
    /// included, in `db.query.text`. Default none: literals are replaced by `?` everywhere.
    #[serde(default)]
    pub raw_query_services: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// What each match becomes. Default `REDACTED`.
    #[serde(default = "redacted")]
    pub replacement: String,
}

fn redacted() -> String {
    "REDACTED".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(
        "[privacy] {field} lists {header:?}, which is never captured (credentials or session \
         data); remove it"
    )]
    SensitiveHeader { field: &'static str, header: String },
    #[error("[privacy] redact pattern {pattern:?}: {source}; fix the regular expression")]
    Pattern {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
}

/// Credentials on a command line (`-H "Authorization: Bearer …"`, `--password=…`,
/// `?api_key=…`): their values are redacted in `process.command_line` whatever the
/// configuration says.
const CMDLINE_SECRETS: &str = r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-auth-token|api[_-]?key|access[_-]?token|token|secret|password|passwd)(\s*[:=]\s*|\s+)((?:bearer|basic)\s+)?[^\s&]+";

fn cmdline_secrets() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(CMDLINE_SECRETS).expect("a valid built-in pattern"))
}

/// `process.command_line` with credential values replaced by `REDACTED`.
pub fn redact_command_line(s: &str) -> String {
    cmdline_secrets()
        .replace_all(s, "${1}${2}${3}REDACTED")
        .into_owned()
}

/// A compiled policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
    /// See [`PrivacySection::raw_query_services`].
    pub raw_query_services: Vec<String>,
    deny: Vec<String>,
    redact: Vec<(Regex, String)>,
    drop_routes: Vec<String>,
    /// Resources already redacted (by the original's pointer), so shared resources stay shared.
    cache: Vec<(Arc<Resource>, Arc<Resource>)>,
}

const RESOURCE_CACHE: usize = 256;

fn matches(list: &[String], name: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

impl Policy {
    pub fn new(s: &PrivacySection) -> Result<Self, PrivacyError> {
        let sensitive: Vec<String> = ALWAYS_SENSITIVE
            .iter()
            .map(|h| (*h).to_owned())
            .chain(s.sensitive_headers.iter().map(|h| h.to_ascii_lowercase()))
            .collect();
        let check = |field: &'static str, list: &[String]| {
            list.iter()
                .map(|h| {
                    let h = h.to_ascii_lowercase();
                    if sensitive.contains(&h) {
                        Err(PrivacyError::SensitiveHeader { field, header: h })
                    } else {
                        Ok(h)
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            request_headers: check("capture_request_headers", &s.capture_request_headers)?,
            response_headers: check("capture_response_headers", &s.capture_response_headers)?,
            raw_query_services: s.raw_query_services.clone(),
            deny: s.deny_attributes.clone(),
            redact: s
                .redact
                .iter()
                .map(|r| {
                    Regex::new(&r.pattern)
                        .map(|re| (re, r.replacement.clone()))
                        .map_err(|e| PrivacyError::Pattern {
                            pattern: r.pattern.clone(),
                            source: Box::new(e),
                        })
                })
                .collect::<Result<_, _>>()?,
            drop_routes: s.drop_routes.clone(),
            cache: Vec::new(),
        })
    }

    /// Whether a span of this route is dropped entirely.
    pub fn drops(&self, span: &Span) -> bool {
        if self.drop_routes.is_empty() {
            return false;
        }
        route_of(span).is_some_and(|r| matches(&self.drop_routes, &r))
    }

    /// Applies the redaction rules to one value (span-metric attributes use it too).
    pub fn redact_str(&self, s: &mut String) {
        for (re, with) in &self.redact {
            if let std::borrow::Cow::Owned(out) = re.replace_all(s, with.as_str()) {
                *s = out;
            }
        }
    }

    /// [`Self::redact_str`] for an attribute string: replaced only when a rule matched.
    fn redact_smol(&self, s: &mut SmolStr) {
        let mut out: Option<String> = None;
        for (re, with) in &self.redact {
            let cur = out.as_deref().unwrap_or(s.as_str());
            if let std::borrow::Cow::Owned(o) = re.replace_all(cur, with.as_str()) {
                out = Some(o);
            }
        }
        if let Some(o) = out {
            *s = SmolStr::from(o);
        }
    }

    fn clean(&self, attrs: &mut Vec<KeyValue>) {
        if !self.deny.is_empty() {
            attrs.retain(|kv| !matches(&self.deny, &kv.key));
        }
        if self.redact.is_empty() {
            return;
        }
        for kv in attrs {
            match &mut kv.value {
                Value::Str(s) => self.redact_smol(s),
                Value::StrArray(v) => v.iter_mut().for_each(|s| self.redact_str(s)),
                _ => {}
            }
        }
    }

    /// Applies the deny list and redaction rules to a span about to leave.
    pub fn apply(&mut self, span: &mut Span) {
        self.clean(&mut span.attributes);
        self.redact_str(&mut span.name);
        self.redact_str(&mut span.status.message);
        span.resource = self.resource(&span.resource);
    }

    /// The resource as it may leave the node (deny list, redaction, command-line secrets);
    /// span metrics carry it too.
    pub fn resource(&mut self, r: &Arc<Resource>) -> Arc<Resource> {
        if let Some((_, done)) = self.cache.iter().find(|(o, _)| Arc::ptr_eq(o, r)) {
            return Arc::clone(done);
        }
        let mut clean = (**r).clone();
        self.clean(&mut clean.attributes);
        for kv in &mut clean.attributes {
            if let (true, Value::Str(s)) = (kv.key == "process.command_line", &mut kv.value) {
                *s = SmolStr::from(redact_command_line(s));
            }
        }
        let clean = Arc::new(clean);
        if self.cache.len() >= RESOURCE_CACHE {
            self.cache.remove(0);
        }
        self.cache.push((Arc::clone(r), Arc::clone(&clean)));
        clean
    }
}

/// The route of a span: `http.route`, or `rpc.service/rpc.method`.
pub fn route_of(span: &Span) -> Option<String> {
    if let Some(Value::Str(r)) = span.attr("http.route") {
        return Some(r.to_string());
    }
    match (span.attr("rpc.service"), span.attr("rpc.method")) {
        (Some(Value::Str(s)), Some(Value::Str(m))) => Some(format!("{s}/{m}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_model::{SpanId, SpanKind, Status, TraceId};

    fn span(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([1; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET /login".into(),
            kind: SpanKind::Server,
            start_unix_nanos: 0,
            end_unix_nanos: 1,
            attributes: attrs,
            status: Status::default(),
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new(
                    "process.command_line",
                    "app --token=sk_live_abc123",
                )],
            }),
        }
    }

    #[test]
    fn sensitive_headers_cannot_be_captured() {
        let e = Policy::new(&PrivacySection {
            capture_request_headers: vec!["X-Request-Id".into(), "Cookie".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("capture_request_headers") && e.contains("cookie"),
            "{e}"
        );
        let e = Policy::new(&PrivacySection {
            capture_response_headers: vec!["x-secret".into()],
            sensitive_headers: vec!["X-Secret".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("x-secret"), "{e}");
        let p = Policy::new(&PrivacySection {
            capture_request_headers: vec!["X-Request-Id".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.request_headers, ["x-request-id"]);
    }

    #[test]
    fn deny_list_and_redaction_apply_to_spans_and_resources() {
        let mut p = Policy::new(&PrivacySection {
            deny_attributes: vec!["client.*".into(), "user_agent.original".into()],
            redact: vec![RedactRule {
                pattern: "sk_live_[A-Za-z0-9]+".into(),
                replacement: "<key>".into(),
            }],
            ..Default::default()
        })
        .unwrap();
        let mut s = span(vec![
            KeyValue::new("client.address", "10.0.0.1"),
            KeyValue::new("client.port", 5000i64),
            KeyValue::new("user_agent.original", "curl"),
            KeyValue::new("url.path", "/login/sk_live_zzz"),
            KeyValue::new("http.route", "/login"),
        ]);
        p.apply(&mut s);
        let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_ref()).collect();
        assert_eq!(keys, ["url.path", "http.route"]);
        assert_eq!(s.attr("url.path"), Some(&Value::from("/login/<key>")));
        assert_eq!(
            s.resource.get("process.command_line"),
            Some(&Value::from("app --token=REDACTED")),
            "the configured rule, then the built-in one"
        );
        let mut again = span(Vec::new());
        let shared = Arc::clone(&s.resource);
        again.resource = Arc::clone(&s.resource);
        p.apply(&mut again);
        assert_eq!(again.resource, shared);
    }

    #[test]
    fn credentials_on_command_lines_are_always_redacted() {
        assert_eq!(
            redact_command_line(
                "curl -H Authorization: Bearer abc.def -H Cookie: s=1 http://h/p?api_key=k1&page=2 --password=hunter2 --token-file /t"
            ),
            "curl -H Authorization: Bearer REDACTED -H Cookie: REDACTED http://h/p?api_key=REDACTED&page=2 --password=REDACTED --token-file /t"
        );
        let mut p = Policy::default();
        let mut s = span(Vec::new());
        s.resource = Arc::new(Resource {
            attributes: vec![KeyValue::new("process.command_line", "app --secret xyz")],
        });
        p.apply(&mut s);
        assert_eq!(
            s.resource.get("process.command_line"),
            Some(&Value::from("app --secret REDACTED"))
        );
    }

    #[test]
    fn routes_are_dropped_by_exact_name_or_prefix() {
        let p = Policy::new(&PrivacySection {
            drop_routes: vec!["/internal/*".into(), "/login".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(p.drops(&span(vec![KeyValue::new("http.route", "/login")])));
        assert!(p.drops(&span(vec![KeyValue::new("http.route", "/internal/{id}")])));
        assert!(!p.drops(&span(vec![KeyValue::new("http.route", "/logout")])));
        let e = Policy::new(&PrivacySection {
            redact: vec![RedactRule {
                pattern: "(".into(),
                replacement: String::new(),
            }],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("redact pattern \"(\""), "{e}");
    }
}
