//! The arguments of `sonde run` and `sonde replay`.

use std::path::PathBuf;

use clap::Args;

use crate::config::OutputFormat;

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Configuration file (TOML); flags and environment variables win over it.
    #[arg(long, value_name = "FILE", env = "SONDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Trace only this process (and children it forks later). Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only processes in this cgroup v2 (path under the cgroup2 mount, or absolute).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Never trace this process. Repeatable.
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Bytes captured per read or write (0 to 16384; default 4096).
    #[arg(long, env = "SONDE_CAPTURE_BYTES")]
    pub capture_bytes: Option<u32>,
    /// Kernel ring buffer size in bytes (a power of two; default 16 MiB).
    #[arg(long, env = "SONDE_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// Where spans go. Default: otlp when an OTLP endpoint is configured, else console.
    #[arg(long, value_enum, env = "SONDE_OUTPUT")]
    pub output: Option<OutputFormat>,
    /// Write console or jsonl output to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Console output: print whole trace and span ids.
    #[arg(long)]
    pub full_ids: bool,
    /// A route pattern such as `/users/{id}`; wins over the route heuristic. Repeatable.
    #[arg(long = "route", value_name = "PATTERN")]
    pub routes: Vec<String>,
    /// A query parameter whose value is exported (others are redacted). Repeatable.
    #[arg(long = "query-allow", value_name = "NAME")]
    pub query_allow: Vec<String>,
    /// Address of /metrics, /healthz and /readyz (default 127.0.0.1:9464; "" for none).
    #[arg(long, value_name = "ADDR", env = "SONDE_METRICS_ADDRESS")]
    pub metrics_address: Option<String>,
    /// Serve /targets (this node's pod list) to other hosts, not only to loopback peers.
    #[arg(long, env = "SONDE_TARGETS_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
    pub targets_public: bool,
    /// Serve the trace view, a live web page of traces, waterfalls and the service map, at
    /// ADDR (default 127.0.0.1:9465).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub ui: Option<String>,
    /// Let the trace view listen on a non-loopback address (every host that reaches it sees
    /// this node's traces).
    #[arg(long, env = "SONDE_UI_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
    pub ui_public: bool,
    /// OTLP collector base URL (like OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf (like OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// OTLP compression: gzip or none (like OTEL_EXPORTER_OTLP_COMPRESSION).
    #[arg(long, value_name = "COMPRESSION")]
    pub otlp_compression: Option<String>,
    /// Fraction of new root traces kept, 0.0 to 1.0 (default 1.0; like OTEL_TRACES_SAMPLER_ARG
    /// with parentbased_traceidratio). Errors and slow spans may still be kept by the tail.
    #[arg(long, value_name = "RATIO", env = "SONDE_SAMPLING_RATIO")]
    pub sampling_ratio: Option<f64>,
    /// Do not put `traceparent` into outgoing HTTP requests (spans are still linked inside each
    /// process, but calls to other services start new traces).
    #[arg(long, env = "SONDE_NO_INJECT", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_inject: bool,
    /// Kubernetes node mode: k8s.* resource attributes from this node's pods, and tracing by
    /// the `sonde.dev/tracing` annotation of namespaces and pods (only pods are traced).
    #[arg(long, env = "SONDE_KUBERNETES", value_parser = clap::builder::BoolishValueParser::new())]
    pub kubernetes: bool,
    /// This node's name (the chart sets it from `spec.nodeName`).
    #[arg(long, value_name = "NAME", env = "SONDE_NODE_NAME")]
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every span.
    #[arg(long, value_name = "NAME", env = "SONDE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Pods without a `sonde.dev/tracing` annotation (nor on their namespace): traced except in
    /// kube-system and sonde's own namespace, or not traced.
    #[arg(long, value_enum, value_name = "POLICY", env = "SONDE_DEFAULT_POLICY")]
    pub default_policy: Option<crate::k8s::DefaultPolicy>,
    /// sonde's own namespace (the chart sets it from `metadata.namespace`).
    #[arg(long, value_name = "NAMESPACE", env = "SONDE_NAMESPACE")]
    pub own_namespace: Option<String>,
    /// Kubeconfig file (default: the in-cluster service account, else $KUBECONFIG).
    #[arg(long, value_name = "FILE", env = "SONDE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Payload bytes shown per chunk in the debug output.
    #[arg(long, default_value_t = 96)]
    pub preview_bytes: usize,
    /// Write every counter as JSON to this file on exit.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked, raw IP or loopback).
    pub file: PathBuf,
    /// Which ends of each TCP connection to report: client spans, server spans, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub side: ReplaySide,
    /// Where spans go: console, jsonl or otlp. Default: otlp when an OTLP endpoint is configured
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT`), else console, as for `run`.
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Console output: print whole trace and span ids.
    #[arg(long)]
    pub full_ids: bool,
    /// A route pattern such as `/users/{id}`. Repeatable.
    #[arg(long = "route", value_name = "PATTERN")]
    pub routes: Vec<String>,
    /// A query parameter whose value is kept. Repeatable.
    #[arg(long = "query-allow", value_name = "NAME")]
    pub query_allow: Vec<String>,
    /// After the replay, serve its spans in the trace view at ADDR (default 127.0.0.1:9465)
    /// until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub ui: Option<String>,
    /// Let the trace view listen on a non-loopback address.
    #[arg(long)]
    pub ui_public: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplaySide {
    Client,
    Server,
    Both,
}
