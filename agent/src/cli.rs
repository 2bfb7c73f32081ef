//! The command line: `sonde run`, `sonde doctor`.

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use sonde_proto::{Decision, MAX_CAPTURE};

use sonde_export::{
    batch::{ExportPipeline, LineFormat, PipelineOptions, Sink, SpanQueue},
    config::{ExportConfig, ExportFileConfig},
    console,
    metrics::{SpanMetrics, push::MetricsPusher},
    metrics_http::{MetricsServer, MetricsState},
    stats::DropReason,
};
use sonde_protocol::route::RoutePattern;

use crate::{
    capture::{Capture, CaptureConfig, CaptureHandle, CgroupUpdates, Observed, Summary},
    cgroup,
    config::{ConfigFileError, FileConfig, OutputFormat},
    conn::StreamSink,
    debug_view::DebugView,
    doctor,
    k8s::{
        enrich::{KubeResources, NodeResources},
        store::{SharedStore, Store},
        toggle::{Controller, ControllerOptions},
        watch,
    },
    privacy::{Policy, PrivacyError},
    probes::{FilterSpec, ProbeConfig},
    sampling::{SamplingConfig, SamplingError, sink::PolicySink},
    span::{HttpConfig, SpanSink, SpanStage},
    telemetry::Telemetry,
};

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Zero-code distributed tracing with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace TCP traffic of processes on this host until Ctrl-C or SIGTERM.
    Run(Box<RunArgs>),
    /// Turn a pcap or pcapng capture into spans, without root.
    Replay(ReplayArgs),
    /// Which pods a running `sonde run --kubernetes` traces, and why (asks its /targets).
    Targets {
        /// The agent's metrics address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        address: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check what this host offers and what sonde will use; exits non-zero if tracing cannot work.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

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
    /// console or jsonl.
    #[arg(long, value_enum, default_value = "console")]
    pub output: OutputFormat,
    /// Console output: print whole trace and span ids.
    #[arg(long)]
    pub full_ids: bool,
    /// A route pattern such as `/users/{id}`. Repeatable.
    #[arg(long = "route", value_name = "PATTERN")]
    pub routes: Vec<String>,
    /// A query parameter whose value is kept. Repeatable.
    #[arg(long = "query-allow", value_name = "NAME")]
    pub query_allow: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplaySide {
    Client,
    Server,
    Both,
}

/// Writes spans as they come (replays are synchronous).
struct WriterSink {
    out: Box<dyn std::io::Write>,
    format: OutputFormat,
    console: console::Options,
    failed: Option<std::io::Error>,
}

impl SpanSink for WriterSink {
    fn span(&mut self, span: sonde_export::span::Span) {
        if self.failed.is_some() {
            return;
        }
        let r = match self.format {
            OutputFormat::Jsonl => sonde_export::jsonl::write_span(&mut self.out, &span),
            _ => console::write_span(&mut self.out, &span, &self.console),
        };
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }
}

fn replay(args: ReplayArgs) -> ExitCode {
    let mut route_patterns = Vec::new();
    for p in &args.routes {
        match RoutePattern::parse(p) {
            Ok(r) => route_patterns.push(r),
            Err(e) => {
                eprintln!("sonde: --route {p}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if !matches!(args.output, OutputFormat::Console | OutputFormat::Jsonl) {
        eprintln!("sonde: replay --output must be console or jsonl");
        return ExitCode::from(2);
    }
    let sides = match args.side {
        ReplaySide::Client => crate::replay::Sides::Client,
        ReplaySide::Server => crate::replay::Sides::Server,
        ReplaySide::Both => crate::replay::Sides::Both,
    };
    let sink = WriterSink {
        out: Box::new(io::BufWriter::new(io::stdout())),
        format: args.output,
        console: console::Options {
            full_ids: args.full_ids,
        },
        failed: None,
    };
    let http = HttpConfig {
        route_patterns,
        query_allowlist: args.query_allow.clone(),
        ..HttpConfig::default()
    };
    match crate::replay::replay(&args.file, sides, http, sink) {
        Ok((mut sink, summary)) => {
            let _ = sink.out.flush();
            eprintln!(
                "sonde: {} packets, {} TCP segments, {} flows, {} spans; {} bytes retransmitted, \
                 {} lost in gaps, {} parse errors",
                summary.pcap.packets,
                summary.pcap.tcp_segments,
                summary.tcp.flows,
                summary.spans.spans_created,
                summary.tcp.retransmitted_bytes,
                summary.conns.gap_lost_bytes,
                summary.spans.parse_errors.values().sum::<u64>()
            );
            if let Some(e) = sink.failed {
                eprintln!("sonde: writing spans: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors in command-line values: what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("--capture-bytes {0} is above {MAX_CAPTURE}; choose 0..={MAX_CAPTURE}")]
    CaptureBytes(u32),
    #[error("--cgroup {arg}: {why}")]
    Cgroup { arg: String, why: String },
    #[error("--duration {0} must be a positive number of seconds")]
    Duration(f64),
    #[error("--route {pattern}: {why}")]
    Route { pattern: String, why: String },
    #[error(
        "--metrics-address {0}: expected IP:PORT such as 127.0.0.1:9464, or \"\" to turn it off"
    )]
    MetricsAddress(String),
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("OTLP exporter: {0}")]
    Export(#[from] sonde_export::config::ConfigError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error("OTEL_METRIC_EXPORT_INTERVAL={0}: expected milliseconds, e.g. 60000")]
    MetricInterval(String),
    #[error(
        "--output otlp needs a collector: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or \
         [export.otlp] endpoint"
    )]
    NoEndpoint,
    #[error(
        "--kubernetes needs this node's name: set SONDE_NODE_NAME (the chart sets it from \
         spec.nodeName with the downward API), --node-name, or [kubernetes] node_name"
    )]
    NoNodeName,
    #[error(
        "--kubernetes needs a cgroup v2 hierarchy (the kernel filter and pod lookup use cgroup \
         v2 ids) and none is mounted; mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) \
         or name the node's in SONDE_CGROUP_ROOT"
    )]
    NoCgroupRoot,
    #[error("SONDE_CGROUP_ROOT {0}: not a directory; name the node's cgroup v2 mount")]
    CgroupRoot(PathBuf),
    #[error("[kubernetes] max_pods {0} must be at least 1")]
    MaxPods(usize),
}

/// Everything `sonde run` needs, resolved from file, environment and flags.
pub struct RunPlan {
    pub capture: CaptureConfig,
    pub http: HttpConfig,
    pub output: OutputFormat,
    pub output_file: Option<PathBuf>,
    pub full_ids: bool,
    pub metrics: Option<SocketAddr>,
    /// The metrics address was chosen explicitly (a bind failure is then an error).
    pub metrics_explicit: bool,
    pub export: Option<ExportConfig>,
    pub sampling: SamplingConfig,
    pub privacy: Policy,
    /// Span metrics on, and their OTLP push interval.
    pub span_metrics: Option<Duration>,
    /// Kubernetes node mode, when asked for.
    pub kubernetes: Option<crate::k8s::KubePlan>,
}

impl RunArgs {
    /// Resolves the configuration: file < environment < flags.
    pub fn plan(&self, env: impl Fn(&str) -> Option<String>) -> Result<RunPlan, ArgError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let capture_bytes = self
            .capture_bytes
            .or(file.capture.capture_bytes)
            .unwrap_or(sonde_proto::DEFAULT_CAPTURE);
        if capture_bytes as usize > MAX_CAPTURE {
            return Err(ArgError::CaptureBytes(capture_bytes));
        }
        if let Some(d) = self.duration
            && !(d > 0.0 && d.is_finite())
        {
            return Err(ArgError::Duration(d));
        }
        let mut cgroups = Vec::new();
        for arg in self.cgroups.iter().chain(&file.capture.cgroups) {
            let dir = cgroup::resolve(arg).map_err(|why| ArgError::Cgroup {
                arg: arg.clone(),
                why,
            })?;
            let id = cgroup::id_of(&dir).map_err(|e| ArgError::Cgroup {
                arg: arg.clone(),
                why: e.to_string(),
            })?;
            cgroups.push((id, Decision::Trace));
        }
        let trace_pids: Vec<u32> = self
            .pids
            .iter()
            .chain(&file.capture.pids)
            .copied()
            .collect();
        let mut pids: Vec<(u32, Decision)> =
            trace_pids.iter().map(|&p| (p, Decision::Trace)).collect();
        pids.extend(
            self.exclude_pids
                .iter()
                .chain(&file.capture.exclude_pids)
                .map(|&p| (p, Decision::Ignore)),
        );
        let kubernetes = self.kube_plan(&file.kubernetes, &env)?;
        // In Kubernetes mode only pods are traced: the toggle controller adds their cgroups.
        let selective = !trace_pids.is_empty() || !cgroups.is_empty() || kubernetes.is_some();
        let (env_ratio, env_parent) = crate::sampling::from_otel_env(
            env("OTEL_TRACES_SAMPLER").as_deref(),
            env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let sampling = SamplingConfig::resolve(
            &file.sampling,
            self.sampling_ratio.or(env_ratio),
            env_parent,
        )?;
        let privacy = Policy::new(&file.privacy)?;
        let interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => Duration::from_millis(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or(ArgError::MetricInterval(v))?,
            ),
            None => file.span_metrics.export_interval_ms.map_or(
                sonde_export::metrics::push::DEFAULT_INTERVAL,
                Duration::from_millis,
            ),
        };
        let span_metrics = file
            .span_metrics
            .enabled
            .unwrap_or(true)
            .then_some(interval);
        let capture = CaptureConfig {
            probes: ProbeConfig {
                capture_bytes,
                ring_buffer_bytes: self
                    .ring_buffer_bytes
                    .or(file.capture.ring_buffer_bytes)
                    .unwrap_or(16 * 1024 * 1024),
                filter: FilterSpec {
                    default: if selective {
                        Decision::Ignore
                    } else {
                        Decision::Trace
                    },
                    pids,
                    cgroups,
                },
                sample_threshold: sampling.kernel_threshold(),
                ..ProbeConfig::default()
            },
            ..CaptureConfig::default()
        };

        let mut route_patterns = Vec::new();
        for p in self.routes.iter().chain(&file.http.routes) {
            route_patterns.push(RoutePattern::parse(p).map_err(|e| ArgError::Route {
                pattern: p.clone(),
                why: e.to_string(),
            })?);
        }
        let http = HttpConfig {
            route_patterns,
            query_allowlist: self
                .query_allow
                .iter()
                .chain(&file.http.query_allowlist)
                .cloned()
                .collect(),
            capture_request_headers: privacy.request_headers.clone(),
            capture_response_headers: privacy.response_headers.clone(),
        };

        // Exporter: file < OTEL_* environment < flags.
        let env_layer = ExportFileConfig::from_env(&env)?;
        let cli_layer = ExportFileConfig {
            endpoint: self.otlp_endpoint.clone(),
            // The flags take the environment variables' syntax: parse them the same way.
            protocol: match &self.otlp_protocol {
                Some(p) => {
                    ExportFileConfig::from_env(|n| {
                        (n == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| p.clone())
                    })?
                    .protocol
                }
                None => None,
            },
            compression: match &self.otlp_compression {
                Some(c) => {
                    ExportFileConfig::from_env(|n| {
                        (n == "OTEL_EXPORTER_OTLP_COMPRESSION").then(|| c.clone())
                    })?
                    .compression
                }
                None => None,
            },
            ..ExportFileConfig::default()
        };
        let file_layer = file.export.otlp.clone().unwrap_or_default();
        let endpoint_given = [&file_layer, &env_layer, &cli_layer]
            .iter()
            .any(|l| l.endpoint.is_some() || l.traces_endpoint.is_some());
        let layer = file_layer.merge(env_layer).merge(cli_layer);
        let output = self
            .output
            .or(file.output.format)
            .unwrap_or(if endpoint_given {
                OutputFormat::Otlp
            } else {
                OutputFormat::Console
            });
        if output == OutputFormat::Otlp && !endpoint_given {
            return Err(ArgError::NoEndpoint);
        }
        let mut export = ExportConfig::resolve(layer)?;
        export.scope_version = env!("CARGO_PKG_VERSION").to_owned();

        let metrics_arg = self
            .metrics_address
            .clone()
            .or(file.metrics.address.clone());
        let metrics_explicit = metrics_arg.is_some();
        let metrics = match metrics_arg.as_deref() {
            Some("") => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| ArgError::MetricsAddress(a.to_owned()))?,
            ),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        };
        Ok(RunPlan {
            capture,
            http,
            output,
            output_file: self.output_file.clone().or(file.output.file.clone()),
            full_ids: self.full_ids || file.output.full_ids.unwrap_or(false),
            metrics,
            metrics_explicit,
            export: Some(export),
            sampling,
            privacy,
            span_metrics,
            kubernetes,
        })
    }

    /// The Kubernetes settings: file < environment (SONDE_*, read by clap for flags) < flags.
    fn kube_plan(
        &self,
        file: &crate::config::KubernetesSection,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::k8s::KubePlan>, ArgError> {
        if !(self.kubernetes || file.enabled.unwrap_or(false)) {
            return Ok(None);
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let node = non_empty(self.node_name.clone())
            .or_else(|| non_empty(env("SONDE_NODE_NAME")))
            .or_else(|| non_empty(file.node_name.clone()))
            .ok_or(ArgError::NoNodeName)?;
        let own_namespace = non_empty(self.own_namespace.clone())
            .or_else(|| non_empty(env("SONDE_NAMESPACE")))
            .or_else(|| non_empty(file.namespace.clone()));
        let cgroup_root = cgroup::v2_mount().ok_or(ArgError::NoCgroupRoot)?;
        if !cgroup_root.is_dir() {
            return Err(ArgError::CgroupRoot(cgroup_root));
        }
        let mut limits = crate::k8s::store::StoreLimits::default();
        if let Some(n) = file.max_pods {
            if n == 0 {
                return Err(ArgError::MaxPods(n));
            }
            limits.max_pods = n;
        }
        Ok(Some(crate::k8s::KubePlan {
            node,
            cluster: non_empty(self.cluster_name.clone())
                .or_else(|| non_empty(file.cluster_name.clone())),
            policy: crate::k8s::TogglePolicy::new(
                self.default_policy
                    .or(file.default_policy)
                    .unwrap_or_default(),
                own_namespace.as_deref(),
            ),
            kubeconfig: self.kubeconfig.clone().or(file.kubeconfig.clone()),
            cgroup_root,
            limits,
        }))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Replay(args) => replay(args),
        Command::Targets { address, json } => targets(&address, json),
        Command::Doctor { json } => {
            let report = doctor::run();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn run(args: RunArgs) -> ExitCode {
    let plan = match args.plan(|n| std::env::var(n).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sonde-export")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(args, plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Hands spans to the exporter's bounded queue; never blocks (a full queue drops, counted).
struct QueueSink(SpanQueue);

impl SpanSink for QueueSink {
    fn span(&mut self, span: sonde_export::span::Span) {
        let _ = self.0.try_send(span);
    }

    fn not_sent(&mut self, reason: DropReason) {
        self.0.not_sent(reason);
    }
}

/// The console view: finished traces printed as trees, from the capture thread.
struct ConsoleTrees {
    trees: console::TraceTrees,
    out: Box<dyn std::io::Write + Send>,
}

impl ConsoleTrees {
    fn finish(&mut self) {
        let _ = self.trees.flush(0, true, &mut self.out);
        let _ = self.out.flush();
    }
}

impl SpanSink for ConsoleTrees {
    fn span(&mut self, span: sonde_export::span::Span) {
        let _ = self
            .trees
            .add(span, crate::clock::monotonic_ns(), &mut self.out);
    }

    fn tick(&mut self, now_ns: u64) {
        let _ = self.trees.flush(now_ns, false, &mut self.out);
        let _ = self.out.flush();
    }
}

/// Counts spans and drops them (`--output none`).
struct NullSink;

impl SpanSink for NullSink {
    fn span(&mut self, _span: sonde_export::span::Span) {}
}

async fn wait_for_stop(duration: Option<f64>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        _ = sleep => {}
    }
}

fn line_writer(file: &Option<PathBuf>) -> Result<Box<dyn std::io::Write + Send>, String> {
    match file {
        Some(p) => std::fs::File::create(p)
            .map(|f| Box::new(std::io::BufWriter::new(f)) as Box<dyn std::io::Write + Send>)
            .map_err(|e| format!("--output-file {}: {e}", p.display())),
        None => Ok(Box::new(io::stdout())),
    }
}

async fn run_async(args: RunArgs, plan: RunPlan) -> Result<(), String> {
    crate::sampling::set_root_ratio(plan.sampling.ratio);
    let telemetry = Telemetry::new();
    let pipeline = match plan.output {
        OutputFormat::Otlp => {
            let cfg = plan.export.as_ref().ok_or("no exporter configuration")?;
            let p = ExportPipeline::otlp(cfg).map_err(|e| format!("OTLP exporter: {e}"))?;
            tracing::info!(
                "exporting spans with OTLP ({}) to {}",
                cfg.protocol.as_str(),
                cfg.endpoint
            );
            Some(p)
        }
        OutputFormat::Jsonl => {
            let options = plan
                .export
                .as_ref()
                .map(PipelineOptions::from)
                .unwrap_or_default();
            Some(ExportPipeline::start(
                Sink::Lines {
                    writer: line_writer(&plan.output_file)?,
                    format: LineFormat::Jsonl,
                },
                options,
            ))
        }
        OutputFormat::Console | OutputFormat::Debug | OutputFormat::None => None,
    };
    if let Some(p) = &pipeline {
        telemetry.set_export(p.stats());
    }
    let span_metrics = plan.span_metrics.map(|_| {
        Arc::new(SpanMetrics::new(
            crate::clock::WallClock::measure().unix_ns(crate::clock::monotonic_ns()),
        ))
    });
    if let Some(m) = &span_metrics {
        let m = Arc::clone(m);
        telemetry.add_renderer(Arc::new(move |w| m.render(w)));
    }
    let pusher = match (
        &span_metrics,
        plan.output,
        plan.export.as_ref(),
        plan.span_metrics,
    ) {
        (Some(m), OutputFormat::Otlp, Some(cfg), Some(interval)) => {
            match MetricsPusher::start(cfg, Arc::clone(m), interval) {
                Ok(Some(p)) => {
                    let st = Arc::clone(&p.stats);
                    telemetry.add_renderer(Arc::new(move |w| {
                        let mut f = w.counter(
                            "sonde_span_metrics_pushes_total",
                            "OTLP pushes of the span metrics, by outcome.",
                        );
                        for (o, n) in [("ok", &st.ok), ("failed", &st.failed)] {
                            f = f.sample(
                                &[("outcome", o)],
                                n.load(std::sync::atomic::Ordering::Relaxed) as f64,
                            );
                        }
                    }));
                    Some(p)
                }
                Ok(None) => {
                    tracing::info!(
                        "span metrics are pushed with OTLP/gRPC only; with {} they are on /metrics",
                        cfg.protocol.as_str()
                    );
                    None
                }
                Err(e) => return Err(format!("OTLP metrics exporter: {e}")),
            }
        }
        _ => None,
    };
    let mut config = plan.capture.clone();
    let kube = match &plan.kubernetes {
        Some(k) => {
            let node = start_kubernetes(k).await?;
            config.cgroup_updates = Some(node.updates.clone());
            Some(node)
        }
        None => None,
    };
    let _metrics = match plan.metrics {
        Some(addr) => {
            let t = telemetry.clone();
            let t2 = telemetry.clone();
            let targets = kube.as_ref().map(|k| {
                let shared = k.controller.targets.clone();
                Arc::new(move || {
                    let t = shared.lock().map(|t| t.clone()).unwrap_or_default();
                    serde_json::to_string_pretty(&t).unwrap_or_default()
                }) as Arc<dyn Fn() -> String + Send + Sync>
            });
            let state = MetricsState {
                render: Arc::new(move || t.render_prometheus()),
                render_openmetrics: Some(Arc::new(move || t2.render_openmetrics())),
                ready: telemetry.ready.clone(),
                targets,
            };
            match MetricsServer::bind(addr, state).await {
                Ok(s) => {
                    tracing::info!("metrics on http://{}/metrics", s.local_addr());
                    Some(s)
                }
                Err(e) if plan.metrics_explicit => return Err(format!("--metrics-address: {e}")),
                Err(e) => {
                    tracing::warn!(
                        "no metrics endpoint: {e} (set --metrics-address to choose another)"
                    );
                    None
                }
            }
        }
        None => None,
    };

    let resources = || match (&plan.kubernetes, &kube) {
        (Some(k), Some(node)) => NodeResources::Kube(Box::new(
            KubeResources::new(node.store.clone(), k.node.clone(), k.cluster.clone())
                .with_cgroups(node.controller.cgroups.clone()),
        )),
        _ => NodeResources::Host(crate::enrich::ProcessCache::default()),
    };
    let who = if let Some(k) = &plan.kubernetes {
        format!(
            "the pods of node {} that sonde.dev/tracing selects (default policy {})",
            k.node, k.policy.default
        )
    } else if args.pids.is_empty()
        && args.cgroups.is_empty()
        && plan.capture.probes.filter.default == Decision::Trace
    {
        "every process but sonde".to_string()
    } else {
        "the selected processes and cgroups".to_string()
    };
    let summary = match (&pipeline, plan.output) {
        (_, OutputFormat::Debug) => {
            let view = DebugView::new(io::stdout(), args.preview_bytes);
            capture_until(
                Capture::spawn_with(config, view, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?
            .1
        }
        (Some(p), _) => {
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(QueueSink(p.queue()), &plan, &span_metrics, &telemetry),
            );
            let (mut stage, summary) = capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?;
            stage.out_mut().finish();
            summary
        }
        (None, OutputFormat::Console) => {
            let trees = ConsoleTrees {
                trees: console::TraceTrees::new(console::Options {
                    full_ids: plan.full_ids,
                }),
                out: line_writer(&plan.output_file)?,
            };
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(trees, &plan, &span_metrics, &telemetry),
            );
            let (mut stage, summary) = capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?;
            stage.out_mut().finish();
            stage.out_mut().inner_mut().finish();
            summary
        }
        (None, _) => {
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(NullSink, &plan, &span_metrics, &telemetry),
            );
            capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?
            .1
        }
    };
    if let Some(p) = pusher {
        p.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(p) = pipeline {
        let s = p.shutdown(Duration::from_secs(5)).await;
        tracing::info!(
            "spans: {} created, {} exported, {} dropped",
            s.created,
            s.exported,
            s.dropped_total()
        );
    }
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "sonde: stopped; totals:");
    for line in summary.lines() {
        let _ = writeln!(err, "  {line}");
    }
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(&telemetry.summary_json()).unwrap_or_default();
        std::fs::write(path, json)
            .map_err(|e| format!("--summary-json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Sampling, span metrics and the privacy policy in front of an output; their counters go to
/// `/metrics`.
fn policy_sink<O: SpanSink>(
    inner: O,
    plan: &RunPlan,
    metrics: &Option<Arc<SpanMetrics>>,
    telemetry: &Telemetry,
) -> PolicySink<O> {
    let sink = PolicySink::new(
        inner,
        plan.sampling.clone(),
        plan.privacy.clone(),
        metrics.clone(),
    );
    let stats = sink.stats();
    telemetry.add_renderer(Arc::new(move |w| stats.render(w)));
    sink
}

/// The Kubernetes side of `sonde run --kubernetes`: watches, store and toggle controller.
struct KubeNode {
    store: SharedStore,
    updates: CgroupUpdates,
    controller: Controller,
    _watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        for w in &self._watches {
            w.abort();
        }
    }
}

async fn start_kubernetes(k: &crate::k8s::KubePlan) -> Result<KubeNode, String> {
    let client = watch::client(k.kubeconfig.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let store = Store::shared(k.limits);
    let opts = watch::WatchOptions::default();
    let watches = vec![
        tokio::spawn(watch::watch_pods(
            client.clone(),
            k.node.clone(),
            store.clone(),
            opts.clone(),
        )),
        tokio::spawn(watch::watch_namespaces(client, store.clone(), opts)),
    ];
    let updates = CgroupUpdates::default();
    let controller = Controller::spawn(
        store.clone(),
        k.policy.clone(),
        k.node.clone(),
        k.cgroup_root.clone(),
        updates.clone(),
        ControllerOptions::default(),
    );
    tracing::info!(
        "kubernetes: watching the pods of node {} and namespaces; default policy {}",
        k.node,
        k.policy.default
    );
    Ok(KubeNode {
        store,
        updates,
        controller,
        _watches: watches,
    })
}

/// `sonde targets`: the running agent's /targets, as a table or JSON.
fn targets(address: &str, json: bool) -> ExitCode {
    use std::io::Read as _;
    let fetch = || -> Result<String, String> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| format!("--address {address}: expected IP:PORT such as 127.0.0.1:9464"))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach sonde at {addr}: {e}; is `sonde run --kubernetes` running with --metrics-address {addr}?"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            s,
            "GET /targets HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{addr}/targets: {}; the agent runs without --kubernetes?",
                head.lines().next().unwrap_or("no answer")
            ));
        }
        Ok(body.to_owned())
    };
    let body = match fetch() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    let t: crate::k8s::toggle::Targets = match serde_json::from_str(&body) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sonde: unexpected /targets answer: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render_targets(&t));
    ExitCode::SUCCESS
}

/// The `sonde targets` table.
pub fn render_targets(t: &crate::k8s::toggle::Targets) -> String {
    let mut out = format!(
        "node {} (default policy {}){}; {} traced cgroups\n",
        t.node,
        t.policy,
        if t.synced { "" } else { ", not synced yet" },
        t.traced_cgroups
    );
    let rows: Vec<[String; 5]> = t
        .pods
        .iter()
        .map(|p| {
            let found = p
                .containers
                .iter()
                .filter(|c| !c.cgroups.is_empty())
                .count();
            [
                format!("{}/{}", p.namespace, p.pod),
                if p.traced { "yes" } else { "no" }.into(),
                if p.ignored.is_empty() {
                    p.why.clone()
                } else {
                    format!("{} (ignored {})", p.why, p.ignored.join(", "))
                },
                p.service_name.clone(),
                format!("{found}/{}", p.containers.len()),
            ]
        })
        .collect();
    let header = ["POD", "TRACED", "WHY", "SERVICE", "CONTAINERS FOUND"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs a capture until a signal or the duration; returns its sink and totals.
async fn capture_until<S: StreamSink + Observed + Send + 'static>(
    mut handle: CaptureHandle<S>,
    who: &str,
    duration: Option<f64>,
) -> Result<(S, Summary), String> {
    let ready = tokio::task::spawn_blocking(move || handle.wait_ready().map(|_| handle))
        .await
        .map_err(|e| e.to_string())?;
    let handle = ready.map_err(|e| e.to_string())?;
    eprintln!("sonde: tracing {who}; Ctrl-C to stop");
    wait_for_stop(duration).await;
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn output_defaults_follow_the_exporter_configuration() {
        let args = RunArgs::default();
        assert_eq!(args.plan(env(&[])).unwrap().output, OutputFormat::Console);
        let p = args
            .plan(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4317",
            )]))
            .unwrap();
        assert_eq!(p.output, OutputFormat::Otlp);
        assert_eq!(
            p.export.unwrap().endpoint.to_string(),
            "http://127.0.0.1:4317/"
        );
        let p = args
            .plan(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap();
        assert_eq!(
            p.export.unwrap().endpoint.to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(p.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn configuration_errors_name_the_field_and_the_fix() {
        let args = RunArgs {
            output: Some(OutputFormat::Otlp),
            ..RunArgs::default()
        };
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let e = RunArgs::default()
            .plan(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon"),
            "{e}"
        );
        assert!(e.contains("grpc"), "{e}");
        let e = RunArgs {
            capture_bytes: Some(1 << 20),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--capture-bytes") && e.contains("16384"), "{e}");
        let e = RunArgs {
            routes: vec!["users/{id}".into()],
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("--route users/{id}"), "{e}");
        let e = RunArgs {
            metrics_address: Some("localhost".into()),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("127.0.0.1:9464"), "{e}");
    }

    #[test]
    fn sampling_ratio_from_flag_env_or_file_reaches_the_kernel() {
        let p = RunArgs::default().plan(env(&[])).unwrap();
        assert_eq!(p.capture.probes.sample_threshold, sonde_proto::SAMPLE_ALL);
        assert!(p.sampling.parent_based);
        let p = RunArgs::default()
            .plan(env(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]))
            .unwrap();
        assert_eq!(p.sampling.ratio, 0.25);
        assert_eq!(p.capture.probes.sample_threshold, 1 << 61);
        let p = RunArgs {
            sampling_ratio: Some(0.5),
            ..RunArgs::default()
        }
        .plan(env(&[("OTEL_TRACES_SAMPLER", "always_off")]))
        .unwrap();
        assert_eq!(p.capture.probes.sample_threshold, 1 << 62, "the flag wins");
        assert!(!p.sampling.parent_based);
        let e = RunArgs {
            sampling_ratio: Some(1.5),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--sampling-ratio = 1.5"), "{e}");
        let e = RunArgs::default()
            .plan(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("OTEL_METRIC_EXPORT_INTERVAL=soon"), "{e}");
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = std::env::temp_dir().join(format!("sonde-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sonde.toml");
        std::fs::write(
            &file,
            "[capture]\ncapture_bytes = 1000\n[metrics]\naddress = \"\"\n\
             [export.otlp]\nendpoint = \"http://file:4317\"\ncompression = \"gzip\"\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        let p = args.plan(env(&[])).unwrap();
        assert_eq!(p.capture.probes.capture_bytes, 1000);
        assert_eq!(p.metrics, None);
        assert_eq!(p.output, OutputFormat::Otlp);
        let e = p.export.unwrap();
        assert_eq!(e.endpoint.to_string(), "http://file:4317/");
        // The environment wins over the file, flags over both.
        let p = args
            .plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]))
            .unwrap();
        assert_eq!(p.export.unwrap().endpoint.to_string(), "http://env:4317/");
        let p = RunArgs {
            otlp_endpoint: Some("http://flag:4317".into()),
            capture_bytes: Some(2000),
            ..args.clone()
        }
        .plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]))
        .unwrap();
        assert_eq!(p.export.unwrap().endpoint.to_string(), "http://flag:4317/");
        assert_eq!(p.capture.probes.capture_bytes, 2000);
        std::fs::write(&file, "[capture]\ncapture_bites = 1\n").unwrap();
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(
            e.contains("capture_bites") && e.contains("sonde.toml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kubernetes_settings_from_file_environment_and_flags() {
        let plan = |args: &RunArgs, vars: &[(&str, &str)]| {
            args.plan(env(vars))
                .map(|p| p.kubernetes)
                .map_err(|e| e.to_string())
        };
        assert_eq!(plan(&RunArgs::default(), &[]).unwrap(), None);
        let on = RunArgs {
            kubernetes: true,
            ..RunArgs::default()
        };
        let e = plan(&on, &[]).unwrap_err();
        assert!(
            e.contains("SONDE_NODE_NAME") && e.contains("--node-name"),
            "{e}"
        );
        let Ok(Some(k)) = plan(
            &on,
            &[("SONDE_NODE_NAME", "n1"), ("SONDE_NAMESPACE", "obs")],
        ) else {
            // No cgroup v2 here: the error says how to get one.
            let e = plan(&on, &[("SONDE_NODE_NAME", "n1")]).unwrap_err();
            assert!(e.contains("cgroup v2"), "{e}");
            return;
        };
        assert_eq!(k.node, "n1");
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::AllExceptSystem);
        assert_eq!(k.policy.system_namespaces, vec!["kube-system", "obs"]);
        // Only pods are traced: nothing by default, the toggle adds cgroups.
        let p = on.plan(env(&[("SONDE_NODE_NAME", "n1")])).unwrap();
        assert_eq!(p.capture.probes.filter.default, Decision::Ignore);

        let dir = std::env::temp_dir().join(format!("sonde-cli-k8s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sonde.toml");
        std::fs::write(
            &file,
            "[kubernetes]\nenabled = true\nnode_name = \"from-file\"\ncluster_name = \"c\"\n\
             default_policy = \"opt-in\"\nmax_pods = 10\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        let k = plan(&args, &[]).unwrap().unwrap();
        assert_eq!(
            (k.node.as_str(), k.cluster.as_deref(), k.limits.max_pods),
            ("from-file", Some("c"), 10)
        );
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::OptIn);
        // Flags win over the environment, which wins over the file.
        let k = plan(&args, &[("SONDE_NODE_NAME", "from-env")])
            .unwrap()
            .unwrap();
        assert_eq!(k.node, "from-env");
        let flags = RunArgs {
            node_name: Some("from-flag".into()),
            default_policy: Some(crate::k8s::DefaultPolicy::AllExceptSystem),
            ..args.clone()
        };
        let k = plan(&flags, &[("SONDE_NODE_NAME", "from-env")])
            .unwrap()
            .unwrap();
        assert_eq!(k.node, "from-flag");
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::AllExceptSystem);
        std::fs::write(&file, "[kubernetes]\nenabled = true\nmax_pods = 0\n").unwrap();
        let e = plan(&args, &[("SONDE_NODE_NAME", "n")]).unwrap_err();
        assert!(e.contains("max_pods 0"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn targets_table() {
        use crate::k8s::toggle::{ContainerTarget, PodTarget, Targets};
        let pod = |ns: &str, name: &str, traced: bool, why: &str, found: bool| PodTarget {
            namespace: ns.into(),
            pod: name.into(),
            uid: "u".into(),
            traced,
            reason: String::new(),
            why: why.into(),
            ignored: if traced {
                vec![]
            } else {
                vec!["pod sonde.dev/tracing=\"yes\"".into()]
            },
            service_name: name.into(),
            service_name_source: crate::k8s::model::ServiceNameSource::Container,
            workload: None,
            containers: vec![ContainerTarget {
                name: "c".into(),
                id: None,
                cgroups: if found { vec![1] } else { vec![] },
            }],
        };
        let t = Targets {
            node: "n1".into(),
            policy: "opt-in".into(),
            synced: true,
            traced_cgroups: 1,
            pods: vec![
                pod(
                    "shop",
                    "web",
                    true,
                    "namespace annotation sonde.dev/tracing",
                    true,
                ),
                pod("kube-system", "dns", false, "default policy opt-in", false),
            ],
            ..Targets::default()
        };
        let text = render_targets(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node n1 (default policy opt-in); 1 traced cgroups"
        );
        assert!(lines[1].starts_with("POD") && lines[1].contains("CONTAINERS FOUND"));
        assert!(lines[2].starts_with("shop/web         yes"), "{text}");
        assert!(lines[2].ends_with("1/1"), "{text}");
        assert!(
            lines[3].contains("default policy opt-in (ignored pod sonde.dev/tracing=\"yes\")"),
            "{text}"
        );
        assert!(lines[3].ends_with("0/1"), "{text}");
    }
}
