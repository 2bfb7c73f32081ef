//! Exporter configuration: the standard `OTEL_EXPORTER_OTLP_*` / `OTEL_BSP_*` variables, a
//! config-file section and CLI flags, merged in that order of increasing precedence.
//!
//! Every layer (file, environment, CLI) is an [`ExportFileConfig`] whose unset fields are
//! `None`; [`ExportFileConfig::merge`] lays one over another and [`ExportConfig::resolve`]
//! fills in defaults, derives the traces endpoint and validates. Bad values are errors that
//! name the variable or field and say what to write instead: a misspelt protocol silently
//! falling back to a default would ship spans nowhere.

mod env;
mod headers;

use std::{collections::BTreeMap, path::PathBuf, str::FromStr, time::Duration};

use serde::Deserialize;

pub use env::ENV_VARS;
pub use headers::{HeaderError, parse_headers, percent_decode};

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), default port 4317.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`), default port 4318.
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }

    /// The spec's default endpoint for this protocol (already the traces URL for HTTP).
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Self::Grpc => "http://localhost:4317",
            Self::HttpProtobuf => "http://localhost:4318/v1/traces",
        }
    }
}

impl FromStr for Protocol {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Err(ValueError::HttpJsonUnsupported),
            _ => Err(ValueError::Protocol),
        }
    }
}

impl TryFrom<String> for Protocol {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        s.parse()
    }
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl FromStr for Compression {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim() {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            _ => Err(ValueError::Compression),
        }
    }
}

impl TryFrom<String> for Compression {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        s.parse()
    }
}

/// What is wrong with one value, whatever layer it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected grpc or http/protobuf")]
    Protocol,
    #[error("http/json is not supported by sonde; use http/protobuf or grpc")]
    HttpJsonUnsupported,
    #[error("expected gzip or none")]
    Compression,
    #[error("expected true or false")]
    Bool,
    #[error("expected a whole number of milliseconds")]
    Millis,
    #[error("expected a whole number greater than zero")]
    Count,
    #[error("{0}")]
    Headers(#[from] HeaderError),
}

/// Batching between the pipeline and the exporter (the `OTEL_BSP_*` knobs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Longest a span waits before its batch is sent (`OTEL_BSP_SCHEDULE_DELAY`).
    /// Default 1000 ms, not the spec's 5000: sonde's spans are already finished when they
    /// arrive, and a second keeps traces visible quickly without small requests under load
    /// (a full batch is sent at once anyway).
    pub schedule_delay: Duration,
    /// Longest one batch may take, retries included, before it is dropped
    /// (`OTEL_BSP_EXPORT_TIMEOUT`). Default 30000 ms.
    pub export_timeout: Duration,
    /// Bound of the queue; spans offered beyond it are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    /// Default 2048.
    pub max_queue_size: usize,
    /// Most spans per request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`). Default 512; at most
    /// `max_queue_size`.
    pub max_export_batch_size: usize,
    /// Batches in flight at once (`OTEL_BSP_MAX_CONCURRENT_EXPORTS`, the name
    /// opentelemetry-rust uses). Default 4: one request at a time caps the throughput at a
    /// batch per round trip, and a busy node makes more spans than that. Memory stays within
    /// `max_queue_size + max_concurrent_exports × max_export_batch_size` spans.
    pub max_concurrent_exports: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_millis(1000),
            export_timeout: Duration::from_millis(30_000),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            max_concurrent_exports: 4,
        }
    }
}

/// Retries of retryable export failures. The total time is bounded by
/// [`BatchConfig::export_timeout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Default true.
    pub enabled: bool,
    /// Delay before the first retry, doubled after each (with jitter). Default 500 ms.
    pub initial_backoff: Duration,
    /// Cap on the delay between attempts (server throttling may ask for more). Default 5 s.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Certificates and keys (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA to trust for the server instead of the system roots (`..._CERTIFICATE`).
    pub certificate: Option<PathBuf>,
    /// Client certificate for mutual TLS (`..._CLIENT_CERTIFICATE`); needs `client_key`.
    pub client_certificate: Option<PathBuf>,
    /// Its private key (`..._CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
}

/// The resolved exporter configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportConfig {
    pub protocol: Protocol,
    /// The full traces URL: for gRPC the server's origin, for HTTP the URL POSTed to.
    /// TLS is used exactly when the scheme is `https`.
    pub endpoint: http::Uri,
    /// Sent with every request (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`). Default 10000 ms.
    pub timeout: Duration,
    /// Default none.
    pub compression: Compression,
    pub tls: TlsFiles,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    /// Version of the `sonde` instrumentation scope. Default: this crate's version; the agent
    /// sets its own.
    pub scope_version: String,
}

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// One layer of exporter settings: the `[export.otlp]` file section, or what the environment
/// or the CLI set. Every field is optional; unset fields fall through to lower layers and then
/// to the defaults documented on [`ExportConfig`], [`BatchConfig`] and [`RetryConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFileConfig {
    /// Base URL of the collector, like `OTEL_EXPORTER_OTLP_ENDPOINT`: for http/protobuf
    /// `/v1/traces` is appended. Default `http://localhost:4317` (grpc) or
    /// `http://localhost:4318` (http/protobuf).
    pub endpoint: Option<String>,
    /// Full traces URL, used as is, like `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; wins over
    /// `endpoint` of the same layer. Either one in a higher layer replaces both of a lower.
    pub traces_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Default `grpc`.
    pub protocol: Option<Protocol>,
    /// Extra request headers. Default none.
    pub headers: Option<BTreeMap<String, String>>,
    /// Per-request timeout. Default 10000.
    pub timeout_ms: Option<u64>,
    /// `gzip` or `none`. Default `none`.
    pub compression: Option<Compression>,
    /// PEM CA certificate to verify the collector. Default: the system roots.
    pub certificate: Option<PathBuf>,
    /// PEM client certificate (mutual TLS). Default none.
    pub client_certificate: Option<PathBuf>,
    /// PEM private key of `client_certificate`. Default none.
    pub client_key: Option<PathBuf>,
    /// gRPC only, for an endpoint without `http://`/`https://`: true = plaintext.
    /// Default false (TLS).
    pub insecure: Option<bool>,
    /// Default 1000 (see [`BatchConfig::schedule_delay`]).
    pub schedule_delay_ms: Option<u64>,
    /// Default 30000.
    pub export_timeout_ms: Option<u64>,
    /// Default 2048.
    pub max_queue_size: Option<usize>,
    /// Default 512.
    pub max_export_batch_size: Option<usize>,
    /// Default 4.
    pub max_concurrent_exports: Option<usize>,
    /// Default true.
    pub retry_enabled: Option<bool>,
    /// Default 500.
    pub retry_initial_backoff_ms: Option<u64>,
    /// Default 5000.
    pub retry_max_backoff_ms: Option<u64>,
}

impl ExportFileConfig {
    /// The layer the standard environment variables describe; `get` looks a variable up
    /// (`|n| std::env::var(n).ok()` in the agent). Empty values count as unset, and a
    /// signal-specific `OTEL_EXPORTER_OTLP_TRACES_*` wins over its generic variable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        env::layer_from_env(get)
    }

    /// `self` with every field that `higher` sets replaced by it.
    pub fn merge(self, higher: ExportFileConfig) -> ExportFileConfig {
        let (endpoint, traces_endpoint) =
            if higher.endpoint.is_some() || higher.traces_endpoint.is_some() {
                (higher.endpoint, higher.traces_endpoint)
            } else {
                (self.endpoint, self.traces_endpoint)
            };
        ExportFileConfig {
            endpoint,
            traces_endpoint,
            protocol: higher.protocol.or(self.protocol),
            headers: higher.headers.or(self.headers),
            timeout_ms: higher.timeout_ms.or(self.timeout_ms),
            compression: higher.compression.or(self.compression),
            certificate: higher.certificate.or(self.certificate),
            client_certificate: higher.client_certificate.or(self.client_certificate),
            client_key: higher.client_key.or(self.client_key),
            insecure: higher.insecure.or(self.insecure),
            schedule_delay_ms: higher.schedule_delay_ms.or(self.schedule_delay_ms),
            export_timeout_ms: higher.export_timeout_ms.or(self.export_timeout_ms),
            max_queue_size: higher.max_queue_size.or(self.max_queue_size),
            max_export_batch_size: higher.max_export_batch_size.or(self.max_export_batch_size),
            max_concurrent_exports: higher
                .max_concurrent_exports
                .or(self.max_concurrent_exports),
            retry_enabled: higher.retry_enabled.or(self.retry_enabled),
            retry_initial_backoff_ms: higher
                .retry_initial_backoff_ms
                .or(self.retry_initial_backoff_ms),
            retry_max_backoff_ms: higher.retry_max_backoff_ms.or(self.retry_max_backoff_ms),
        }
    }
}

/// An invalid exporter configuration. Fields are named as in the file, with the environment
/// variable in parentheses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value}: {problem}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        problem: ValueError,
    },
    #[error(
        "{field} ({var}) = {value:?} is not a valid URL: {problem}; write it like http://collector:4317"
    )]
    InvalidEndpoint {
        field: &'static str,
        var: &'static str,
        value: String,
        problem: EndpointProblem,
    },
    #[error("headers: {name:?} cannot be sent as a request header ({problem}); fix {var}")]
    InvalidHeader {
        name: String,
        var: &'static str,
        problem: &'static str,
    },
    /// `field` names the file field and its variable.
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    #[error(
        "max_export_batch_size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) = {batch} is larger than max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) = {queue}; lower the batch size or raise the queue size"
    )]
    BatchLargerThanQueue { batch: usize, queue: usize },
    #[error(
        "retry_initial_backoff_ms = {initial_ms} is larger than retry_max_backoff_ms = {max_ms}; lower the first or raise the second"
    )]
    BackoffOrder { initial_ms: u128, max_ms: u128 },
    #[error(
        "{present} is set but {missing} is not: mutual TLS needs both the client certificate and its key"
    )]
    IncompleteClientIdentity {
        present: &'static str,
        missing: &'static str,
    },
}

/// Why an endpoint does not parse.
#[derive(Debug, thiserror::Error)]
pub enum EndpointProblem {
    #[error("{source}")]
    Syntax {
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("{source}")]
    Parts {
        #[source]
        source: http::uri::InvalidUriParts,
    },
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("it has no host")]
    NoHost,
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

impl ExportConfig {
    /// Defaults overridden by the standard environment variables.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::resolve(ExportFileConfig::from_env(get)?)
    }

    /// Defaults overridden by one (merged) layer, then validated.
    pub fn resolve(layer: ExportFileConfig) -> Result<Self, ConfigError> {
        let protocol = layer.protocol.unwrap_or(Protocol::Grpc);
        let endpoint = resolve_endpoint(
            protocol,
            layer.endpoint.as_deref(),
            layer.traces_endpoint.as_deref(),
            layer.insecure.unwrap_or(false),
        )?;
        let mut headers = Vec::new();
        for (name, value) in layer.headers.unwrap_or_default() {
            headers.push((name.trim().to_ascii_lowercase(), value));
        }
        let defaults_batch = BatchConfig::default();
        let defaults_retry = RetryConfig::default();
        let max_queue_size = layer
            .max_queue_size
            .unwrap_or(defaults_batch.max_queue_size);
        let config = ExportConfig {
            protocol,
            endpoint,
            headers,
            timeout: ms(layer.timeout_ms, DEFAULT_TIMEOUT),
            compression: layer.compression.unwrap_or_default(),
            tls: TlsFiles {
                certificate: layer.certificate,
                client_certificate: layer.client_certificate,
                client_key: layer.client_key,
            },
            batch: BatchConfig {
                schedule_delay: ms(layer.schedule_delay_ms, defaults_batch.schedule_delay),
                export_timeout: ms(layer.export_timeout_ms, defaults_batch.export_timeout),
                max_queue_size,
                // The default batch shrinks to a smaller queue; only two explicit values
                // can disagree.
                max_export_batch_size: layer.max_export_batch_size.unwrap_or(
                    defaults_batch
                        .max_export_batch_size
                        .min(max_queue_size.max(1)),
                ),
                max_concurrent_exports: layer
                    .max_concurrent_exports
                    .unwrap_or(defaults_batch.max_concurrent_exports),
            },
            retry: RetryConfig {
                enabled: layer.retry_enabled.unwrap_or(defaults_retry.enabled),
                initial_backoff: ms(
                    layer.retry_initial_backoff_ms,
                    defaults_retry.initial_backoff,
                ),
                max_backoff: ms(layer.retry_max_backoff_ms, defaults_retry.max_backoff),
            },
            scope_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between fields that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |d: Duration, field| {
            if d.is_zero() {
                Err(ConfigError::Zero { field })
            } else {
                Ok(())
            }
        };
        zero(self.timeout, "timeout_ms (OTEL_EXPORTER_OTLP_TIMEOUT)")?;
        zero(
            self.batch.schedule_delay,
            "schedule_delay_ms (OTEL_BSP_SCHEDULE_DELAY)",
        )?;
        zero(
            self.batch.export_timeout,
            "export_timeout_ms (OTEL_BSP_EXPORT_TIMEOUT)",
        )?;
        if self.batch.max_queue_size == 0 {
            return Err(ConfigError::Zero {
                field: "max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE)",
            });
        }
        if self.batch.max_export_batch_size == 0 {
            return Err(ConfigError::Zero {
                field: "max_export_batch_size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
            });
        }
        if self.batch.max_concurrent_exports == 0 {
            return Err(ConfigError::Zero {
                field: "max_concurrent_exports (OTEL_BSP_MAX_CONCURRENT_EXPORTS)",
            });
        }
        if self.batch.max_export_batch_size > self.batch.max_queue_size {
            return Err(ConfigError::BatchLargerThanQueue {
                batch: self.batch.max_export_batch_size,
                queue: self.batch.max_queue_size,
            });
        }
        if self.retry.enabled {
            zero(self.retry.initial_backoff, "retry_initial_backoff_ms")?;
            if self.retry.initial_backoff > self.retry.max_backoff {
                return Err(ConfigError::BackoffOrder {
                    initial_ms: self.retry.initial_backoff.as_millis(),
                    max_ms: self.retry.max_backoff.as_millis(),
                });
            }
        }
        match (&self.tls.client_certificate, &self.tls.client_key) {
            (Some(_), None) => {
                return Err(ConfigError::IncompleteClientIdentity {
                    present: "client_certificate (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)",
                    missing: "client_key (OTEL_EXPORTER_OTLP_CLIENT_KEY)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::IncompleteClientIdentity {
                    present: "client_key (OTEL_EXPORTER_OTLP_CLIENT_KEY)",
                    missing: "client_certificate (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)",
                });
            }
            _ => {}
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::InvalidHeader {
                    name: name.clone(),
                    var: "OTEL_EXPORTER_OTLP_HEADERS",
                    problem: "not a valid header name",
                });
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(ConfigError::InvalidHeader {
                    name: name.clone(),
                    var: "OTEL_EXPORTER_OTLP_HEADERS",
                    problem: "its value has characters a header cannot carry",
                });
            }
        }
        Ok(())
    }

    /// Whether requests go over TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoint.scheme_str() == Some("https")
    }
}

impl Default for ExportConfig {
    /// The spec defaults: gRPC to `http://localhost:4317`, no headers, no compression.
    fn default() -> Self {
        Self::resolve(ExportFileConfig::default()).expect("the defaults are valid")
    }
}

/// The traces URL from a layer's generic base `endpoint` and signal-specific
/// `traces_endpoint`, per the OTLP exporter spec: the signal one is used as is and wins; for
/// http/protobuf the base gets `/v1/traces` appended (after its own path); gRPC uses the base
/// as is. A gRPC endpoint without a scheme means TLS unless `insecure`.
pub fn resolve_endpoint(
    protocol: Protocol,
    endpoint: Option<&str>,
    traces_endpoint: Option<&str>,
    insecure: bool,
) -> Result<http::Uri, ConfigError> {
    let (field, var, raw, append) = match (traces_endpoint, endpoint) {
        (Some(t), _) => (
            "traces_endpoint",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            t.trim(),
            false,
        ),
        (None, Some(e)) => (
            "endpoint",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            e.trim(),
            protocol == Protocol::HttpProtobuf,
        ),
        (None, None) => {
            return Ok(http::Uri::from_static(protocol.default_endpoint()));
        }
    };
    let bad = |problem| ConfigError::InvalidEndpoint {
        field,
        var,
        value: raw.to_owned(),
        problem,
    };
    let with_scheme;
    let text = if protocol == Protocol::Grpc && !raw.contains("://") {
        with_scheme = format!("{}://{raw}", if insecure { "http" } else { "https" });
        &with_scheme
    } else {
        raw
    };
    let uri: http::Uri = text
        .parse()
        .map_err(|source| bad(EndpointProblem::Syntax { source }))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad(EndpointProblem::Scheme)),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(EndpointProblem::NoHost));
    }
    if !append {
        return Ok(uri);
    }
    let mut parts = uri.into_parts();
    let (path, query) = match &parts.path_and_query {
        Some(pq) => (
            pq.path().trim_end_matches('/').to_owned(),
            pq.query().map(str::to_owned),
        ),
        None => (String::new(), None),
    };
    let pq = match query {
        Some(q) => format!("{path}/v1/traces?{q}"),
        None => format!("{path}/v1/traces"),
    };
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|source| bad(EndpointProblem::Syntax { source }))?,
    );
    http::Uri::from_parts(parts).map_err(|source| bad(EndpointProblem::Parts { source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(p: Protocol, e: Option<&str>, t: Option<&str>, insecure: bool) -> String {
        resolve_endpoint(p, e, t, insecure).unwrap().to_string()
    }

    #[test]
    fn endpoint_derivation_follows_the_spec() {
        use Protocol::*;
        assert_eq!(uri(Grpc, None, None, false), "http://localhost:4317/");
        assert_eq!(
            uri(HttpProtobuf, None, None, false),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            uri(HttpProtobuf, Some("http://c:4318"), None, false),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            uri(HttpProtobuf, Some("http://c:4318/base/"), None, false),
            "http://c:4318/base/v1/traces"
        );
        assert_eq!(
            uri(HttpProtobuf, Some("https://c/base?x=1"), None, false),
            "https://c/base/v1/traces?x=1"
        );
        // The signal-specific endpoint is used as is, and wins.
        assert_eq!(
            uri(
                HttpProtobuf,
                Some("http://a:1"),
                Some("http://b:2/custom"),
                false
            ),
            "http://b:2/custom"
        );
        assert_eq!(
            uri(HttpProtobuf, None, Some("http://b:2"), false),
            "http://b:2/"
        );
        // gRPC: no path appended; a scheme-less endpoint is TLS unless insecure.
        assert_eq!(
            uri(Grpc, Some("http://c:4317"), None, false),
            "http://c:4317/"
        );
        assert_eq!(uri(Grpc, Some("c:4317"), None, false), "https://c:4317/");
        assert_eq!(uri(Grpc, Some("c:4317"), None, true), "http://c:4317/");
        assert_eq!(
            uri(Grpc, Some("https://c:4317"), None, true),
            "https://c:4317/"
        );
    }

    #[test]
    fn endpoint_errors_name_the_variable() {
        let e = resolve_endpoint(Protocol::HttpProtobuf, Some("c:4318"), None, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) = \"c:4318\""),
            "{msg}"
        );
        assert!(msg.contains("http or https"), "{msg}");
        let e = resolve_endpoint(Protocol::Grpc, None, Some("ftp://x"), false).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        let e = resolve_endpoint(Protocol::Grpc, Some("http://"), None, false).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidEndpoint { .. }), "{e}");
    }

    #[test]
    fn defaults_match_the_spec_except_the_documented_delay() {
        let c = ExportConfig::default();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint.to_string(), "http://localhost:4317/");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.batch.max_queue_size, 2048);
        assert_eq!(c.batch.max_export_batch_size, 512);
        assert_eq!(c.batch.export_timeout, Duration::from_secs(30));
        assert_eq!(c.batch.schedule_delay, Duration::from_secs(1));
        assert_eq!(c.scope_version, env!("CARGO_PKG_VERSION"));
        assert!(c.headers.is_empty());
        assert!(!c.uses_tls());
    }

    #[test]
    fn file_layer_denies_unknown_fields_and_parses_typed_values() {
        let layer: ExportFileConfig = serde_json::from_str(
            r#"{"endpoint":"http://c:4318","protocol":"http/protobuf","compression":"gzip",
                "headers":{"X-Api-Key":"k"},"max_queue_size":10,"max_export_batch_size":5}"#,
        )
        .unwrap();
        let c = ExportConfig::resolve(layer).unwrap();
        assert_eq!(c.endpoint.to_string(), "http://c:4318/v1/traces");
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.headers, vec![("x-api-key".to_owned(), "k".to_owned())]);
        assert_eq!(
            (c.batch.max_queue_size, c.batch.max_export_batch_size),
            (10, 5)
        );

        let err = serde_json::from_str::<ExportFileConfig>(r#"{"endpiont":"x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `endpiont`"),
            "{err}"
        );
        let err =
            serde_json::from_str::<ExportFileConfig>(r#"{"protocol":"http/json"}"#).unwrap_err();
        assert!(
            err.to_string().contains("http/json is not supported"),
            "{err}"
        );
        let err =
            serde_json::from_str::<ExportFileConfig>(r#"{"compression":"zstd"}"#).unwrap_err();
        assert!(err.to_string().contains("expected gzip or none"), "{err}");
    }

    #[test]
    fn merge_prefers_the_higher_layer_field_by_field() {
        let file = ExportFileConfig {
            traces_endpoint: Some("http://file:1/t".into()),
            protocol: Some(Protocol::HttpProtobuf),
            timeout_ms: Some(1),
            max_queue_size: Some(100),
            ..Default::default()
        };
        let env = ExportFileConfig {
            endpoint: Some("http://env:2".into()),
            timeout_ms: Some(2),
            ..Default::default()
        };
        let cli = ExportFileConfig {
            timeout_ms: Some(3),
            ..Default::default()
        };
        let merged = file.merge(env).merge(cli);
        assert_eq!(merged.timeout_ms, Some(3));
        assert_eq!(merged.max_queue_size, Some(100));
        assert_eq!(merged.protocol, Some(Protocol::HttpProtobuf));
        // The env's endpoint replaces the file's traces_endpoint: endpoints merge as a pair.
        assert_eq!(merged.traces_endpoint, None);
        let c = ExportConfig::resolve(merged).unwrap();
        assert_eq!(c.endpoint.to_string(), "http://env:2/v1/traces");
        assert_eq!(c.timeout, Duration::from_millis(3));
        // An unset batch size follows a queue smaller than its default.
        assert_eq!(
            (c.batch.max_queue_size, c.batch.max_export_batch_size),
            (100, 100)
        );
    }

    #[test]
    fn validate_names_the_field_and_the_fix() {
        let msg = |layer: ExportFileConfig| ExportConfig::resolve(layer).unwrap_err().to_string();
        assert_eq!(
            msg(ExportFileConfig {
                max_queue_size: Some(10),
                max_export_batch_size: Some(20),
                ..Default::default()
            }),
            "max_export_batch_size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) = 20 is larger than \
             max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) = 10; lower the batch size or raise the queue size"
        );
        assert_eq!(
            msg(ExportFileConfig {
                max_queue_size: Some(0),
                ..Default::default()
            }),
            "max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) must be greater than zero"
        );
        assert_eq!(
            msg(ExportFileConfig {
                max_concurrent_exports: Some(0),
                ..Default::default()
            }),
            "max_concurrent_exports (OTEL_BSP_MAX_CONCURRENT_EXPORTS) must be greater than zero"
        );
        assert_eq!(
            msg(ExportFileConfig {
                timeout_ms: Some(0),
                ..Default::default()
            }),
            "timeout_ms (OTEL_EXPORTER_OTLP_TIMEOUT) must be greater than zero"
        );
        assert!(
            msg(ExportFileConfig {
                client_certificate: Some("c.pem".into()),
                ..Default::default()
            })
            .starts_with(
                "client_certificate (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE) is set but client_key"
            )
        );
        assert!(
            msg(ExportFileConfig {
                retry_initial_backoff_ms: Some(10_000),
                ..Default::default()
            })
            .starts_with(
                "retry_initial_backoff_ms = 10000 is larger than retry_max_backoff_ms = 5000"
            )
        );
        let mut headers = BTreeMap::new();
        headers.insert("bad name".to_owned(), "v".to_owned());
        assert!(
            msg(ExportFileConfig {
                headers: Some(headers),
                ..Default::default()
            })
            .contains("\"bad name\" cannot be sent as a request header")
        );
    }
}
