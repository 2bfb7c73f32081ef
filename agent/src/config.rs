//! The configuration file (`--config sonde.toml`). Every section and field is optional; the
//! defaults are documented per field. Precedence: this file < environment variables (the
//! standard `OTEL_*` ones and `SONDE_*`) < command-line flags. Unknown fields are errors, so a
//! typo never silently does nothing.
//!
//! ```toml
//! [capture]
//! capture_bytes = 4096            # bytes copied per read/write, 0..=16384
//! ring_buffer_bytes = 16777216    # kernel ring buffer (power of two)
//! state_budget_bytes = 67108864   # parser state of all connections together (userspace)
//! pids = [1234]                   # trace only these processes (and their children)
//! cgroups = ["system.slice/app"]  # trace only these cgroups (v2)
//! exclude_pids = []
//!
//! [http]
//! routes = ["/users/{id}/orders/{order}"]   # route patterns; win over the heuristic
//! query_allowlist = ["page"]                # query parameters whose values are kept
//!
//! [output]
//! format = "otlp"       # console | jsonl | otlp | debug | none
//! file = "spans.jsonl"  # for console and jsonl; default stdout
//! full_ids = false      # console: whole trace/span ids
//!
//! [metrics]
//! address = "127.0.0.1:9464"   # /metrics, /healthz, /readyz; "" turns it off
//!
//! [ui]                  # the trace view (`sonde run --ui`); see README "Trace view"
//! enabled = false             # default false; --ui turns it on
//! address = "127.0.0.1:9465"  # loopback unless `public`
//! public = false              # allow a non-loopback address (shows this node's traces to others)
//! max_traces = 1000           # traces kept for the page, oldest evicted
//! max_spans = 20000           # spans kept, all traces together
//!
//! [context]
//! inject = true         # traceparent into outgoing HTTP/1 requests
//!
//! [sampling]            # see README "Sampling"; OTEL_TRACES_SAMPLER(_ARG) honoured
//! ratio = 0.1                 # new root traces kept; default 1.0 (all)
//! parent_based = true         # follow the incoming traceparent's sampled flag
//! root_rate_limit = 100.0     # root traces per second per service; default none
//! keep_errors = true          # tail: keep error spans the head dropped
//! keep_slower_than_ms = 500   # tail: keep slow spans; default none
//! tail_buffer_spans = 4096    # spans held while their trace may be kept
//! tail_wait_ms = 5000
//! [[sampling.rules]]          # overrides for root spans, first match wins
//! route = "/checkout"         # http.route or rpc service/method; `prefix*`
//! ratio = 1.0
//!
//! [span_metrics]
//! enabled = true              # request-duration histograms from every span
//! export_interval_ms = 60000  # OTLP push interval (OTEL_METRIC_EXPORT_INTERVAL)
//!
//! [privacy]             # see README "Privacy"
//! capture_request_headers = ["x-request-id"]   # never Authorization, Cookie, ...
//! capture_response_headers = []
//! sensitive_headers = ["x-internal-token"]     # added to the never-captured list
//! deny_attributes = ["client.address", "process.command_line"]
//! drop_routes = ["/internal/*"]
//! [[privacy.redact]]
//! pattern = "sk_live_[A-Za-z0-9]+"
//! replacement = "REDACTED"
//!
//! [kubernetes]          # pod metadata and the sonde.dev/tracing toggle (--kubernetes)
//! enabled = false                     # default false; SONDE_KUBERNETES=1
//! node_name = "node-1"                # default $SONDE_NODE_NAME (the downward API's spec.nodeName)
//! cluster_name = "prod"               # k8s.cluster.name; default none
//! default_policy = "all-except-system" # or "opt-in"
//! namespace = "sonde"                 # sonde's own namespace (never traced by default); default $SONDE_NAMESPACE
//! kubeconfig = "/etc/kubeconfig"      # default: in-cluster service account, else $KUBECONFIG
//! max_pods = 2048                     # pods kept in memory
//!
//! [export.otlp]         # the OTEL_EXPORTER_OTLP_* / OTEL_BSP_* settings
//! endpoint = "http://collector:4317"
//! protocol = "grpc"
//! compression = "gzip"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sonde_export::config::ExportFileConfig;

/// What a config file holds.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub context: ContextSection,
    #[serde(default)]
    pub sampling: crate::sampling::SamplingSection,
    #[serde(default)]
    pub span_metrics: SpanMetricsSection,
    #[serde(default)]
    pub privacy: crate::privacy::PrivacySection,
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    #[serde(default)]
    pub ui: UiSection,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// Serve the trace view. Default false (`--ui` turns it on).
    pub enabled: Option<bool>,
    /// Its listen address. Default `127.0.0.1:9465`.
    pub address: Option<String>,
    /// Allow a non-loopback address: every host that reaches it sees this node's traces.
    /// Default false.
    pub public: Option<bool>,
    /// Traces kept for the page; the oldest are evicted. Default 1000.
    pub max_traces: Option<usize>,
    /// Spans kept for the page, all traces together. Default 20000.
    pub max_spans: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsSection {
    /// Compute span metrics (and serve them on `/metrics`, push them with OTLP). Default true.
    pub enabled: Option<bool>,
    /// OTLP push interval in ms (`OTEL_METRIC_EXPORT_INTERVAL`). Default 60000.
    pub export_interval_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// Watch this node's pods and namespaces; trace pods by the `sonde.dev/tracing` toggle.
    /// Default false.
    pub enabled: Option<bool>,
    /// This node's name. Default `$SONDE_NODE_NAME`.
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every span. Default none.
    pub cluster_name: Option<String>,
    /// Pods without annotations: `all-except-system` (default) or `opt-in`.
    pub default_policy: Option<crate::k8s::DefaultPolicy>,
    /// sonde's own namespace, left out by `all-except-system`. Default `$SONDE_NAMESPACE`.
    pub namespace: Option<String>,
    /// Kubeconfig file. Default: the in-cluster service account, else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Most pods kept in memory. Default 2048.
    pub max_pods: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContextSection {
    /// Put `traceparent` into outgoing HTTP/1 requests of traced processes. Default true.
    pub inject: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// Bytes copied per syscall. Default 4096.
    pub capture_bytes: Option<u32>,
    /// Ring buffer size. Default 16 MiB.
    pub ring_buffer_bytes: Option<u32>,
    /// Processes to trace (default: all but sonde).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// cgroup v2 directories to trace.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Processes never traced.
    #[serde(default)]
    pub exclude_pids: Vec<u32>,
    /// Heap bytes of parser state (HTTP/2 tables, header blocks, prepared statements,
    /// timing) kept for all connections together; past it the least recently active
    /// connections' state is dropped, counted. Default 64 MiB.
    pub state_budget_bytes: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Route patterns such as `/users/{id}`. Default none (the heuristic alone).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Query parameters whose values are exported; others become `REDACTED`. Default none.
    #[serde(default)]
    pub query_allowlist: Vec<String>,
}

/// Where spans go.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One readable line per span (the default when no OTLP endpoint is configured).
    Console,
    /// One OTLP-JSON span per line.
    Jsonl,
    /// OTLP to a collector (the default when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set).
    Otlp,
    /// Connections and payload previews, no spans (debugging the capture).
    Debug,
    /// Nothing (counters only).
    None,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub format: Option<OutputFormat>,
    /// File for console and jsonl output. Default stdout.
    pub file: Option<PathBuf>,
    /// Console: print whole ids. Default false.
    pub full_ids: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9464`;
    /// an empty string turns the endpoint off.
    pub address: Option<String>,
    /// Serve `/targets` (this node's pods, Kubernetes mode) to other hosts too. Default false:
    /// loopback peers only.
    pub targets_public: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub otlp: Option<ExportFileConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl FileConfig {
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_owned(),
            // toml's message names the field and the line; unknown fields list the valid ones.
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section() {
        let text = r#"
[capture]
capture_bytes = 1024
pids = [1, 2]
[http]
routes = ["/users/{id}"]
query_allowlist = ["page"]
[output]
format = "jsonl"
file = "/tmp/x.jsonl"
[metrics]
address = ""
[export.otlp]
endpoint = "http://collector:4317"
compression = "gzip"
"#;
        let c = FileConfig::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(c.capture.capture_bytes, Some(1024));
        assert_eq!(c.capture.pids, vec![1, 2]);
        assert_eq!(c.http.routes, vec!["/users/{id}"]);
        assert_eq!(c.output.format, Some(OutputFormat::Jsonl));
        assert_eq!(c.metrics.address.as_deref(), Some(""));
        let otlp = c.export.otlp.unwrap();
        assert_eq!(otlp.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(
            FileConfig::parse(Path::new("e"), "").unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn parses_sampling_metrics_and_privacy() {
        let text = r#"
[sampling]
ratio = 0.1
keep_slower_than_ms = 500
[[sampling.rules]]
route = "/checkout"
ratio = 1.0
[span_metrics]
export_interval_ms = 1000
[privacy]
capture_request_headers = ["x-request-id"]
drop_routes = ["/internal/*"]
[[privacy.redact]]
pattern = "sk_[a-z]+"
"#;
        let c = FileConfig::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(c.sampling.ratio, Some(0.1));
        assert_eq!(c.sampling.rules[0].route.as_deref(), Some("/checkout"));
        assert_eq!(c.span_metrics.export_interval_ms, Some(1000));
        assert_eq!(c.privacy.redact[0].replacement, "REDACTED");
        let e = FileConfig::parse(
            Path::new("t.toml"),
            "[sampling]
rate = 0.1
",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rate") && e.contains("ratio"), "{e}");
        let e = FileConfig::parse(
            Path::new("t.toml"),
            "[privacy]
capture_headers = []
",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("capture_request_headers"), "{e}");
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        let e = FileConfig::parse(Path::new("t.toml"), "[capture]\ncapture_byte = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture_byte"), "{e}");
        assert!(
            e.contains("capture_bytes"),
            "the message lists valid fields: {e}"
        );
        let e = FileConfig::parse(Path::new("t.toml"), "[output]\nformat = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("console"), "{e}");
        let e = FileConfig::parse(
            Path::new("t.toml"),
            "[kubernetes]\ndefault_policy = \"opt-out\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("opt-out") && e.contains("opt-in"), "{e}");
        let e = FileConfig::parse(Path::new("t.toml"), "[kubernetes]\nnode = \"n\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`node`") && e.contains("node_name"), "{e}");
        let e = FileConfig::parse(Path::new("t.toml"), "[export.otlp]\nendpoit = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoit"), "{e}");
    }
}
