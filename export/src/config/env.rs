//! The standard environment variables as one [`ExportFileConfig`] layer.
//!
//! Spec rules kept here: an empty value is unset; `OTEL_EXPORTER_OTLP_TRACES_X` wins over
//! `OTEL_EXPORTER_OTLP_X` (whole value, headers included). Where the spec says "ignore an
//! invalid value with a warning", sonde refuses to start instead and names the variable:
//! an agent running with settings other than the ones written is harder to notice than one
//! that does not start.

use std::path::PathBuf;

use super::{ConfigError, ExportFileConfig, ValueError, headers::parse_headers};

/// Every variable [`ExportFileConfig::from_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
];

struct Env<G> {
    get: G,
}

impl<G: Fn(&str) -> Option<String>> Env<G> {
    /// A set, non-empty variable.
    fn var(&self, name: &'static str) -> Option<(&'static str, String)> {
        (self.get)(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v))
    }

    /// The signal-specific variable if set, else the generic one.
    fn otlp(&self, suffix: &'static str) -> Option<(&'static str, String)> {
        let (traces, generic) = names(suffix);
        self.var(traces).or_else(|| self.var(generic))
    }

    fn parsed<T>(
        &self,
        found: Option<(&'static str, String)>,
        parse: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Result<Option<T>, ConfigError> {
        found
            .map(|(var, value)| {
                parse(value.trim()).map_err(|problem| ConfigError::InvalidEnv {
                    var,
                    value,
                    problem,
                })
            })
            .transpose()
    }
}

/// (`OTEL_EXPORTER_OTLP_TRACES_<suffix>`, `OTEL_EXPORTER_OTLP_<suffix>`) from the table.
fn names(suffix: &'static str) -> (&'static str, &'static str) {
    let find = |prefix: &str| {
        ENV_VARS
            .iter()
            .copied()
            .find(|n| n.strip_prefix(prefix) == Some(suffix))
            .expect("every suffix is in ENV_VARS")
    };
    (
        find("OTEL_EXPORTER_OTLP_TRACES_"),
        find("OTEL_EXPORTER_OTLP_"),
    )
}

fn millis(s: &str) -> Result<u64, ValueError> {
    s.parse().map_err(|_| ValueError::Millis)
}

fn count(s: &str) -> Result<usize, ValueError> {
    match s.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ValueError::Count),
    }
}

fn boolean(s: &str) -> Result<bool, ValueError> {
    if s.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ValueError::Bool)
    }
}

pub(super) fn layer_from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<ExportFileConfig, ConfigError> {
    let env = Env { get };
    let path = |s: &str| Ok::<_, ValueError>(PathBuf::from(s));
    Ok(ExportFileConfig {
        endpoint: env.var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|(_, v)| v),
        traces_endpoint: env
            .var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|(_, v)| v),
        protocol: env.parsed(env.otlp("PROTOCOL"), str::parse)?,
        headers: env.parsed(env.otlp("HEADERS"), |s| Ok(parse_headers(s)?))?,
        timeout_ms: env.parsed(env.otlp("TIMEOUT"), millis)?,
        compression: env.parsed(env.otlp("COMPRESSION"), str::parse)?,
        certificate: env.parsed(env.otlp("CERTIFICATE"), path)?,
        client_certificate: env.parsed(env.otlp("CLIENT_CERTIFICATE"), path)?,
        client_key: env.parsed(env.otlp("CLIENT_KEY"), path)?,
        insecure: env.parsed(env.otlp("INSECURE"), boolean)?,
        schedule_delay_ms: env.parsed(env.var("OTEL_BSP_SCHEDULE_DELAY"), millis)?,
        export_timeout_ms: env.parsed(env.var("OTEL_BSP_EXPORT_TIMEOUT"), millis)?,
        max_queue_size: env.parsed(env.var("OTEL_BSP_MAX_QUEUE_SIZE"), count)?,
        max_export_batch_size: env.parsed(env.var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"), count)?,
        max_concurrent_exports: env.parsed(env.var("OTEL_BSP_MAX_CONCURRENT_EXPORTS"), count)?,
        retry_enabled: None,
        retry_initial_backoff_ms: None,
        retry_max_backoff_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;
    use crate::config::{Compression, ExportConfig, Protocol};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config(pairs: &[(&str, &str)]) -> ExportConfig {
        ExportConfig::from_env(env(pairs)).unwrap()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        ExportConfig::from_env(env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn every_variable_is_read() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=secret,x-tenant=a%20b",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "7000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_MAX_CONCURRENT_EXPORTS", "2"),
        ]);
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint.to_string(), "https://collector:4318/v1/traces");
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_owned(), "secret".to_owned()),
                ("x-tenant".to_owned(), "a b".to_owned())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.tls.certificate, Some("/ca.pem".into()));
        assert_eq!(c.tls.client_certificate, Some("/c.pem".into()));
        assert_eq!(c.tls.client_key, Some("/k.pem".into()));
        assert_eq!(c.batch.schedule_delay, Duration::from_millis(200));
        assert_eq!(c.batch.export_timeout, Duration::from_millis(7000));
        assert_eq!(c.batch.max_queue_size, 100);
        assert_eq!(c.batch.max_export_batch_size, 10);
        assert_eq!(c.batch.max_concurrent_exports, 2);
        assert!(c.uses_tls());
    }

    #[test]
    fn signal_specific_variables_win() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom/path",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "c=3"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/gc.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/tc.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/gk.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/tk.pem"),
        ]);
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint.to_string(), "http://traces:9999/custom/path");
        assert_eq!(c.headers, vec![("c".to_owned(), "3".to_owned())]);
        assert_eq!(c.timeout, Duration::from_millis(2000));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.tls.certificate, Some("/traces.pem".into()));
        assert_eq!(c.tls.client_certificate, Some("/tc.pem".into()));
        assert_eq!(c.tls.client_key, Some("/tk.pem".into()));
    }

    #[test]
    fn insecure_applies_to_scheme_less_grpc_endpoints() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
        ]);
        assert_eq!(c.endpoint.to_string(), "http://collector:4317/");
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "false"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]);
        assert_eq!(c.endpoint.to_string(), "https://collector:4317/");
    }

    #[test]
    fn protocol_default_port_follows_the_protocol() {
        let c = config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(c.endpoint.to_string(), "http://localhost:4318/v1/traces");
        let c = config(&[]);
        assert_eq!(c.endpoint.to_string(), "http://localhost:4317/");
    }

    #[test]
    fn empty_values_are_unset() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "  "),
        ]);
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_variable_value_and_fix() {
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "foo")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL=foo: expected grpc or http/protobuf"
        );
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json: http/json is not supported by sonde; use http/protobuf or grpc"
        );
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            "OTEL_EXPORTER_OTLP_COMPRESSION=zstd: expected gzip or none"
        );
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]),
            "OTEL_EXPORTER_OTLP_TIMEOUT=10s: expected a whole number of milliseconds"
        );
        assert_eq!(
            error(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]),
            "OTEL_BSP_MAX_QUEUE_SIZE=0: expected a whole number greater than zero"
        );
        assert_eq!(
            error(&[("OTEL_BSP_SCHEDULE_DELAY", "-1")]),
            "OTEL_BSP_SCHEDULE_DELAY=-1: expected a whole number of milliseconds"
        );
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_INSECURE", "yes")]),
            "OTEL_EXPORTER_OTLP_INSECURE=yes: expected true or false"
        );
        assert_eq!(
            error(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]),
            "OTEL_EXPORTER_OTLP_HEADERS=novalue: entry \"novalue\" has no `=`; write key=value pairs separated by commas"
        );
        assert_eq!(
            error(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            ]),
            "endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) = \"localhost:4318\" is not a valid URL: the scheme must be http or https; write it like http://collector:4317"
        );
        assert!(
            error(&[
                ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5")
            ])
            .contains("lower the batch size or raise the queue size")
        );
    }

    #[test]
    fn env_vars_table_has_both_forms_of_every_otlp_variable() {
        for suffix in [
            "ENDPOINT",
            "PROTOCOL",
            "HEADERS",
            "TIMEOUT",
            "COMPRESSION",
            "CERTIFICATE",
            "CLIENT_CERTIFICATE",
            "CLIENT_KEY",
            "INSECURE",
        ] {
            let (t, g) = names(suffix);
            assert_eq!(t, format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"));
            assert_eq!(g, format!("OTEL_EXPORTER_OTLP_{suffix}"));
        }
    }
}
